"""The redesigned engine gives bit-identical numbers to the one before it: the smoke suite
through ``privbench bench`` and a ``privbench run`` with several attacks, scorers and
memorization, against results recorded by privbench a1eb7f7 (``tests/data/``). Training is
seeded and deterministic on the CPU, so any difference is a change of behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

import privbench
from privbench.results.db import ResultsDB

DATA = Path(__file__).resolve().parent / "data"
ROOT = DATA.parent.parent


@pytest.mark.usefixtures("fresh_registry")
def test_the_smoke_suite_gives_the_metrics_recorded_before_the_redesign(tmp_path, capsys):
    reference = json.loads((DATA / "smoke-before-refactor.json").read_text())
    code, _, err = run_cli(capsys, "bench", str(ROOT / "benchmarks" / "smoke.toml"), "-q",
                           "-w", str(tmp_path))  # fmt: skip
    assert code == 0, err
    with ResultsDB(tmp_path / "privbench.db") as db:
        cells = db.connection.execute(
            "SELECT label, run_id FROM suite_cells WHERE suite = 'smoke'"
        ).fetchall()
    assert sorted(label for label, _ in cells) == sorted(reference)
    for label, run_id in cells:
        result = privbench.load_run(run_id, workspace=tmp_path)
        expected = reference[label]
        for attack in result.attacks:
            recorded = expected["attacks"][attack.name]
            # Metrics added since (the GDP fit) are not in the reference: the old ones must hold.
            measured = attack.metrics.as_dict()
            assert {k: measured[k] for k in recorded["metrics"]} == recorded["metrics"], label
            for side in ("mean", "std"):
                spread = getattr(attack.per_target, side)
                expected_side = recorded["per_target"][side]
                assert {k: spread[k] for k in expected_side} == expected_side, (label, side)
            assert attack.roc.to_record() == recorded["roc"], (label, attack.name)
        utility = result.utility
        assert (utility.train_accuracy, utility.test_accuracy) == (
            expected["utility"]["train_accuracy"],
            expected["utility"]["test_accuracy"],
        )


@pytest.mark.usefixtures("fresh_registry")
def test_privbench_run_gives_the_metrics_recorded_before_the_redesign(tmp_path, capsys):
    reference = json.loads((DATA / "cli-before-refactor.json").read_text())
    code, _, err = run_cli(capsys, *reference["command"], "-q", "-w", str(tmp_path))
    assert code == 0, err
    result = privbench.load_run("latest", workspace=tmp_path)
    assert sorted(a.name for a in result.attacks) == sorted(reference["attacks"])
    for attack in result.attacks:
        recorded = reference["attacks"][attack.name]
        measured = attack.metrics.as_dict()
        assert {k: measured[k] for k in recorded["metrics"]} == recorded["metrics"], attack.name
        assert attack.roc.to_record() == recorded["roc"], attack.name
    assert result.utility.test_accuracy == reference["utility"]["test_accuracy"]
    assert result.memorization.to_record() == reference["memorization"]
    scorer = result.scorers["logit-confidence"]
    assert scorer.membership_auc == reference["scorers"]["logit-confidence"]["membership_auc"]
    assert scorer.members == reference["scorers"]["logit-confidence"]["members"]
