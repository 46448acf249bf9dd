"""The engine: the membership game, deterministic training, the store, signals, the audit."""

from __future__ import annotations

import json
import sqlite3
import types
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from privbench import (
    Access,
    Defense,
    Model,
    OptionError,
    TrainingRecipe,
    hookimpl,
)
from privbench.engine import splits
from privbench.engine.audit import plan, prepare, run_audit
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import Workspace
from privbench.engine.training import StandardTrainer, random_crop
from privbench.plugins import Registry

FAST = TrainingRecipe(epochs=8, batch_size=64, lr=0.05)


def test_keep_masks_are_halves_and_stable_as_the_pool_grows():
    masks = splits.keep_masks(101, 4, seed=3)
    assert masks.shape == (4, 101)
    assert (masks.sum(1) == 50).all()
    assert not (masks[0] == masks[1]).all()
    assert (splits.keep_masks(101, 8, seed=3)[:4] == masks).all()
    assert not (splits.keep_masks(101, 4, seed=4) == masks).all()


def test_population_indices_subsample_deterministically():
    a = splits.population_indices(1000, 100, seed=1)
    assert len(set(a.tolist())) == 100 and (np.diff(a) > 0).all()
    assert (a == splits.population_indices(1000, 100, seed=1)).all()
    assert (splits.population_indices(50, None, seed=1) == np.arange(50)).all()


def test_random_crop_shifts_within_padding():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for b in range(2):
        windows = [padded[b, :, i : i + 4, j : j + 4] for i in range(3) for j in range(3)]
        assert any(torch.equal(out[b], w) for w in windows)


def _small_model(registry, digits) -> Model:
    net = registry.create("model", "small-cnn").create(digits.input_shape, digits.num_classes)
    return Model(net, digits.mean, digits.std)


def test_training_is_deterministic_on_the_cpu(registry, digits):
    data = digits.train.subset(np.arange(256))
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = _small_model(registry, digits)
        StandardTrainer(FAST, seed=7, device=torch.device("cpu")).fit(model, data)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_store_round_trip_is_atomic(tmp_path, registry, digits):
    ws = Workspace(tmp_path).create()
    model = _small_model(registry, digits)
    ws.save_model("ab" * 32, model, {"note": 1})
    assert ws.has_model("ab" * 32)
    assert not [p for p in ws.model_dir("ab" * 32).parent.iterdir() if p.name.startswith(".")]
    fresh = _small_model(registry, digits)
    assert ws.load_model("ab" * 32, fresh) == {"note": 1}
    assert all(
        torch.equal(model.state_dict()[k], fresh.state_dict()[k]) for k in fresh.state_dict()
    )
    calls = []
    first = ws.cached_tensor("ab" * 32, "x", lambda: calls.append(1) or torch.ones(3))
    second = ws.cached_tensor("ab" * 32, "x", lambda: calls.append(1) or torch.zeros(3))
    assert calls == [1] and torch.equal(first, second)


def _spec(**overrides) -> AuditSpec:
    base = {
        "recipe": FAST,
        "shadows": 3,
        "population": 400,
        "attacks": (PluginChoice("loss"), PluginChoice("confidence")),
        "device": "cpu",
    }
    base.update(overrides)
    return AuditSpec(**base)


def test_second_run_trains_nothing_and_reproduces_the_metrics(tmp_path, registry):
    ws = Workspace(tmp_path)
    first = run_audit(_spec(), ws, registry=registry)
    second = run_audit(_spec(), ws, registry=registry)
    assert first.to_record()["training"]["trained"] == 4
    assert second.to_record()["training"]["trained"] == 0
    assert second.to_record()["training"]["reused"] == 4
    assert [a["metrics"] for a in first.to_record()["attacks"]] == [
        a["metrics"] for a in second.to_record()["attacks"]
    ]
    # A bigger pool reuses the first models: masks depend only on (seed, index).
    bigger = run_audit(_spec(shadows=5), ws, registry=registry)
    assert bigger.to_record()["training"]["trained"] == 2
    with sqlite3.connect(ws.database) as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 3
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 6
    record = json.loads((first.path / "results.json").read_text())
    assert record["run_id"] == first.run_id
    assert (first.path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_pool_is_reproduced_bit_for_bit_in_another_workspace(tmp_path, registry):
    from safetensors.torch import load_file

    spec = _spec(shadows=1, attacks=(PluginChoice("loss"),))
    torch.manual_seed(123)  # the global RNG state must not matter
    first = run_audit(spec, Workspace(tmp_path / "a"), registry=registry)
    torch.manual_seed(456)
    second = run_audit(spec, Workspace(tmp_path / "b"), registry=registry)
    files = sorted((tmp_path / "a" / "models").glob("*/*/weights.safetensors"))
    assert len(files) == 2
    for path in files:
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        a, b = load_file(str(path)), load_file(str(twin))
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.to_record()["attacks"][0]["metrics"] == second.to_record()["attacks"][0]["metrics"]


def test_an_interrupted_run_resumes(tmp_path, registry, monkeypatch):
    # One model at a time, so that the interrupt falls between stored models (an ensemble
    # stores its models together once it has trained them all).
    monkeypatch.setenv("PRIVBENCH_ENSEMBLE", "0")
    ws = Workspace(tmp_path)
    original_fit = StandardTrainer.fit
    calls = {"n": 0}

    def flaky_fit(self, model, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original_fit(self, model, data)

    monkeypatch.setattr(StandardTrainer, "fit", flaky_fit)
    with pytest.raises(KeyboardInterrupt):
        run_audit(_spec(), ws, registry=registry)
    assert not ws.database.exists() and not list(ws.runs.iterdir())
    monkeypatch.setattr(StandardTrainer, "fit", original_fit)
    resumed = run_audit(_spec(), ws, registry=registry)
    assert resumed.to_record()["training"]["trained"] == 2


def _cheating_plugin() -> types.ModuleType:
    @attrs.frozen
    class Cheat:
        name: ClassVar[str] = "cheat"
        description: ClassVar[str] = "declares logits, asks for gradients"
        access: ClassVar[Access] = Access.LOGITS
        min_shadows: ClassVar[int] = 0

        def score(self, context):
            pop = context.population
            return context.target.input_gradient(pop.x, pop.y).flatten(1).norm(dim=1).numpy()

    @attrs.frozen
    class WhiteBox:
        name: ClassVar[str] = "white-box"
        description: ClassVar[str] = "reads the parameters it declared"
        access: ClassVar[Access] = Access.PARAMETERS
        min_shadows: ClassVar[int] = 2

        def score(self, context):
            assert all(isinstance(s.model, Model) for s in context.shadows)
            assert context.shadow_keep.shape == (len(context.shadows), len(context.population))
            pop = context.population
            return -context.target.model.loss(pop.x, pop.y).detach().numpy()

    module = types.ModuleType("cheating_plugin")

    @hookimpl
    def register_attacks(register):
        register(Cheat)
        register(WhiteBox)

    module.register_attacks = register_attacks
    return module


def test_the_target_view_enforces_the_declared_access(tmp_path):
    registry = Registry.from_environment()
    registry.load_module(_cheating_plugin())
    ws = Workspace(tmp_path)
    # The refusal fails that attack alone: recorded as failed beside the other's result.
    result = run_audit(
        _spec(attacks=(PluginChoice("cheat"), PluginChoice("white-box"))), ws, registry=registry
    )
    (failure,) = result.failures
    assert failure.name == "cheat" and failure.error.startswith("AccessDeniedError: ")
    assert "input_gradient needs 'input-gradients' access" in failure.error
    assert [a.name for a in result.attacks] == ["white-box"]
    assert result.attacks[0].access == "parameters"


def test_validation_happens_before_any_work(tmp_path, registry):
    with pytest.raises(OptionError, match="needs at least 2 shadow models"):
        reg = Registry.from_environment()
        reg.load_module(_cheating_plugin())
        prepare(_spec(shadows=1, attacks=(PluginChoice("white-box"),)), reg)
    with pytest.raises(OptionError, match="given twice"):
        prepare(_spec(attacks=(PluginChoice("loss"), PluginChoice("loss"))), registry)
    with pytest.raises(OptionError, match="--targets must be between 1 and 4"):
        prepare(_spec(targets=5), registry)
    with pytest.raises(OptionError, match="changes labels"):
        run_audit(
            _spec(recipe=TrainingRecipe(augment="flip")), Workspace(tmp_path), registry=registry
        )
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_a_checkpoint_file_is_part_of_the_model_identity(tmp_path, registry):
    from safetensors.torch import save_file

    path = tmp_path / "init.safetensors"
    net = registry.create("model", "small-cnn").create((1, 8, 8), 10)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    registry_with_file = Registry.from_environment()

    def key() -> str:
        spec = _spec(model=PluginChoice("timm/test_resnet", {"checkpoint": str(path)}))
        return plan(spec, registry_with_file).keys[0]

    first = key()
    assert key() == first
    save_file({"other": torch.zeros(1)}, str(path))
    assert key() != first


def _scorer_plugin(calls: list) -> types.ModuleType:
    @attrs.frozen
    class GradNorm:
        name: ClassVar[str] = "grad-norm"
        description: ClassVar[str] = "norm of the input gradient of the loss"
        access: ClassVar[Access] = Access.INPUT_GRADIENTS

        def score(self, model, x, y):
            calls.append(len(x))
            return model.input_gradient(x, y).flatten(1).norm(dim=1)

    @attrs.frozen
    class UsesGradNorm:
        name: ClassVar[str] = "uses-grad-norm"
        description: ClassVar[str] = "scores members by small input gradients"
        access: ClassVar[Access] = Access.INPUT_GRADIENTS
        min_shadows: ClassVar[int] = 1

        def score(self, context):
            for shadow in context.shadows:
                assert shadow.population_scores("grad-norm").shape == (len(context.population),)
            return -context.target.population_scores("grad-norm").numpy()

    @attrs.frozen
    class BlackBoxAsksGradients:
        name: ClassVar[str] = "black-box-asks-gradients"
        description: ClassVar[str] = "declares logits, asks a gradient scorer"
        access: ClassVar[Access] = Access.LOGITS
        min_shadows: ClassVar[int] = 0

        def score(self, context):
            return context.target.population_scores("grad-norm").numpy()

    module = types.ModuleType("scorer_plugin")

    @hookimpl
    def register_scorers(register):
        register(GradNorm)

    @hookimpl
    def register_attacks(register):
        register(UsesGradNorm)
        register(BlackBoxAsksGradients)

    module.register_scorers = register_scorers
    module.register_attacks = register_attacks
    return module


def test_scorer_signals_are_cached_and_respect_access(tmp_path):
    calls: list[int] = []
    registry = Registry.from_environment()
    registry.load_module(_scorer_plugin(calls))
    spec = _spec(shadows=1, population=100, attacks=(PluginChoice("uses-grad-norm"),))
    first = run_audit(spec, Workspace(tmp_path), registry=registry)
    # 2 models x 100 samples, in chunks of at most 512: each model scored exactly once.
    assert calls == [100, 100]
    second = run_audit(spec, Workspace(tmp_path), registry=registry)
    assert calls == [100, 100], "the second run must read the cache"
    assert first.to_record()["attacks"][0]["metrics"] == second.to_record()["attacks"][0]["metrics"]
    blocked = _spec(shadows=1, population=100, attacks=(PluginChoice("black-box-asks-gradients"),))
    (failure,) = run_audit(blocked, Workspace(tmp_path), registry=registry).failures
    assert failure.error.startswith("AccessDeniedError: scorer 'grad-norm' needs 'input-gradients'")


def test_an_older_results_database_gains_new_metric_columns(tmp_path):
    from privbench.results.db import METRIC_COLUMNS, ResultsDB

    path = tmp_path / "privbench.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE results (run_id TEXT, attack TEXT, access TEXT, options TEXT, "
            "auc REAL, seconds REAL, PRIMARY KEY (run_id, attack))"
        )
    with ResultsDB(path) as results:
        columns = {r["name"] for r in results.connection.execute("PRAGMA table_info(results)")}
    assert set(METRIC_COLUMNS) <= columns


def test_paired_masks_are_complementary_bernoulli_halves():
    masks = splits.keep_masks(1000, 6, seed=0, paired=True)
    assert (masks[0] == ~masks[1]).all() and (masks[4] == ~masks[5]).all()
    assert (masks.sum(0) == 3).all()  # every sample in exactly one model of each pair
    assert masks[0].sum() != 500 or masks[2].sum() != 500  # Bernoulli, not exact halves
    assert 400 < masks[0].sum() < 600


def test_paired_shadows_carry_no_membership_of_their_target():
    """With paired masks the target's partner knows its membership exactly; it is no shadow."""
    from sklearn.metrics import roc_auc_score

    masks = splits.keep_masks(4000, 8, seed=0, paired=True)
    for target in range(8):
        others = splits.shadow_indices(8, target, paired=True)
        assert len(others) == 6 and target not in others and target ^ 1 not in others
        in_count = masks[others].sum(0)  # how many shadows trained on each sample
        assert abs(roc_auc_score(masks[target], in_count) - 0.5) < 0.03
    # The leak this prevents: with every other model as shadow, the count reveals membership.
    leaky = masks[[k for k in range(8) if k != 0]].sum(0)
    assert roc_auc_score(masks[0], leaky) < 0.1
    assert splits.shadow_indices(5, 4, paired=True) == [0, 1, 2, 3]  # no partner in the pool
    assert splits.shadow_count(4, paired=True) == 2 and splits.shadow_count(4) == 3


def test_paired_pools_need_one_more_shadow(registry):
    reg = Registry.from_environment()
    reg.load_module(_cheating_plugin())
    with pytest.raises(OptionError, match=r"use --shadows 3 or more \(with --paired"):
        prepare(_spec(shadows=2, paired=True, attacks=(PluginChoice("white-box"),)), reg)
    prepare(_spec(shadows=3, paired=True, attacks=(PluginChoice("white-box"),)), reg)


def test_per_target_metrics_are_summarised(tmp_path, registry):
    result = run_audit(_spec(shadows=2, paired=True), Workspace(tmp_path), registry=registry)
    loss = result.to_record()["attacks"][0]
    assert result.to_record()["spec"]["paired"] is True
    aucs = [loss["per_target"]["mean"]["auc"], loss["per_target"]["std"]["auc"]]
    assert 0.3 < aucs[0] < 0.9 and aucs[1] > 0
    # Every metric but the one-run bound, which only a one-run audit (one target) has.
    assert set(loss["per_target"]["mean"]) == set(loss["metrics"]) - {"epsilon_one_run"}


def test_memorization_is_high_for_mislabeled_samples(tmp_path, registry):
    options = {"num_train": 240, "num_test": 60, "num_classes": 4, "label_noise": 0.15, "seed": 3}
    spec = _spec(
        dataset=PluginChoice("synthetic", options),
        model=PluginChoice("mlp"),
        recipe=TrainingRecipe(epochs=60, batch_size=32, optimizer="adamw", lr=3e-3, weight_decay=0),
        shadows=7,
        population=None,
        attacks=(PluginChoice("loss"),),
        memorization=True,
    )
    result = run_audit(spec, Workspace(tmp_path), registry=registry)
    clean = registry.create("dataset", "synthetic", {**options, "label_noise": 0.0}).load(None)
    noisy = registry.create("dataset", "synthetic", options).load(None)
    mislabeled = (clean.train.y != noisy.train.y).numpy()
    assert 10 < mislabeled.sum() < 60
    table = np.genfromtxt(result.path / "memorization.csv", delimiter=",", names=True)
    assert (table["index"] == np.arange(240)).all()
    memorization = table["memorization"]
    gap = np.nanmean(memorization[mislabeled]) - np.nanmean(memorization[~mislabeled])
    assert gap > 0.3, gap
    assert result.to_record()["memorization"]["models"] == 8
    # ... and high input-loss curvature (Ravikumar et al., ICML 2024): measured median ratio ~9,
    # Spearman correlation ~0.28 over all samples.
    curvature = table["curvature_in"]
    ratio = np.nanmedian(curvature[mislabeled]) / np.nanmedian(curvature[~mislabeled])
    assert ratio > 3, ratio
    assert result.to_record()["memorization"]["spearman_curvature"] > 0.15


def test_defenses_get_the_train_split_outside_the_population_as_reference(tmp_path):
    """Reference data (DMP's public set) is disjoint from everything the audit trains or scores."""

    @attrs.frozen
    class Peek(Defense):
        name: ClassVar[str] = "peek"
        description: ClassVar[str] = "records the reference data it is given"

        def fit(self, model, data, trainer):
            meta = trainer.fit(model, data)
            rows = {tuple(r) for r in trainer.reference.x.flatten(1).tolist()}
            overlap = sum(tuple(r) in rows for r in data.x.flatten(1).tolist())
            return {**meta, "reference": len(trainer.reference), "overlap": overlap}

    module = types.ModuleType("peek_plugin")

    @hookimpl
    def register_defenses(register):
        register(Peek)

    module.register_defenses = register_defenses
    registry = Registry.from_environment()
    registry.load_module(module)
    spec = _spec(defense=PluginChoice("peek"), shadows=0, attacks=(PluginChoice("loss"),))
    result = run_audit(spec, Workspace(tmp_path), registry=registry)
    meta = result.to_record()["training"]["target_meta"]
    train_size = len(registry.create("dataset", "digits").load(None).train)
    assert meta["reference"] == train_size - 400
    assert meta["overlap"] == 0


def test_mse_recipe_regresses_centred_one_hot_targets_with_a_constant_lr(registry, digits):
    """Loo et al.'s setting: full-batch gradient descent on the squared error to one-hot
    targets minus 1/C, at a constant learning rate."""
    from privbench.engine.training import recipe_loss

    data = digits.train.subset(np.arange(64))
    recipe = TrainingRecipe(
        epochs=300, batch_size=64, lr=0.5, momentum=0.9, weight_decay=0.0, loss="mse",
        schedule="constant",
    )  # fmt: skip
    torch.manual_seed(0)
    net = registry.create("model", "mlp", {"width": 128}).create(digits.input_shape, 10)
    model = Model(net, digits.mean, digits.std)
    trainer = StandardTrainer(recipe, seed=0, device=torch.device("cpu"))
    optimizer = trainer.make_optimizer(model)
    scheduler = trainer.make_scheduler(optimizer)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.5  # constant, where cosine would have decayed
    meta = trainer.fit(model, data)
    with torch.no_grad():
        outputs = model(data.x)
    centred = torch.nn.functional.one_hot(data.y, 10).float() - 0.1
    assert float((outputs - centred).abs().max()) < 0.1  # interpolates the regression targets
    assert meta["final_train_loss"] == pytest.approx(
        float(recipe_loss(recipe, outputs, data.y)), abs=1e-3
    )
    by_hand = 0.5 * (outputs - centred).square().sum(1).mean()
    assert float(recipe_loss(recipe, outputs, data.y)) == pytest.approx(float(by_hand))


def test_new_recipe_fields_at_their_defaults_keep_stored_model_keys():
    from privbench.engine.spec import recipe_identity

    default = recipe_identity(TrainingRecipe())
    assert "loss" not in default and "schedule" not in default
    assert recipe_identity(TrainingRecipe(loss="mse"))["loss"] == "mse"
    assert recipe_identity(TrainingRecipe(schedule="constant")) != default
