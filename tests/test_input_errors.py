"""Bad input gets one line, never a traceback (issue 18): workspaces that cannot be written, a
damaged results database, output paths that are folders or lie nowhere, negative seeds,
devices privbench does not train on, and pools or models too large for the machine, each
refused before any data is loaded or any model trained."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import run_cli

import privbench
from privbench.engine import preflight, splits
from privbench.engine.settings import build_spec
from privbench.engine.training import resolve_device
from privbench.errors import OptionError, WorkspaceError
from privbench.plugins import get_registry
from privbench.results.db import ResultsDB

pytestmark = pytest.mark.usefixtures("fresh_registry")

TINY = ("--population", "64", "--epochs", "1", "--shadows", "1", "-q")


def one_line_error(code: int, out: str, err: str, *needles: str) -> str:
    """The error line, after asserting it is the only one, with exit status 2, naming each
    of *needles*."""
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding one tiny run (one attack: one leaderboard row)."""
    ws = tmp_path_factory.mktemp("recorded") / "ws"
    privbench.audit(population=64, epochs=1, shadows=1, workspace=ws)
    return ws


# -- workspaces ----------------------------------------------------------------------------


def test_a_workspace_that_is_a_file_or_lies_under_one_is_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    code, out, err = run_cli(capsys, "run", "-w", str(afile), *TINY)
    one_line_error(code, out, err, str(afile), "is a file", "--workspace")
    code, out, err = run_cli(capsys, "run", "-w", str(afile / "sub"), *TINY)
    one_line_error(code, out, err, str(afile / "sub"), f"lies under {afile}", "--workspace")
    assert afile.read_text() == "not a folder"


def test_a_workspace_holding_a_file_where_a_folder_goes_is_refused(tmp_path, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "models").write_text("")
    code, out, err = run_cli(capsys, "run", "-w", str(ws), *TINY)
    one_line_error(code, out, err, "file models", "move it aside")
    assert not (ws / "runs").exists()


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A folder nothing can be created in: read-only bits, or (as root, whom permission bits
    do not stop) the immutable attribute; skipped where neither holds."""
    folder = tmp_path / "locked"
    folder.mkdir()
    immutable = False
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        done = chattr and subprocess.run([chattr, "+i", str(folder)], capture_output=True)
        if not done or done.returncode != 0:
            pytest.skip("running as root without chattr +i: no folder is unwritable to root")
        immutable = True
    else:
        folder.chmod(0o500)
    try:
        if preflight._probe_write(folder) is None:
            pytest.skip("this filesystem lets the locked folder be written")
        yield folder
    finally:
        if immutable:
            subprocess.run([shutil.which("chattr") or "chattr", "-i", str(folder)], check=True)
        folder.chmod(0o700)


def test_an_unwritable_workspace_is_refused_before_any_work(unwritable, capsys):
    code, out, err = run_cli(capsys, "run", "-w", str(unwritable), *TINY)
    one_line_error(code, out, err, str(unwritable), "is not writable", "--workspace")
    code, out, err = run_cli(capsys, "run", "-w", str(unwritable / "ws"), *TINY)
    one_line_error(code, out, err, f"{unwritable} is not writable", "cannot be made")
    assert list(unwritable.iterdir()) == []


def test_check_workspace_accepts_a_fresh_path_and_leaves_nothing(tmp_path):
    preflight.check_workspace(tmp_path / "new" / "ws")
    assert list(tmp_path.iterdir()) == []


# -- the results database ------------------------------------------------------------------


def _damaged(kind: str, recorded: Path, root: Path) -> Path:
    """A copy of *recorded* (its runs folder too) whose database is garbage or truncated."""
    ws = root / kind
    shutil.copytree(recorded, ws)
    database = ws / "privbench.db"
    if kind == "garbage":
        database.write_bytes(os.urandom(8192))
    else:
        with open(database, "r+b") as handle:
            handle.truncate(database.stat().st_size // 2)
    return ws


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_a_damaged_database_gets_one_line_from_every_command(kind, recorded, tmp_path, capsys):
    ws = _damaged(kind, recorded, tmp_path)
    run_id = next((ws / "runs").iterdir()).name
    for args in (["runs"], ["show", "latest"], ["show", run_id[:12]], ["leaderboard"]):
        code, out, err = run_cli(capsys, *args, "-w", str(ws))
        line = one_line_error(code, out, err, "privbench.db", "is damaged", "move it aside")
        assert "results.json" in line
    # An audit notices before it trains anything (the model store stays as it was).
    models = sorted(p.name for p in (ws / "models").rglob("*"))
    code, out, err = run_cli(capsys, "run", "-w", str(ws), "--seed", "7", *TINY)
    one_line_error(code, out, err, "is damaged")
    assert sorted(p.name for p in (ws / "models").rglob("*")) == models
    # A run's folder still reads without the database.
    code, out, err = run_cli(capsys, "show", str(ws / "runs" / run_id))
    assert code == 0, err


def test_damage_a_query_finds_inside_a_transaction_is_one_line(tmp_path):
    database = tmp_path / "privbench.db"
    with ResultsDB(database):
        pass
    with pytest.raises(WorkspaceError, match=r"is damaged .*move it aside"), ResultsDB(database):
        raise sqlite3.DatabaseError("database disk image is malformed")
    with pytest.raises(sqlite3.OperationalError), ResultsDB(database):  # not damage: as it is
        raise sqlite3.OperationalError("database is locked")


def test_a_sound_database_passes_its_check(recorded):
    preflight.check_database(recorded / "privbench.db")


# -- output files --------------------------------------------------------------------------


def test_leaderboard_output_must_be_a_file_in_a_folder_that_exists(recorded, tmp_path, capsys):
    ws = str(recorded)
    code, out, err = run_cli(capsys, "leaderboard", "-w", ws, "-o", str(tmp_path))
    one_line_error(code, out, err, str(tmp_path), "is a folder", "give a file path")
    missing = tmp_path / "missing_dir" / "x.md"
    code, out, err = run_cli(capsys, "leaderboard", "-w", ws, "-o", str(missing))
    one_line_error(code, out, err, "missing_dir does not exist", "create it")
    assert not missing.parent.exists()
    target = tmp_path / "board.md"
    code, out, err = run_cli(capsys, "leaderboard", "-w", ws, "-o", str(target))
    assert code == 0, err
    assert "leaderboard (1 row," in out and "| loss" in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["board.md"]  # no temporary file left


def test_new_plugin_directory_that_is_a_file_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("")
    code, out, err = run_cli(capsys, "new-plugin", "mine", "-d", "afile")
    one_line_error(code, out, err, "--directory afile is a file", "give a folder")
    code, out, err = run_cli(capsys, "new-plugin", "mine", "-d", "afile/sub")
    one_line_error(code, out, err, "lies under afile")
    assert sorted(os.listdir(tmp_path)) == ["afile"]
    code, out, err = run_cli(capsys, "new-plugin", "mine", "-d", "plugins")
    assert code == 0, err
    assert os.listdir(tmp_path / "plugins") == ["privbench-mine"]  # no staging folder left
    assert (tmp_path / "plugins" / "privbench-mine" / "pyproject.toml").is_file()


# -- seeds and devices ---------------------------------------------------------------------


def test_a_negative_seed_is_refused_in_the_cli_and_the_api(tmp_path, capsys):
    ws = tmp_path / "ws"
    code, out, err = run_cli(capsys, "run", "--seed", "-1", "-w", str(ws), *TINY)
    one_line_error(code, out, err, "--seed -1", "0 or more")
    with pytest.raises(OptionError, match="--seed -5: a seed is an integer of 0 or more"):
        privbench.audit(seed=-5, workspace=ws, population=64, epochs=1, shadows=1)
    with pytest.raises(OptionError, match="--seed -1"):
        privbench.audit_outputs(
            member=[True, False], losses=[0.1, 2.0], attacks="loss", seed=-1, workspace=ws
        )
    assert not ws.exists()


@pytest.mark.parametrize("device", ["meta", "xla", "mps", "cuda:abc", "CPU", "gpu"])
def test_only_cpu_and_cuda_devices_are_accepted(device, tmp_path, capsys):
    ws = tmp_path / "ws"
    code, out, err = run_cli(capsys, "run", "--device", device, "-w", str(ws), *TINY)
    one_line_error(code, out, err, f"'{device}'", "use auto, cpu, cuda or cuda:N")
    assert not ws.exists()


def test_a_cuda_index_beyond_the_devices_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(OptionError, match=r"has 2 CUDA device.*use cuda:0 to cuda:1"):
        resolve_device("cuda:2")


# -- sizes ---------------------------------------------------------------------------------


def test_an_absurd_shadow_count_fails_in_milliseconds(tmp_path, capsys):
    registry = get_registry()
    started = time.perf_counter()
    with pytest.raises(OptionError, match="at most 100,000 shadow models"):
        build_spec(registry, shadows=99999999999999999999)
    assert time.perf_counter() - started < 1.0
    code, out, err = run_cli(capsys, "run", "--shadows", "99999999999999999999", "-w", "x")
    one_line_error(code, out, err, "--shadows 99999999999999999999", "give fewer")


def test_keep_masks_that_would_not_fit_are_refused_before_they_are_drawn(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr("privbench.engine.pool.available_memory", lambda: 1 << 20)
    drawn = []
    monkeypatch.setattr(splits, "keep_masks", lambda *args, **kw: drawn.append(args))
    ws = tmp_path / "ws"
    args = ("run", "--shadows", "9999", "--population", "64", "-w", str(ws), "-q")
    code, out, err = run_cli(capsys, *args)
    one_line_error(code, out, err, "a pool of 10,000 models", "keep-masks", "--shadows 8,191")
    assert drawn == [] and not ws.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model-opt", "depth=12"], "25,770,584,330 parameters: training one needs"),
        (["--model-opt", "depth=100"], "too large to build"),
        (["--model-opt", "width=100000"], "900,005,600,010 parameters"),
    ],
)
def test_a_model_too_large_to_train_is_counted_not_allocated(options, message, tmp_path, capsys):
    ws = tmp_path / "ws"
    started = time.perf_counter()
    code, out, err = run_cli(capsys, "run", "-w", str(ws), *options, *TINY)
    one_line_error(code, out, err, "model 'small-cnn' with", message, "--model-opt")
    assert time.perf_counter() - started < 60  # allocating it would take minutes, or fail
    assert not ws.exists()


def test_a_pool_whose_weights_would_not_fit_is_refused(tmp_path, capsys):
    # 16.3 million parameters (65 MB) per model: one trains anywhere, 10,001 need 650 GB.
    model = ("--model", "mlp", "--model-opt", "width=4000", "--model-opt", "depth=2")
    args = ("run", "-w", str(tmp_path / "ws"), *model, "--shadows", "10000", "--population", "64")
    code, out, err = run_cli(capsys, *args, "-q")
    one_line_error(code, out, err, "a pool of 10,001 models does not fit", "give at most --shadows")
    assert not (tmp_path / "ws").exists()


def test_shadow_count_in_closed_form_matches_its_definition():
    for pool_size in range(1, 30):
        for paired in (False, True):
            counts = [
                len(splits.shadow_indices(pool_size, t, paired=paired)) for t in range(pool_size)
            ]
            assert splits.shadow_count(pool_size, paired=paired) == min(counts)
    started = time.perf_counter()
    assert splits.shadow_count(100_001, paired=True) == 99_999
    assert time.perf_counter() - started < 0.1


def test_available_memory_reads_the_machine():
    available = preflight.available_memory()
    assert available is not None and available > 0
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert available <= total
