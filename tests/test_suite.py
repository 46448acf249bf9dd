"""Benchmark suites: TOML matrices validated before training, run with resume and failure
isolation (``privbench bench``)."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent

SMALL = """
[suite]
name = "tiny"
seeds = [0, 1]
shadows = 1
population = 60

[recipe]
epochs = 1

[[datasets]]
name = "digits"

[[models]]
name = "mlp"

[[defenses]]
name = "none"

[[attacks]]
name = "loss"
"""

BROKEN_ATTACK = """
import os
from typing import ClassVar
import attrs
from privbench import Access, hookimpl

CALLS = []

@attrs.frozen
class Broken:
    name: ClassVar[str] = 'broken'
    description: ClassVar[str] = 'fails at scoring time when told to'
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 0
    fail: bool = False

    def score(self, context):
        if self.fail:
            raise RuntimeError('this cell breaks')
        CALLS.append(1)
        if str(len(CALLS)) == os.environ.get('BROKEN_INTERRUPT_AT'):
            raise KeyboardInterrupt  # as Ctrl-C would, in the middle of a cell
        return context.target.logits(context.population.x)[:, 0]

@hookimpl
def register_attacks(register):
    register(Broken)
"""


pytestmark = pytest.mark.usefixtures("fresh_registry")


def install_broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BROKEN_ATTACK as plugin module ``privbench_broken``, loaded through PRIVBENCH_PLUGINS
    (spawned worker processes inherit the path and the environment)."""
    (tmp_path / "privbench_broken.py").write_text(BROKEN_ATTACK)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "privbench_broken", raising=False)
    monkeypatch.setenv("PRIVBENCH_PLUGINS", "privbench_broken")


def half_failing_suite(tmp_path: Path) -> Path:
    """The same attack twice, the second told to fail: two cells (two audits) on one pool."""
    suite = tmp_path / "tiny.toml"
    two = 'name = "broken"\n[[attacks]]\nname = "broken"\noptions = { fail = true }'
    suite.write_text(SMALL.replace('name = "loss"', two).replace("[0, 1]", "[0]"))
    return suite


def cells(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as connection:
        return sorted(connection.execute("SELECT status, label FROM suite_cells"))


@pytest.mark.slow
def test_the_smoke_suite_runs_once_and_a_rerun_does_no_work(capsys, tmp_path):
    ws = str(tmp_path / "ws")
    code, out, err = run_cli(capsys, "bench", str(ROOT / "benchmarks/smoke.toml"), "-w", ws, "-q")
    assert code == 0, err
    assert "4 cells, 4 run now, 0 already recorded, 0 failed" in out
    statuses = cells(tmp_path / "ws" / "privbench.db")
    assert [s for s, _ in statuses] == ["done"] * 4
    assert any("lira(variant=online)" in label for _, label in statuses)
    models = sorted((tmp_path / "ws" / "models").rglob("meta.json"))
    # none and feature-noise pools of 4 models; the LiRA-online cell reuses its pool.
    assert len(models) == 8
    code, out, _ = run_cli(capsys, "bench", str(ROOT / "benchmarks/smoke.toml"), "-w", ws, "-q")
    assert code == 0 and "4 cells, 0 run now, 4 already recorded, 0 failed" in out
    assert sorted((tmp_path / "ws" / "models").rglob("meta.json")) == models
    code, out, _ = run_cli(capsys, "runs", "-w", ws)
    assert code == 0 and out.count("small-cnn") == 4

    # The leaderboard: one row per defense x attack configuration, ranked, values from the DB.
    smoke = str(ROOT / "benchmarks/smoke.toml")
    code, out, err = run_cli(capsys, "leaderboard", smoke, "-w", ws, "--format", "json")
    assert code == 0, err
    board = json.loads(out)
    assert board["rank_by"] == "tpr_at_0_1_fpr" and len(board["rows"]) == 6
    ranked = [row["tpr_at_0_1_fpr"] for row in board["rows"]]
    assert ranked == sorted(ranked, reverse=True)
    with sqlite3.connect(tmp_path / "ws" / "privbench.db") as connection:
        stored = sorted(connection.execute("SELECT auc FROM results"))
    assert sorted((row["auc"],) for row in board["rows"]) == stored
    assert {row["defense"].split("(")[0] for row in board["rows"]} == {"none", "feature-noise"}
    assert all(0 <= row["test_accuracy"] <= 1 and row["seeds"] == 1 for row in board["rows"])
    code, out, _ = run_cli(capsys, "leaderboard", smoke, "-w", ws, "--rank-by", "auc", "-f", "csv")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 7 and lines[0].startswith("dataset,model,defense,attack")
    aucs = [float(line.rsplit(",", 10)[1]) for line in lines[1:]]  # auc, then 9 more columns
    assert aucs == sorted(aucs, reverse=True)
    target = tmp_path / "board.md"
    code, out, _ = run_cli(capsys, "leaderboard", smoke, "-w", ws, "-o", str(target))
    assert code == 0 and target.read_text().count("\n| ") == 6
    # The whole workspace as a page (tests/test_leaderboard_html.py drives it in a browser).
    code, out, err = run_cli(capsys, "leaderboard", "-w", ws, "--format", "html")
    assert code == 0, err
    assert out.startswith("<!doctype html>") and out.count("<svg") == 3  # 2 ROC figures, 1 scatter
    assert out.count("<tr") - out.count("<thead") == 6


def test_a_failing_cell_is_recorded_and_the_others_run(capsys, tmp_path, monkeypatch):
    install_broken_plugin(tmp_path, monkeypatch)
    suite = half_failing_suite(tmp_path)
    ws = str(tmp_path / "ws")
    code, out, _ = run_cli(capsys, "bench", str(suite), "-w", ws, "-q")
    assert code == 1
    assert "2 cells, 1 run now, 0 already recorded, 1 failed" in out
    assert "RuntimeError: this cell breaks" in out
    db = tmp_path / "ws" / "privbench.db"
    assert [s for s, _ in cells(db)] == ["done", "failed"]
    with sqlite3.connect(db) as connection:
        (error,) = connection.execute("SELECT error FROM suite_cells WHERE status = 'failed'")
    assert "this cell breaks" in error[0]
    # A rerun leaves the failure recorded without running it again, unless asked to.
    code, out, _ = run_cli(capsys, "bench", str(suite), "-w", ws, "-q")
    assert code == 1 and "0 run now, 1 already recorded, 1 failed" in out
    code, out, _ = run_cli(capsys, "bench", str(suite), "-w", ws, "-q", "--retry-failed")
    assert code == 1 and "0 run now, 1 already recorded, 1 failed" in out
    assert "RuntimeError: this cell breaks" in out


def test_a_cell_whose_attack_fails_keeps_its_other_attacks(capsys, tmp_path, monkeypatch):
    install_broken_plugin(tmp_path, monkeypatch)
    suite = tmp_path / "partial.toml"
    broken = '[[attacks]]\nname = "broken"\noptions = { fail = true }\n'
    suite.write_text(SMALL.replace("[0, 1]", "[0]") + broken)
    ws = str(tmp_path / "ws")
    code, out, _ = run_cli(capsys, "bench", str(suite), "-w", ws, "-q")
    assert code == 1 and "1 partly failed (the rest of them recorded)" in out
    assert "attack 'broken' failed: RuntimeError: this cell breaks" in out
    assert [s for s, _ in cells(tmp_path / "ws" / "privbench.db")] == ["partial"]
    code, out, err = run_cli(capsys, "leaderboard", str(suite), "-w", ws, "--format", "json")
    assert code == 0, err
    assert [row["attack"] for row in json.loads(out)["rows"]] == ["loss"]


def test_a_suite_interrupted_half_way_resumes_where_it_stopped(capsys, tmp_path, monkeypatch):
    install_broken_plugin(tmp_path, monkeypatch)
    suite = tmp_path / "tiny.toml"
    suite.write_text(SMALL.replace('name = "loss"', 'name = "broken"'))
    ws = str(tmp_path / "ws")
    # Two cells (seeds 0 and 1), each scoring two target turns: the third call is in cell 2.
    monkeypatch.setenv("BROKEN_INTERRUPT_AT", "3")
    code, _, _ = run_cli(capsys, "bench", str(suite), "-w", ws, "-q")
    assert code == 130  # typer's exit status for Ctrl-C
    db = tmp_path / "ws" / "privbench.db"
    assert [s for s, _ in cells(db)] == ["done"]
    trained = sorted((tmp_path / "ws" / "models").rglob("meta.json"))
    assert len(trained) == 4  # cell 2's pool was trained and stored before the interrupt
    monkeypatch.delenv("BROKEN_INTERRUPT_AT")
    code, out, _ = run_cli(capsys, "bench", str(suite), "-w", ws, "--plan")
    assert code == 0 and "2 cells, 1 recorded done, 0 recorded failed" in out
    assert "wave 1: 0 training jobs for 0 models, ensembles where they can (2 of the 2" in out
    assert "wave 2: 2 scoring jobs" in out and "wave 3: 1 audit jobs" in out
    code, out, err = run_cli(capsys, "bench", str(suite), "-w", ws, "-q")
    assert code == 0, err
    assert "2 cells, 1 run now, 1 already recorded, 0 failed" in out
    assert sorted((tmp_path / "ws" / "models").rglob("meta.json")) == trained  # none retrained
    assert [s for s, _ in cells(db)] == ["done", "done"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('name = "loss"', 'name = "lossy"'), ("tiny.toml:21:", "did you mean", "'loss'")),
        (('name = "mlp"', 'name = "mlp"\noptions = { widht = 3 }'), ("tiny.toml:16:", "widht")),
        (("epochs = 1", 'epochs = "many"'), ("tiny.toml:9:", "[recipe] value 'epochs'")),
        (("[recipe]", "[recipes]"), ("tiny.toml:8:", "unknown section 'recipes'")),
        (
            ("seeds = [0, 1]", "seeds = [0, 1]\nshadow = 2"),
            ("tiny.toml:5:", "[suite] key 'shadow'"),
        ),
        (("population = 60", "population = 2"), ("tiny.toml:", "population")),
        (("[[attacks]]", "[[attack]]"), ("tiny.toml:", "attack")),
        (("epochs = 1", "epochs = = 1"), ("tiny.toml:", "not valid TOML")),
        (('name = "tiny"', 'name = "tiny"\nrank_by = "auroc"'), ("tiny.toml:4:", "'auroc'")),
    ],
)
def test_malformed_suites_are_rejected_before_any_training(capsys, tmp_path, change, expected):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SMALL.replace(*change))
    ws = tmp_path / "ws"
    code, out, err = run_cli(capsys, "bench", str(suite), "-w", str(ws))
    assert code == 2, out
    assert len(err.strip().splitlines()) == 1, err
    for part in expected:
        assert part in err, err
    assert not (ws / "models").exists() and not (ws / "privbench.db").exists()


def test_leaderboard_errors_are_one_line(capsys, tmp_path):
    ws = str(tmp_path / "ws")
    code, _, err = run_cli(capsys, "leaderboard", "-w", ws)
    assert code == 2 and "no results database" in err
    suite = tmp_path / "tiny.toml"
    suite.write_text(SMALL)
    run_cli(capsys, "bench", str(suite), "-w", ws, "-q")
    code, _, err = run_cli(capsys, "leaderboard", str(suite), "-w", ws, "--rank-by", "auroc")
    assert code == 2 and "cannot rank by 'auroc'" in err
    code, _, err = run_cli(capsys, "leaderboard", str(suite), "-w", ws, "--format", "pdf")
    assert code == 2 and "unknown format 'pdf'" in err
    code, _, err = run_cli(capsys, "leaderboard", str(tmp_path / "other.toml"), "-w", ws)
    assert code == 2 and "no such suite file" in err


def test_a_missing_suite_file_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "bench", str(tmp_path / "nope.toml"))
    assert code == 2 and "no such suite file" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["smoke", "digits", "cifar10", "cifar100"])
def test_the_shipped_suites_are_valid(name):
    from privbench.bench.suite import load_suite

    # CIFAR is not on a test machine: its suites' plugins and options are checked all the same.
    suite = load_suite(ROOT / "benchmarks" / f"{name}.toml", check_data="cifar" not in name)
    assert suite.name == name and suite.cells
    assert len({cell.key for cell in suite.cells}) == len(suite.cells)


def test_a_paper_scale_suite_without_its_data_says_how_to_provide_it(capsys, tmp_path):
    ws = tmp_path / "ws"
    suite = ROOT / "benchmarks" / "cifar10.toml"
    code, _, err = run_cli(capsys, "bench", str(suite), "-w", str(ws), "--data-root", str(ws))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cifar10.toml:35: CIFAR-10 not found under" in err
    assert "cifar-10-batches-py" in err and not ws.exists()


def test_where_the_data_lies_is_not_part_of_a_cell(tmp_path, monkeypatch):
    from privbench.bench.suite import load_suite

    suite = tmp_path / "tiny.toml"
    suite.write_text(SMALL)
    here = load_suite(suite)
    monkeypatch.setenv("PRIVBENCH_DATA", str(tmp_path))
    there = load_suite(suite, data_root=str(tmp_path / "elsewhere"))
    assert [cell.key for cell in here.cells] == [cell.key for cell in there.cells]
    assert {cell.spec.data_root for cell in there.cells} == {str(tmp_path / "elsewhere")}
    assert {cell.spec.data_root for cell in load_suite(suite).cells} == {str(tmp_path)}


def test_a_suite_takes_a_preset_and_what_it_sets_wins(tmp_path):
    from privbench import PrivbenchError
    from privbench.bench.suite import load_suite
    from privbench.plugins import get_registry

    path = tmp_path / "preset.toml"
    path.write_text(
        '[suite]\nname = "p"\npreset = "quick"\nshadows = 5\npopulation = 60\n'
        '[[datasets]]\nname = "digits"\n[[models]]\nname = "mlp"\n'
        '[[defenses]]\nname = "none"\n[[attacks]]\nname = "loss"\n'
    )
    (cell,) = load_suite(path, get_registry(), check_data=False).cells
    assert cell.spec.shadows == 5  # the suite's own value wins over the preset's 3
    assert cell.spec.targets == 2 and cell.spec.recipe.epochs == 10  # the preset's
    path.write_text(path.read_text().replace('"quick"', '"quik"'))
    with pytest.raises(PrivbenchError, match=r"preset.toml:3: unknown preset 'quik'"):
        load_suite(path, get_registry(), check_data=False)
