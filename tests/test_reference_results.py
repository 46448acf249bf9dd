"""The engine gives bit-identical numbers to those recorded in ``tests/data/`` (on the CPU kind
of the a1eb7f7 set, those of the engine before the redesign): the smoke suite through
``privbench bench`` and a ``privbench run`` with several attacks, scorers and memorization.

Training is seeded and deterministic on one kind of CPU, but not across kinds: their
floating-point kernels (torch's, BLAS's) sum in other orders and widths, so the same code gives
other last bits, which training amplifies (on an AMD EPYC the run's AUC differs from a1eb7f7's
in the sixth decimal, the smoke suite's feature-noise cells in the second). The references
are therefore sets, one per CPU kind, each a ``smoke-NAME.json`` and a ``cli-NAME.json``
(``recorded_by`` in the latter says where): ``before-refactor``, recorded by privbench a1eb7f7
before the redesign on the machine of that time, and ``amd-epyc``, recorded by the committed
bdf118a on an AMD EPYC (the kind CI runs on). Each audit runs once; it passes if its numbers
equal, exactly, those of one set, so on a CPU kind that has a set any difference is a change of
behaviour. On failure the message names the set that came closest and the items that differ.

A CPU kind without a set fails: record one on it from COMMITTED code (not a tree with changes)
with ``tests/data/record_references.py``; its docstring gives the command."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_cli

import privbench
from privbench.results.db import ResultsDB

DATA = Path(__file__).resolve().parent / "data"
ROOT = DATA.parent.parent
SHOWN = 30
"""Differing items shown for the closest set."""


def reference_sets(kind: str) -> dict[str, dict[str, Any]]:
    """Every set's *kind* (``smoke``, ``cli``) reference, by the set's name."""
    sets = {
        path.stem.removeprefix(f"{kind}-"): json.loads(path.read_text())
        for path in sorted(DATA.glob(f"{kind}-*.json"))
    }
    assert sets, f"no {kind}-*.json in {DATA}"
    return sets


def _recorded_by(name: str) -> str:
    path = DATA / f"cli-{name}.json"
    return json.loads(path.read_text()).get("recorded_by", "?") if path.exists() else "?"


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "?"
    return next((ln.partition(":")[2].strip() for ln in lines if ln.startswith("model name")), "?")


def _value(where: str, measured: Any, recorded: Any) -> list[str]:
    if measured == recorded:
        return []
    if isinstance(measured, float) and isinstance(recorded, float):
        return [f"{where}: {measured!r}, recorded {recorded!r} ({measured - recorded:+.3g})"]
    return [f"{where}: {measured!r}, recorded {recorded!r}"]


def _items(where: str, measured: Mapping[str, Any], recorded: Mapping[str, Any]) -> list[str]:
    """The items of *recorded* that *measured* differs in (only those: a metric added since a set
    was recorded is not in it)."""
    differing = []
    for key, value in recorded.items():
        if key not in measured:
            differing.append(f"{where} {key}: not measured (recorded {value!r})")
        else:
            differing += _value(f"{where} {key}", measured[key], value)
    return differing


def _record(where: str, measured: Mapping[str, Any], recorded: Mapping[str, Any]) -> list[str]:
    """Where *measured* is not *recorded*, items on either side."""
    extra = [f"{where} {key}: {measured[key]!r}, not recorded" for key in measured
             if key not in recorded]  # fmt: skip
    return _items(where, measured, recorded) + extra


def _roc(where: str, measured: Any, recorded: Any) -> list[str]:
    if measured == recorded:
        return []
    if not (isinstance(measured, dict) and measured.keys() == recorded.keys()):
        return [f"{where}: {measured!r:.80}, recorded {recorded!r:.80}"]
    differing = []
    for axis, points in measured.items():
        expected = recorded[axis]
        if len(points) != len(expected):
            differing.append(f"{where} {axis}: {len(points)} points, recorded {len(expected)}")
            continue
        off = [i for i, (m, r) in enumerate(zip(points, expected, strict=True)) if m != r]
        if off:
            differing.append(
                f"{where} {axis}: {len(off)} of {len(points)} points differ, first [{off[0]}] "
                f"{points[off[0]]!r}, recorded {expected[off[0]]!r}"
            )
    return differing


def _attack(where: str, attack: Any, recorded: Mapping[str, Any]) -> list[str]:
    """An attack's metrics and ROC, and its per-target spread where *recorded* has it."""
    differing = _items(f"{where} metric", attack.metrics.as_dict(), recorded["metrics"])
    for side, expected in recorded.get("per_target", {}).items():
        spread = getattr(attack.per_target, side)
        differing += _items(f"{where} per-target {side}", spread, expected)
    roc = attack.roc.to_record() if attack.roc is not None else None
    return differing + _roc(f"{where} ROC", roc, recorded["roc"])


def assert_matches_a_set(differing: dict[str, list[str]], what: str) -> None:
    """Passes if some set has no differing item; else fails, showing the closest set's."""
    if any(not items for items in differing.values()):
        return
    closest = min(differing, key=lambda name: len(differing[name]))
    items = differing[closest]
    others = [name for name in differing if name != closest]
    lines = [
        f"{what} matches none of the {len(differing)} reference sets (one per CPU kind; "
        f"this CPU: {_cpu()}, torch {torch.__version__}).",
        f"Closest: {closest!r} ({_recorded_by(closest)}), differing items: {len(items)}",
        *(f"  {item}" for item in items[:SHOWN]),
        *([f"  ... and {len(items) - SHOWN} more"] if len(items) > SHOWN else []),
        *(f"Set {name!r}: differing items: {len(differing[name])}" for name in others),
        "On a CPU kind that has a set, this is a change of behaviour; for a new CPU kind, record "
        "a set from committed code with tests/data/record_references.py.",
    ]
    pytest.fail("\n".join(lines), pytrace=False)


def smoke_differences(runs: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
    """The smoke suite's *runs* (by cell label) against one set's reference."""
    differing = []
    if sorted(runs) != sorted(reference):
        differing.append(f"cells: {sorted(runs)}, recorded {sorted(reference)}")
    for label, result in runs.items():
        if label not in reference:
            continue
        expected = reference[label]
        for attack in result.attacks:
            if attack.name not in expected["attacks"]:
                differing.append(f"{label}: {attack.name}: not recorded")
                continue
            recorded = expected["attacks"][attack.name]
            differing += _attack(f"{label}: {attack.name}", attack, recorded)
        utility = {"train_accuracy": result.utility.train_accuracy,
                   "test_accuracy": result.utility.test_accuracy}  # fmt: skip
        recorded_utility = {k: expected["utility"][k] for k in utility}
        differing += _items(f"{label}: utility", utility, recorded_utility)
    return differing


def cli_differences(result: Any, reference: Mapping[str, Any]) -> list[str]:
    """The ``privbench run``'s *result* against one set's reference."""
    differing = []
    names = sorted(a.name for a in result.attacks)
    if names != sorted(reference["attacks"]):
        differing.append(f"attacks: {names}, recorded {sorted(reference['attacks'])}")
    for attack in result.attacks:
        if attack.name in reference["attacks"]:
            # Its metrics and ROC (not the per-target spread), as this test always checked.
            recorded = {k: reference["attacks"][attack.name][k] for k in ("metrics", "roc")}
            differing += _attack(attack.name, attack, recorded)
    differing += _value(
        "utility test_accuracy",
        result.utility.test_accuracy,
        reference["utility"]["test_accuracy"],
    )
    memorization = result.memorization.to_record() if result.memorization is not None else {}
    differing += _record("memorization", memorization, reference["memorization"])
    scorer = result.scorers["logit-confidence"]
    recorded = reference["scorers"]["logit-confidence"]
    differing += _value(
        "logit-confidence membership_auc", scorer.membership_auc, recorded["membership_auc"]
    )
    differing += _record("logit-confidence members", scorer.members, recorded["members"])
    return differing


@pytest.mark.usefixtures("fresh_registry")
def test_the_smoke_suite_gives_the_metrics_recorded_before_the_redesign(tmp_path, capsys):
    references = reference_sets("smoke")
    code, _, err = run_cli(capsys, "bench", str(ROOT / "benchmarks" / "smoke.toml"), "-q",
                           "-w", str(tmp_path))  # fmt: skip
    assert code == 0, err
    with ResultsDB(tmp_path / "privbench.db") as db:
        cells = db.connection.execute(
            "SELECT label, run_id FROM suite_cells WHERE suite = 'smoke'"
        ).fetchall()
    runs = {label: privbench.load_run(run_id, workspace=tmp_path) for label, run_id in cells}
    assert len(runs) == len(cells), f"cells with the same label: {cells}"
    differing = {name: smoke_differences(runs, ref) for name, ref in references.items()}
    assert_matches_a_set(differing, "The smoke suite")


@pytest.mark.usefixtures("fresh_registry")
def test_privbench_run_gives_the_metrics_recorded_before_the_redesign(tmp_path, capsys):
    references = reference_sets("cli")
    commands = {tuple(ref["command"]) for ref in references.values()}
    assert len(commands) == 1, f"the cli-*.json sets record different commands: {commands}"
    command = commands.pop()
    code, _, err = run_cli(capsys, *command, "-q", "-w", str(tmp_path))
    assert code == 0, err
    result = privbench.load_run("latest", workspace=tmp_path)
    differing = {name: cli_differences(result, ref) for name, ref in references.items()}
    assert_matches_a_set(differing, "privbench " + " ".join(command))
