"""Ensembles: K small models trained in one vmapped pass are the K sequential trainings."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from privbench import Model, TrainingRecipe
from privbench.engine.audit import run_audit
from privbench.engine.ensemble import can_ensemble, fit_ensemble
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import Workspace
from privbench.engine.training import StandardTrainer
from privbench.plugins import get_registry

pytestmark = pytest.mark.usefixtures("fresh_registry")


def _pool(model: str, k: int, n: int, **options):
    registry = get_registry()
    digits = registry.create("dataset", "digits").load(None)
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        net = registry.create("model", model, options).create(
            digits.input_shape, digits.num_classes
        )
        models.append(Model(net, digits.mean, digits.std))
    rng = np.random.default_rng(0)
    data = [digits.train.subset(rng.permutation(len(digits.train))[:n]) for _ in range(k)]
    return models, data


@pytest.mark.parametrize("model", ["small-cnn", "mlp"])
def test_an_ensemble_trains_what_sequential_training_trains(model):
    # Crops and a cosine schedule: every model's own generator and the shared schedule matter.
    recipe = TrainingRecipe(epochs=3, batch_size=32, augment="crop")
    models, data = _pool(model, 3, 96)
    sequential = [copy.deepcopy(m) for m in models]
    cpu = torch.device("cpu")
    expected = [
        StandardTrainer(recipe, seed=10 + k, device=cpu).fit(m, d)
        for k, (m, d) in enumerate(zip(sequential, data, strict=True))
    ]
    trainers = [StandardTrainer(recipe, seed=10 + k, device=cpu) for k in range(3)]
    metas = fit_ensemble(models, data, trainers)
    for ours, theirs, meta, reference in zip(models, sequential, metas, expected, strict=True):
        for name, value in theirs.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[name], value, atol=1e-5, rtol=1e-4)
        assert meta["final_train_loss"] == pytest.approx(reference["final_train_loss"], 1e-4)
        assert meta["ensemble"] == 3 and not ours.training
    # Different seeds, different models: the ensemble did not train one model three times.
    first, second = (m.state_dict() for m in models[:2])
    assert not all(torch.equal(first[name], second[name]) for name in first)


def test_what_cannot_train_as_an_ensemble_says_why():
    models, data = _pool("small-cnn", 2, 50, batchnorm=True)
    assert "batch norm" in can_ensemble(models, data)
    models, data = _pool("mlp", 2, 50)
    assert can_ensemble(models, [data[0], data[1].subset(np.arange(40))]) == (
        "training sets of different sizes"
    )
    assert can_ensemble(models[:1], data[:1]) == "fewer than two models"
    assert can_ensemble(models, data) is None


def test_the_engine_trains_a_pool_as_an_ensemble_with_the_same_results(tmp_path, monkeypatch):
    spec = AuditSpec(
        model=PluginChoice("mlp"),
        attacks=(PluginChoice("loss"),),
        recipe=TrainingRecipe(epochs=5),
        shadows=3,
        population=120,
        device="cpu",
    )
    together = run_audit(spec, Workspace(tmp_path / "ensemble"))
    assert together.training.target_meta["ensemble"] == 4
    monkeypatch.setenv("PRIVBENCH_ENSEMBLE", "0")
    apart = run_audit(spec, Workspace(tmp_path / "sequential"))
    assert "ensemble" not in apart.training.target_meta
    assert together.attacks[0].metrics.auc == pytest.approx(apart.attacks[0].metrics.auc, abs=1e-3)
    for field in ("train_accuracy", "test_accuracy", "generalization_gap"):
        assert getattr(together.utility, field) == pytest.approx(
            getattr(apart.utility, field), abs=1e-3
        )
