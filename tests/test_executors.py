"""Executors: a suite's jobs in worker processes and on Ray give what the in-process run gives,
share one store, and isolate failures across process boundaries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import run_cli
from test_suite import SMALL, cells, half_failing_suite, install_broken_plugin

from privbench.bench.executors import InlineExecutor, create_executor
from privbench.errors import OptionError

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("fresh_registry")


def models(ws: Path) -> list[str]:
    return sorted(path.parent.name for path in (ws / "models").rglob("meta.json"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "slurm"}, "unknown executor 'slurm' (executors: local, ray)"),
        ({"address": "10.0.0.1:6379"}, "--address is for --executor ray"),
        ({"max_workers": 0}, "--max-workers must be at least 1"),
    ],
)
def test_bad_executor_flags_are_one_line_errors(kwargs, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_executor(**kwargs)


def test_the_inline_executor_reports_a_failing_job_and_runs_the_rest():
    def invert(x: int) -> float:
        return 1 / x

    outcomes = list(InlineExecutor().map(invert, [2, 0, 4]))
    assert [job for job, _ in outcomes] == [2, 0, 4]
    assert outcomes[0][1] == 0.5 and outcomes[2][1] == 0.25
    assert isinstance(outcomes[1][1], ZeroDivisionError)


def test_worker_processes_share_the_store_with_the_in_process_run(capsys, tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SMALL.replace('name = "loss"', 'name = "loss"\n[[attacks]]\nname = "rmia"'))
    ws = tmp_path / "ws"
    code, out, err = run_cli(capsys, "bench", str(suite), "-w", str(ws), "-q", "-j", "2")
    assert code == 0, err
    assert "2 cells, 2 run now, 0 already recorded, 0 failed" in out
    assert [s for s, _ in cells(ws / "privbench.db")] == ["done", "done"]
    stored = models(ws)
    assert len(stored) == 4  # 2 seeds x (1 shadow + 1 target), each trained once
    # The in-process executor finds every model and every cell where the workers left them.
    code, out, _ = run_cli(capsys, "bench", str(suite), "-w", str(ws), "-q")
    assert code == 0 and "2 cells, 0 run now, 2 already recorded" in out
    # A fresh workspace run in-process trains the same models (same content addresses).
    code, _, err = run_cli(capsys, "bench", str(suite), "-w", str(tmp_path / "again"), "-q")
    assert code == 0, err
    assert models(tmp_path / "again") == stored
    with sqlite3.connect(ws / "privbench.db") as connection:
        attacks = sorted(connection.execute("SELECT attack FROM results"))
    assert attacks == [("loss",), ("loss",), ("rmia",), ("rmia",)]


def test_a_job_failing_in_a_worker_process_fails_only_its_cell(capsys, tmp_path, monkeypatch):
    # Worker processes import the plugin too: spawn hands them this sys.path and environment.
    install_broken_plugin(tmp_path, monkeypatch)
    suite = half_failing_suite(tmp_path)
    ws = tmp_path / "ws"
    code, out, _ = run_cli(capsys, "bench", str(suite), "-w", str(ws), "-q", "-j", "2")
    assert code == 1
    assert "2 cells, 1 run now, 0 already recorded, 1 failed" in out
    assert "RuntimeError: this cell breaks" in out
    assert [s for s, _ in cells(ws / "privbench.db")] == ["done", "failed"]


@pytest.mark.slow
def test_the_smoke_suite_runs_on_a_local_ray_instance(capsys, tmp_path, monkeypatch):
    ray = pytest.importorskip(
        "ray", reason="Ray is not installed: pip install 'privbench[ray]' (make test does)"
    )
    # Ray's workers are separate processes started by ray.init: they see this environment.
    install_broken_plugin(tmp_path, monkeypatch)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ws = tmp_path / "ws"
        smoke = str(ROOT / "benchmarks/smoke.toml")
        code, out, err = run_cli(capsys, "bench", smoke, "-w", str(ws), "-q", "-e", "ray")
        assert code == 0, err
        assert "4 cells, 4 run now, 0 already recorded, 0 failed" in out
        assert ray.is_initialized()  # the executor joined the test's instance, did not stop it
        # A task that raises fails its cell with the task's own error; its neighbour runs.
        suite = half_failing_suite(tmp_path)
        code, out, _ = run_cli(capsys, "bench", str(suite), "-w", str(ws), "-q", "-e", "ray")
        assert code == 1 and "2 cells, 1 run now, 0 already recorded, 1 failed" in out
        assert (
            "failed: digits / mlp / none / seed 0 / broken(fail=True): "
            "attack 'broken' failed: RuntimeError: " in out
        )
    finally:
        ray.shutdown()
    assert [s for s, _ in cells(ws / "privbench.db")] == ["done"] * 5 + ["failed"]
    assert len(models(ws)) == 8 + 2  # the none and feature-noise pools, each model trained once
    code, out, _ = run_cli(capsys, "bench", smoke, "-w", str(ws), "-q")
    assert code == 0 and "4 cells, 0 run now, 4 already recorded" in out
    code, out, err = run_cli(capsys, "leaderboard", smoke, "-w", str(ws), "-f", "csv")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 7  # header + 2 defenses x 3 attack configurations


def test_scoring_passes_leave_the_cells_no_model_to_query(tmp_path, monkeypatch):
    from privbench.bench.suite import load_suite
    from privbench.bench.waves import run_suite
    from privbench.engine.store import Workspace
    from privbench.plugins.interfaces import ModelView

    suite_file = tmp_path / "tiny.toml"
    three = (
        'name = "loss"\n[[attacks]]\nname = "lira"\noptions = { variant = "offline" }\n'
        '[[attacks]]\nname = "rmia"'
    )
    suite_file.write_text(SMALL.replace('name = "loss"', three).replace("[0, 1]", "[0]"))
    suite = load_suite(suite_file)
    queries = {"scoring": 0, "cells": 0}
    phase = ["training"]
    original = ModelView.logits

    def counted(self, x):
        if phase[0] != "training":
            queries[phase[0]] += 1
        return original(self, x)

    monkeypatch.setattr(ModelView, "logits", counted)
    plans = []

    def scored(job, error):
        assert error is None, error
        plans[0].remove(job)
        if not plans[0]:
            phase[0] = "cells"  # every pass is done: the cell must find all it reads cached

    outcomes = list(
        run_suite(
            suite,
            Workspace(tmp_path / "ws"),
            on_plan=lambda plan: plans.append(list(plan.scoring)),
            on_model=lambda job, error: phase.__setitem__(0, "scoring"),
            on_score=scored,
        )
    )
    assert [outcome.status for outcome in outcomes] == ["done"]
    assert plans == [[]]  # every planned pass ran (and reported) before the cell
    # Two models, each a target in turn: per model its population logits (loss, RMIA),
    # LiRA's logit-confidence scorer pass and its test-split logits; nothing left for the cell.
    assert queries == {"scoring": 6, "cells": 0}
    # The attack's cost still counts the signals it read, though a scoring pass computed them.
    ws = Workspace(tmp_path / "ws")
    with sqlite3.connect(ws.database) as connection:
        ((lira_seconds,),) = connection.execute("SELECT seconds FROM results WHERE attack='lira'")
    stored = sorted(ws.signals.rglob("scorer-logit-confidence-*.safetensors"))
    spent = [ws.tensor_seconds(path.parent.name, path.stem) for path in stored]
    assert len(spent) == 2 and all(s is not None and s > 0 for s in spent)
    assert lira_seconds >= sum(spent)
