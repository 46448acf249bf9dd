"""Ensembles: K small models trained in one vmapped pass are the K sequential trainings."""

from __future__ import annotations

import copy

import attrs
import numpy as np
import pytest
import torch

from privbench import Model, OptionError, TensorData, TrainingRecipe
from privbench.engine import ensemble
from privbench.engine.audit import run_audit
from privbench.engine.ensemble import augment_members, can_ensemble, fit_ensemble
from privbench.engine.fitting import ensembles_wanted
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


def _train_both(model: str, recipe: TrainingRecipe, k: int, n: int, dtype=torch.float32, **options):
    """The same K models trained one by one (the standard trainer) and as one ensemble:
    (sequential models, ensemble models, sequential metadata, ensemble metadata)."""
    models, data = _pool(model, k, n, **options)
    models = [m.to(dtype) for m in models]
    data = [TensorData(d.x.to(dtype), d.y) for d in data]
    sequential = [copy.deepcopy(m) for m in models]
    cpu = torch.device("cpu")
    expected = [
        StandardTrainer(recipe, seed=10 + i, device=cpu).fit(m, d)
        for i, (m, d) in enumerate(zip(sequential, data, strict=True))
    ]
    trainers = [StandardTrainer(recipe, seed=10 + i, device=cpu) for i in range(k)]
    metas = fit_ensemble(models, data, trainers)
    return sequential, models, expected, metas


@pytest.mark.parametrize(("model", "stacked"), [("small-cnn", True), ("mlp", True), ("mlp", False)])
def test_an_ensemble_trains_what_sequential_training_trains(model, stacked, monkeypatch):
    # Crops and a cosine schedule: every model's own generator and the shared schedule matter.
    # Unstacked: training sets too large to copy into one tensor are indexed member by member.
    if not stacked:
        monkeypatch.setattr(ensemble, "STACKED_BYTES", 0)
    recipe = TrainingRecipe(epochs=3, batch_size=32, augment="crop")
    sequential, models, expected, metas = _train_both(model, recipe, 3, 96)
    for ours, theirs, meta, reference in zip(models, sequential, metas, expected, strict=True):
        for name, value in theirs.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[name], value, atol=1e-5, rtol=1e-4)
        assert meta["final_train_loss"] == pytest.approx(reference["final_train_loss"], 1e-4)
        assert meta["ensemble"] == 3 and not ours.training
    # Different seeds, different models: the ensemble did not train one model three times.
    first, second = (m.state_dict() for m in models[:2])
    assert not all(torch.equal(first[name], second[name]) for name in first)


def test_an_ensemble_with_batch_norm_keeps_each_members_running_statistics():
    # 100 members in batches of 32: four steps an epoch, the last of 4 images, so the statistics
    # of a short batch count too; flips and crops make every member's batches its own. In
    # float64, because in float32 a rounding difference can flip a max-pool's pick, which batch
    # norm then spreads (measured: 2e-7 apart after 2 epochs, 9e-4 after 3 in float32; 8e-16 in
    # float64): what is compared here is the arithmetic, which must be the same.
    recipe = TrainingRecipe(epochs=3, batch_size=32, augment="flip+crop")
    sequential, models, expected, metas = _train_both(
        "small-cnn", recipe, 3, 100, dtype=torch.float64, batchnorm=True
    )
    statistics = [name for name in sequential[0].state_dict() if "running_" in name]
    assert len(statistics) == 6  # three BatchNorm2d layers, a mean and a variance each
    for ours, theirs, meta, reference in zip(models, sequential, metas, expected, strict=True):
        mine = ours.state_dict()
        for name, value in theirs.state_dict().items():
            torch.testing.assert_close(mine[name], value, atol=1e-10, rtol=1e-8)
        assert mine["net.features.1.num_batches_tracked"].item() == 3 * 4
        assert meta["final_train_loss"] == pytest.approx(reference["final_train_loss"], 1e-6)
        assert not ours.training
    # The statistics moved from their start (zeros and ones), and each member's differ: they
    # were updated from its own batches, not shared or left alone.
    for name in statistics:
        start = 0.0 if "mean" in name else 1.0
        values = [m.state_dict()[name] for m in models]
        assert all((v - start).abs().max() > 1e-2 for v in values), name
        assert (values[0] - values[1]).abs().max() > 1e-4, name
    # Eval mode normalises by the running statistics: the released models answer alike.
    test = get_registry().create("dataset", "digits").load(None).test
    with torch.no_grad():
        for ours, theirs in zip(models, sequential, strict=True):
            torch.testing.assert_close(
                ours(test.x.double()), theirs(test.x.double()), atol=1e-9, rtol=1e-8
            )


@pytest.mark.parametrize("mode", attrs.fields(TrainingRecipe).augment.validator.options)
def test_members_are_augmented_together_as_each_trainer_augments_its_own(mode):
    # Every augmentation a recipe may name, so that a new one cannot slip past the ensemble.
    assert mode in ensemble.AUGMENTATIONS
    trainer = StandardTrainer(TrainingRecipe(augment=mode), seed=0, device=torch.device("cpu"))
    x = torch.rand(3, 5, 1, 16, 16)
    ours = [torch.Generator().manual_seed(k) for k in range(3)]
    theirs = [torch.Generator().manual_seed(k) for k in range(3)]
    together = augment_members(x, mode, ours)
    for k in range(3):
        assert torch.equal(together[k], trainer.augment(x[k], theirs[k])), (mode, k)
        # Each generator drew what the trainer's draws: the next batch's draws agree too.
        assert torch.equal(ours[k].get_state(), theirs[k].get_state()), (mode, k)
    if mode != "none":
        assert not torch.equal(together, x)


class NoisyTrainer(StandardTrainer):
    """A trainer with its own augmentation, which the ensemble must call for each member."""

    def augment(self, x, generator):
        return x + 0.05 * torch.randn(x.shape, generator=generator)


def test_an_ensemble_uses_a_trainers_own_augmentation():
    models, data = _pool("mlp", 2, 64)
    sequential, plain = ([copy.deepcopy(m) for m in models] for _ in range(2))
    recipe, cpu = TrainingRecipe(epochs=2, batch_size=32), torch.device("cpu")
    for k, (m, d) in enumerate(zip(sequential, data, strict=True)):
        NoisyTrainer(recipe, seed=k, device=cpu).fit(m, d)
    fit_ensemble(models, data, [NoisyTrainer(recipe, seed=k, device=cpu) for k in range(2)])
    fit_ensemble(plain, data, [StandardTrainer(recipe, seed=k, device=cpu) for k in range(2)])
    for ours, theirs in zip(models, sequential, strict=True):
        for name, value in theirs.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[name], value, atol=1e-5, rtol=1e-4)
    # The noise was applied: without it the same members train to other weights.
    weights = "net.head.weight"
    assert (plain[0].state_dict()[weights] - models[0].state_dict()[weights]).abs().max() > 1e-3


def test_what_cannot_train_as_an_ensemble_says_why():
    models, data = _pool("small-cnn", 2, 50, batchnorm=True)
    assert can_ensemble(models, data) is None  # batch norm trains in an ensemble ...
    for model in models:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
    assert "momentum=None" in can_ensemble(models, data)  # ... unless cumulative
    models, data = _pool("mlp", 2, 50)
    assert can_ensemble(models, [data[0], data[1].subset(np.arange(40))]) == (
        "training sets of different sizes"
    )
    assert can_ensemble(models[:1], data[:1]) == "fewer than two models"
    large, _ = _pool("mlp", 2, 50, width=2048)  # 4.3 million parameters
    assert "4,349,962 parameters" in can_ensemble(large, data)
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
    monkeypatch.delenv("PRIVBENCH_ENSEMBLE", raising=False)  # the default: digits ensemble
    together = run_audit(spec, Workspace(tmp_path / "ensemble"))
    assert together.training.target_meta["ensemble"] == 4
    monkeypatch.setenv("PRIVBENCH_ENSEMBLE", "0")  # one by one
    apart = run_audit(spec, Workspace(tmp_path / "sequential"))
    assert "ensemble" not in apart.training.target_meta
    assert together.attacks[0].metrics.auc == pytest.approx(apart.attacks[0].metrics.auc, abs=1e-3)
    for field in ("train_accuracy", "test_accuracy", "generalization_gap"):
        assert getattr(together.utility, field) == pytest.approx(
            getattr(apart.utility, field), abs=1e-3
        )


@pytest.mark.parametrize(
    ("setting", "small_on_cpu", "large_on_cpu", "on_cuda"),
    [
        (None, True, False, True),
        ("auto", True, False, True),
        ("1", True, True, True),
        (" 0 ", False, False, False),
    ],
)
def test_privbench_ensemble_says_where_ensembles_train(
    monkeypatch, setting, small_on_cpu, large_on_cpu, on_cuda
):
    """By default ensembles train where they measured faster: on CUDA, and on the CPU for
    digits-sized images only (28x28 networks ran slower as ensembles there)."""
    if setting is None:
        monkeypatch.delenv("PRIVBENCH_ENSEMBLE", raising=False)
    else:
        monkeypatch.setenv("PRIVBENCH_ENSEMBLE", setting)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert ensembles_wanted(cpu, (1, 8, 8)) is small_on_cpu
    assert ensembles_wanted(cpu, (1, 28, 28)) is large_on_cpu
    assert ensembles_wanted(cpu, (3, 32, 32)) is large_on_cpu
    assert ensembles_wanted(cuda, (1, 28, 28)) is on_cuda


def test_privbench_ensemble_refuses_what_it_does_not_understand(monkeypatch):
    monkeypatch.setenv("PRIVBENCH_ENSEMBLE", "yes")
    with pytest.raises(OptionError, match="PRIVBENCH_ENSEMBLE=yes is not understood; use auto"):
        ensembles_wanted(torch.device("cpu"))
