"""Record a reference set for ``tests/test_reference_results.py`` on this kind of CPU.

What it records: the two audits that test runs, in the JSON layout of the a1eb7f7 references
(``smoke-before-refactor.json``, ``cli-before-refactor.json``):

* ``smoke-NAME.json``: the smoke suite (``privbench bench benchmarks/smoke.toml``), by the label
  of each cell in the suite_cells table: each attack's metrics (those of a1eb7f7, so that every
  set checks the same ones), options, per-target mean and std, and ROC, and the utility;
* ``cli-NAME.json``: one ``privbench run`` (:data:`COMMAND`): each attack's metrics, per-target
  spread and ROC, the memorization and logit-confidence summaries, the utility, the command and
  ``recorded_by`` (the commit, the CPU's ``model name``, its cores and torch's threads, torch).

Both run in this process, as the test runs them (``privbench.cli.main``, torch's default
threads), and with the privbench of the tree this file is in: seeded training gives the same
numbers bit for bit on one kind of CPU, but not on another (floating-point kernels), so a CPU
kind that the test is to pass on needs its own set, recorded on it from COMMITTED code (a tree
with uncommitted changes would put them in the references; the script refuses one):

    mkdir /tmp/head && git archive HEAD | tar -x -C /tmp/head
    PYTHONPATH=/tmp/head:/tmp/head/plugins .venv/bin/python \\
        /tmp/head/tests/data/record_references.py --commit "$(git rev-parse --short HEAD)" \\
        --out tests/data

(in a clean checkout that the venv's editable install points to, ``python -m
tests.data.record_references`` from its root does the same, the commit read from git). NAME is
``--name``, by default the CPU's model name in lower case with dashes (``amd-epyc``, recorded by
bdf118a on an AMD EPYC with 2 cores, torch 2.14.1+cu130). It takes a few minutes on 2 CPU
cores."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import privbench_plugins
import torch

import privbench
from privbench.cli import main as privbench_main
from privbench.plugins import set_registry
from privbench.results.db import ResultsDB

DATA = Path(__file__).resolve().parent
ROOT = DATA.parent.parent

COMMAND = ("run", "--preset", "quick", "--attack", "loss", "--attack", "lira", "--attack", "rmia",
           "--memorization", "--scorer", "logit-confidence")  # fmt: skip
"""The ``privbench run`` of ``cli-*.json`` (that of ``cli-before-refactor.json``)."""

METRICS = ("advantage", "auc", "balanced_accuracy", "balanced_accuracy_at_eer",
           "epsilon_estimate", "epsilon_lower", "n_members", "n_nonmembers",
           "tpr_at_0_01_fpr", "tpr_at_0_1_fpr", "tpr_at_1_fpr")  # fmt: skip
"""The attack metrics that a1eb7f7 recorded (those added since, the GDP fit, are not in it)."""

UTILITY = ("generalization_gap", "test_accuracy", "train_accuracy")


def cpu_model() -> str:
    """The CPU's ``model name`` in /proc/cpuinfo (where there is none, what platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def _privbench(*args: str) -> None:
    """``privbench ARGS`` in this process with a fresh plugin registry, as the test runs it."""
    set_registry(None)
    try:
        privbench_main(list(args))
    except SystemExit as exit_:
        if exit_.code:
            raise SystemExit(f"privbench {' '.join(args)} failed (exit {exit_.code})") from None
    finally:
        set_registry(None)


def _pick(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: values[key] for key in keys}


def _attack(attack: Any, *, options: bool) -> dict[str, Any]:
    record = {
        "metrics": _pick(attack.metrics.as_dict(), METRICS),
        "per_target": {
            side: _pick(getattr(attack.per_target, side), METRICS) for side in ("mean", "std")
        },
        "roc": attack.roc.to_record(),
    }
    return {**record, "options": attack.options} if options else record


def record_smoke(workspace: Path) -> dict[str, Any]:
    """The smoke suite's reference: per cell (its suite_cells label), attacks and utility."""
    _privbench("bench", str(ROOT / "benchmarks" / "smoke.toml"), "-q", "-w", str(workspace))
    with ResultsDB(workspace / "privbench.db") as db:
        cells = db.connection.execute(
            "SELECT label, run_id FROM suite_cells WHERE suite = 'smoke'"
        ).fetchall()
    record = {}
    for label, run_id in cells:
        result = privbench.load_run(run_id, workspace=workspace)
        record[label] = {
            "attacks": {a.name: _attack(a, options=True) for a in result.attacks},
            "utility": _pick(attrs.asdict(result.utility), UTILITY),
        }
    return record


def record_cli(workspace: Path, recorded_by: str) -> dict[str, Any]:
    """The reference of ``privbench run`` (:data:`COMMAND`)."""
    _privbench(*COMMAND, "-q", "-w", str(workspace))
    result = privbench.load_run("latest", workspace=workspace)
    return {
        "attacks": {a.name: _attack(a, options=False) for a in result.attacks},
        "command": list(COMMAND),
        "memorization": result.memorization.to_record(),
        "recorded_by": recorded_by,
        "scorers": {name: attrs.asdict(s) for name, s in result.scorers.items()},
        "utility": _pick(attrs.asdict(result.utility), UTILITY),
    }


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.rstrip() if done.returncode == 0 else None


def _check_source(commit: str | None) -> str:
    """The commit being recorded, once it is sure that the privbench imported is this tree's,
    unchanged."""
    for module, depth in ((privbench, 1), (privbench_plugins, 2)):
        where = Path(module.__file__ or "").resolve().parents[depth]
        if where != ROOT:
            raise SystemExit(
                f"{module.__name__} is imported from {where}, not from {ROOT} where this script "
                f"is: run it with PYTHONPATH={ROOT}:{ROOT / 'plugins'}"
            )
    if _git("rev-parse", "--git-dir") is not None:
        changed = _git("status", "--porcelain", "--", "privbench", "plugins", "benchmarks",
                       "pyproject.toml")  # fmt: skip
        if changed:
            raise SystemExit(
                f"{ROOT} has uncommitted changes that would enter the references "
                f"(record from a clean copy, e.g. git archive HEAD):\n{changed}"
            )
        commit = commit or _git("rev-parse", "--short", "HEAD")
    if not commit:
        raise SystemExit(f"{ROOT} is not a git checkout: say which commit it is with --commit")
    return commit


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {value!r}")


def _write(path: Path, record: dict[str, Any]) -> None:
    # The layout of the a1eb7f7 files: one-space indent, sorted keys, no final newline.
    path.write_text(json.dumps(record, indent=1, sort_keys=True, default=_plain))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="the set's name (default: the CPU's model name)")
    parser.add_argument("--out", type=Path, default=DATA, help=f"folder (default: {DATA})")
    parser.add_argument("--commit", help="the commit recorded (default: git rev-parse HEAD)")
    parser.add_argument("--force", action="store_true", help="overwrite a set of that name")
    args = parser.parse_args(argv)

    commit = _check_source(args.commit)
    cpu = cpu_model()
    name = args.name or re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")
    paths = {kind: args.out / f"{kind}-{name}.json" for kind in ("smoke", "cli")}
    if not args.force and any(path.exists() for path in paths.values()):
        raise SystemExit(f"set {name!r} exists in {args.out}: another --name, or --force")
    recorded_by = (
        f"privbench {commit}, {cpu} ({os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch threads), torch {torch.__version__}"
    )
    print(f"recording {name!r}: {recorded_by}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as smoke, tempfile.TemporaryDirectory() as cli:
        smoke_record = record_smoke(Path(smoke))
        cli_record = record_cli(Path(cli), recorded_by)
    args.out.mkdir(parents=True, exist_ok=True)
    _write(paths["smoke"], smoke_record)
    _write(paths["cli"], cli_record)


if __name__ == "__main__":
    main()
