"""The example third-party plugin (docs/examples/privbench-example-plugin) installs as a package
and works through the command line, found by its entry point like any plugin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "privbench-example-plugin"
PRIVBENCH = Path(sys.executable).with_name("privbench")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The package pip-installed (wheel built from a copy: the docs tree stays clean) into a
    folder of its own, which the commands below put on their path."""
    source = tmp_path_factory.mktemp("source") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source)
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True,
    )  # fmt: skip
    return target


def run(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PRIVBENCH_PLUGINS", None)
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_privbench_lists_the_installed_plugin(site):
    result = run(site, str(PRIVBENCH), "plugins", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    (plugin,) = [p for p in listing["plugins"] if p["name"] == "example"]
    assert plugin["status"] == "loaded" and plugin["distribution"] == "privbench-example-plugin"
    assert {(p["kind"], p["name"]) for p in plugin["provides"]} == {
        ("attack", "entropy"),
        ("scorer", "margin"),
    }


def test_its_attack_scorer_and_command_run_through_the_cli(site, tmp_path):
    result = run(
        site, str(PRIVBENCH), "run", "--attack", "entropy", "--attack", "loss",
        "--scorer", "margin", "--shadows", "1", "--population", "200", "--epochs", "20",
        "-w", str(tmp_path / "ws"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "entropy" in result.stdout and "margin" in result.stdout
    (record,) = (tmp_path / "ws" / "runs").glob("*/results.json")
    attacks = {a["name"]: a["metrics"]["auc"] for a in json.loads(record.read_text())["attacks"]}
    assert attacks["entropy"] > 0.5  # a trained model is more confident on its members
    result = run(site, str(PRIVBENCH), "example-plugin-info")
    assert result.returncode == 0 and "plugin API 1" in result.stdout


def test_its_own_contract_tests_pass(site):
    tests = str(EXAMPLE / "tests")
    result = run(site, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_plugins_check_runs_the_contracts_on_the_installed_plugin(site):
    result = run(site, str(PRIVBENCH), "plugins", "--check", "example")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok attack entropy: contract kept" in result.stdout
    assert "ok scorer margin: contract kept" in result.stdout


def test_a_new_plugin_skeleton_installs_loads_and_keeps_the_contracts(tmp_path):
    result = subprocess.run(
        [str(PRIVBENCH), "new-plugin", "my-attack", "-d", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    root = tmp_path / "privbench-my-attack"
    again = subprocess.run(
        [str(PRIVBENCH), "new-plugin", "my-attack", "-d", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 2 and "exists already" in again.stderr
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-build-isolation", "--target", str(site), str(root)],
        check=True, cwd=tmp_path,
    )  # fmt: skip
    result = run(site, str(PRIVBENCH), "plugins", "--check", "my-attack")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok attack my-attack: contract kept" in result.stdout
    tests = str(root / "tests")
    result = run(site, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests)
    assert result.returncode == 0 and "5 passed" in result.stdout, result.stdout  # 5 checks


def test_plugins_check_reports_a_broken_promise(capsys, tmp_path, monkeypatch):
    from conftest import run_cli

    from privbench.plugins import set_registry

    (tmp_path / "privbench_batchmean.py").write_text(BATCH_MEAN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PRIVBENCH_PLUGINS", "privbench_batchmean")
    set_registry(None)
    try:
        code, out, _ = run_cli(capsys, "plugins", "--check", "privbench_batchmean")
        assert code == 1 and "FAILED scorer batch-mean: AssertionError" in out
        code, out, _ = run_cli(capsys, "plugins", "--check", "loss")  # attack and scorer 'loss'
        assert code == 0 and out.count("ok ") == 2
        code, _, err = run_cli(capsys, "plugins", "--check", "los")
        assert code == 2 and "did you mean" in err
    finally:
        set_registry(None)


BATCH_MEAN = """
from typing import ClassVar
import attrs
from privbench import Access, hookimpl

@attrs.frozen
class BatchMean:
    name: ClassVar[str] = "batch-mean"
    description: ClassVar[str] = "a sample's value depends on its batch"
    access: ClassVar[Access] = Access.LOGITS

    def score(self, model, x, y):
        return model.logits(x).mean().expand(len(x))

@hookimpl
def register_scorers(register):
    register(BatchMean)
"""
