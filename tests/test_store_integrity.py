"""The store verifies what it reads: damaged, swapped or rewritten entries are quarantined and
rebuilt; ``privbench store verify`` checks a whole workspace; diverging training stores nothing;
a failing attack or scorer is recorded beside the others' results."""

from __future__ import annotations

import json
import shutil
import sqlite3
import types
from pathlib import Path
from typing import ClassVar

import attrs
import pytest
import torch
from conftest import run_cli
from safetensors.torch import load, load_file, save_file

from privbench import Access, TrainingRecipe, WorkspaceError, hookimpl
from privbench.engine.audit import run_audit
from privbench.engine.progress import Callback
from privbench.engine.spec import AuditSpec, PluginChoice, spec_from_record, spec_record
from privbench.engine.store import Workspace
from privbench.engine.verify import verify_workspace
from privbench.errors import TrainingDivergedError
from privbench.plugins import Registry

FAST = TrainingRecipe(epochs=3, batch_size=32, lr=0.05)


def _spec(**overrides) -> AuditSpec:
    base = {
        "recipe": FAST,
        "shadows": 1,
        "population": 80,
        "attacks": (PluginChoice("loss"),),
        "device": "cpu",
    }
    return AuditSpec(**(base | overrides))


class Heard(Callback):
    def __init__(self) -> None:
        self.repairs: list[str] = []
        self.failures: list[str] = []
        self.trained: list[int] = []

    def on_store_repair(self, message: str) -> None:
        self.repairs.append(message)

    def on_failure(self, failure) -> None:
        self.failures.append(failure.line)

    def on_model_ready(self, index: int, trained: bool) -> None:
        if trained:
            self.trained.append(index)


def _entries(ws: Workspace) -> list[Path]:
    return sorted(p for p in ws.models.glob("*/*") if p.is_dir() and not p.name.startswith("."))


def _auc(result) -> float:
    return result.attacks[0].metrics.auc


@pytest.fixture(scope="module")
def clean(tmp_path_factory, registry):
    """A workspace with one audit's two models and signals, and that audit's result."""
    root = tmp_path_factory.mktemp("clean")
    result = run_audit(_spec(), Workspace(root), registry=registry)
    return root, result


@pytest.fixture
def workspace(clean, tmp_path) -> Workspace:
    """A copy of the clean workspace to damage."""
    shutil.copytree(clean[0], tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def _damage_weights(folder: Path, how: str, other: Path) -> None:
    weights = folder / "weights.safetensors"
    if how == "swapped":  # another model's (valid) weights file
        shutil.copy(other / "weights.safetensors", weights)
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif how == "empty":
        weights.write_bytes(b"")
    elif how == "garbage-meta":
        (folder / "meta.json").write_text("{not json")
    elif how == "missing-meta":
        (folder / "meta.json").unlink()
    elif how == "folder-swapped":  # the whole entry of another model under this key
        shutil.rmtree(folder)
        shutil.copytree(other, folder)
    elif how == "garbage-manifest":
        (folder / "manifest.json").write_bytes(b"\xff\xfe garbage")


@pytest.mark.parametrize(
    "how",
    ["swapped", "truncated", "empty", "garbage-meta", "missing-meta", "folder-swapped",
     "garbage-manifest"],
)  # fmt: skip
def test_a_damaged_model_is_quarantined_and_retrained_to_the_same_result(
    workspace, clean, registry, how
):
    first, second = _entries(workspace)
    _damage_weights(first, how, second)
    heard = Heard()
    result = run_audit(_spec(), workspace, registry=registry, callback=heard)
    assert len(heard.repairs) == 1 and first.name[:12] in heard.repairs[0]
    assert "\n" not in heard.repairs[0]
    assert heard.trained == [sorted(_entries(workspace)).index(first)] or len(heard.trained) == 1
    # Deterministic CPU training: the rebuilt model gives the clean run's numbers.
    assert _auc(result) == _auc(clean[1])
    (moved,) = list((workspace.root / "quarantine").iterdir())
    assert (moved / first.name).is_dir() and (moved / "reason.txt").read_text().strip()
    again = Heard()
    run_audit(_spec(), workspace, registry=registry, callback=again)
    assert again.repairs == [] and again.trained == [], "the rebuilt entry is whole"


def test_a_rewritten_signal_is_refused_and_recomputed(workspace, clean, registry):
    (signal,) = [p for p in workspace.signals.rglob("population-*.safetensors")][:1]
    stored = load(signal.read_bytes())["value"]
    from safetensors import safe_open

    with safe_open(str(signal), "pt") as handle:
        metadata = handle.metadata()
    save_file({"value": stored.flip(0).contiguous()}, str(signal), metadata=metadata)
    heard = Heard()
    result = run_audit(_spec(), workspace, registry=registry, callback=heard)
    assert len(heard.repairs) == 1 and "do not match their SHA-256" in heard.repairs[0]
    assert _auc(result) == _auc(clean[1])
    assert torch.equal(load_file(str(signal))["value"], stored), "recomputed and stored again"


def test_a_signal_moved_to_another_model_is_refused(workspace, registry):
    signals = sorted(workspace.signals.glob("*/*"))
    source = next(signals[0].glob("population-*.safetensors"))
    shutil.copy(source, signals[1] / source.name)
    key = signals[1].name
    assert workspace.stored_tensor(key, source.name.removesuffix(".safetensors")) is None
    assert "another model" in workspace.repairs[0]


def test_entries_stored_before_manifests_still_load(workspace, registry):
    for manifest in workspace.models.rglob("manifest.json"):
        manifest.unlink()
    heard = Heard()
    run_audit(_spec(), workspace, registry=registry, callback=heard)
    assert heard.repairs == [] and heard.trained == []
    report = verify_workspace(workspace)
    assert report.ok and report.count("unverified") == 2


def test_store_verify_reports_and_repair_rebuilds_the_same_weights(workspace, capsys):
    root = str(workspace.root)
    code, out, _ = run_cli(capsys, "store", "verify", "-w", root)
    assert code == 0 and "0 damaged" not in out and " ok" in out
    first, second = _entries(workspace)
    # From bytes: load_file maps the file, which the copy below overwrites in place.
    original = load((first / "weights.safetensors").read_bytes())
    shutil.copy(second / "weights.safetensors", first / "weights.safetensors")
    signal = next(workspace.signals.rglob("*.safetensors"))
    signal.write_bytes(signal.read_bytes()[:-8])
    (workspace.models / first.name[:2] / f".{first.name[:8]}-killed").mkdir()
    code, out, _ = run_cli(capsys, "store", "verify", "-w", root, "-q")
    assert code == 1 and "3 damaged" in out and "--repair" in out
    assert "does not match its SHA-256" in out and "interrupted write" in out
    code, out, _ = run_cli(capsys, "store", "verify", "-w", root, "--repair", "-q")
    assert code == 0, out
    assert "1 rebuilt" in out and "2 quarantined" in out
    rebuilt = load((first / "weights.safetensors").read_bytes())
    # Retrained alone by the recipe, not in the audit's ensemble: equal up to float rounding.
    assert all(torch.allclose(rebuilt[k], original[k], atol=1e-6) for k in original)
    assert not signal.exists()
    code, out, _ = run_cli(capsys, "store", "verify", "-w", root)
    assert code == 0 and "damaged" not in out.split("\n")[-2]


def test_store_verify_checks_runs_and_the_database(workspace, capsys):
    run = next(workspace.runs.iterdir())
    scores = run / "membership-scores.safetensors"
    data = bytearray(scores.read_bytes())
    data[-1] ^= 0xFF
    scores.write_bytes(bytes(data))
    code, out, _ = run_cli(capsys, "store", "verify", "-w", str(workspace.root), "--repair")
    assert code == 1 and "damaged: run" in out and "left as they are" in out
    assert scores.exists(), "finished results are never moved"
    code, out, _ = run_cli(capsys, "store", "verify", "-w", str(workspace.root / "nothing"))
    assert code == 2 and "not a privbench workspace" in out + _


def test_a_damaged_database_is_reported(workspace, capsys):
    data = workspace.database.read_bytes()
    workspace.database.write_bytes(data[:100] + b"\x07" * (len(data) - 100))
    code, out, _ = run_cli(capsys, "store", "verify", "-w", str(workspace.root), "-q")
    assert code == 1 and "damaged: database" in out


def test_the_manifest_keeps_the_spec_that_retrains_the_model(workspace):
    first = _entries(workspace)[0]
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["key"] == first.name
    assert spec_from_record(manifest["origin"]["spec"]) == _spec()
    assert spec_record(_spec()) == manifest["origin"]["spec"]


def test_a_symlink_out_of_the_workspace_is_refused(tmp_path, registry):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "ws"
    root.mkdir()
    (root / "models").symlink_to(outside)
    with pytest.raises(WorkspaceError, match="leads out of the workspace") as caught:
        run_audit(_spec(), Workspace(root), registry=registry)
    assert "\n" not in str(caught.value)
    assert not any(outside.iterdir()), "nothing written where the link leads"


@pytest.mark.parametrize("ensemble", ["1", "0"])
def test_diverging_training_stops_in_one_line_and_stores_nothing(
    tmp_path, registry, monkeypatch, ensemble
):
    monkeypatch.setenv("PRIVBENCH_ENSEMBLE", ensemble)
    spec = _spec(recipe=TrainingRecipe(epochs=4, batch_size=32, lr=1e12, momentum=0.9))
    ws = Workspace(tmp_path)
    with pytest.raises(TrainingDivergedError, match=r"training model \d of the pool diverged") as e:
        run_audit(spec, ws, registry=registry)
    assert "\n" not in str(e.value) and "--lr 1e+12" in str(e.value)
    assert "not finite" in str(e.value) or "loss is nan" in str(e.value)
    assert _entries(ws) == []
    assert not ws.database.exists()


def test_non_finite_outputs_of_a_defense_stop_in_one_line(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "run", "--population", "64", "--epochs", "1", "--shadows", "1", "-q",
        "--defense", "feature-noise", "--defense-opt", "scale=1e308", "-w", str(tmp_path),
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "non-finite logits" in err and "feature-noise' (scale=1e308)" in err


@attrs.frozen
class Explodes:
    name: ClassVar[str] = "explodes"
    description: ClassVar[str] = "raises while scoring"
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 0

    def score(self, context):
        raise RuntimeError("boom\nwith a second line")


@attrs.frozen
class ExplodingScorer:
    name: ClassVar[str] = "explodes"
    description: ClassVar[str] = "raises while scoring"
    access: ClassVar[Access] = Access.LOGITS

    def score(self, view, x, y):
        raise ValueError("no score")


def _exploding_registry() -> Registry:
    module = types.ModuleType("exploding_plugin")

    @hookimpl
    def register_attacks(register):
        register(Explodes)

    @hookimpl
    def register_scorers(register):
        register(ExplodingScorer)

    module.register_attacks = register_attacks
    module.register_scorers = register_scorers
    registry = Registry.from_environment()
    registry.load_module(module)
    return registry


def test_a_failing_attack_or_scorer_keeps_the_others_results(tmp_path):
    registry = _exploding_registry()
    spec = _spec(
        attacks=(PluginChoice("explodes"), PluginChoice("loss")),
        scorers=(PluginChoice("explodes"), PluginChoice("logit-confidence")),
    )
    heard = Heard()
    result = run_audit(spec, Workspace(tmp_path), registry=registry, callback=heard)
    assert [a.name for a in result.attacks] == ["loss"] and 0.0 <= _auc(result) <= 1.0
    assert list(result.scorers) == ["logit-confidence"]
    assert [f.line for f in result.failures] == [
        "scorer 'explodes' failed: ValueError: no score",
        "attack 'explodes' failed: RuntimeError: boom with a second line",
    ]
    assert heard.failures == [f.line for f in result.failures] and not result.ok
    record = json.loads((result.path / "results.json").read_text())
    assert [f["name"] for f in record["failures"]] == ["explodes", "explodes"]
    with sqlite3.connect(tmp_path / "privbench.db") as connection:
        assert connection.execute("SELECT attack FROM results").fetchall() == [("loss",)]
    from privbench import load_run

    assert load_run(result.run_id, workspace=tmp_path).failures == result.failures
    assert "failed: attack 'explodes' failed: RuntimeError" in str(result)


def test_the_cli_exits_1_when_an_attack_failed(capsys, tmp_path, monkeypatch):
    from privbench.plugins import set_registry

    set_registry(_exploding_registry())
    try:
        code, out, _ = run_cli(
            capsys, "run", "--population", "64", "--epochs", "1", "--shadows", "1", "-q",
            "-a", "explodes", "-a", "loss", "-w", str(tmp_path),
        )  # fmt: skip
    finally:
        set_registry(None)
    assert code == 1
    assert "failed: attack 'explodes' failed: RuntimeError: boom" in out
    assert "| loss" in out or " loss " in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "inf"], "'lr' must be a finite float32"),
        (["--lr", "1e308"], "'lr' must be a finite float32"),
        (["--momentum", "inf"], "'momentum' must be a finite float32"),
        (["--defense", "feature-noise", "--defense-opt", "scale=inf"], "'scale' must be < inf"),
    ],
)
def test_values_no_training_survives_are_refused_before_any_training(
    capsys, tmp_path, flags, message
):
    code, _, err = run_cli(
        capsys, "run", "--population", "64", "--epochs", "1", "--shadows", "1", "-q",
        "-w", str(tmp_path / "ws"), *flags,
    )  # fmt: skip
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "ws" / "models").exists()
