"""privbench.helpers, each against an exact or independent computation."""

from __future__ import annotations

import ast
import contextlib
import pickle
from pathlib import Path
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn
from torch.nn import functional as F

import privbench.helpers as helpers
from privbench import (
    AccessDeniedError,
    LoadedDataset,
    Model,
    ModelView,
    TensorData,
    TrainingRecipe,
)
from privbench.engine.training import StandardTrainer
from privbench.helpers import (
    GaussianFit,
    TimmStyleNet,
    accuracy,
    autocast,
    channel_stats,
    count_classes,
    fill_missing_means,
    loaded_dataset,
    mean_shift,
    mirror_averaged_logits,
    mlp_features,
    model_outputs,
    normal_logpdf,
    predictions,
    seeded_generator,
    shuffled_batches,
    train_epochs,
)
from privbench.plugins.interfaces import Access
from privbench.testing import check_dataset, check_model

CPU = torch.device("cpu")
_MODULES = {"datasets", "evaluation", "gaussian", "idx", "models", "queries", "training"}


def test_the_helpers_import_the_core_directly_not_the_top_level_package():
    """privbench/__init__ may one day re-export helpers; importing it from them would cycle."""
    for path in Path(helpers.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "privbench", f"{path.name} imports from privbench"
    assert sorted(helpers.__all__) == sorted(
        name for name in vars(helpers) if not name.startswith("_") and name not in _MODULES
    )


# -- Gaussian fits -------------------------------------------------------------------------------


@pytest.fixture
def shadow_signals() -> tuple[np.ndarray, np.ndarray]:
    """6 shadows, 5 samples, 2 query columns; sample 3 has no IN shadow, sample 4 a single one."""
    rng = np.random.default_rng(0)
    signals = rng.normal(size=(6, 5, 2)) * [1.0, 3.0] + np.arange(5)[None, :, None]
    keep = rng.random((6, 5)) < 0.5
    keep[:, 3] = False
    keep[:, 4] = [True, False, False, False, False, False]
    keep[:3, :3], keep[3:, :3] = True, False  # samples 0-2: three IN and three OUT shadows
    return signals, keep


@pytest.mark.parametrize("ddof", [0, 1])
def test_gaussian_fit_matches_numpy_per_sample(shadow_signals, ddof):
    signals, keep = shadow_signals
    fit = GaussianFit.of(signals, keep, ddof=ddof)
    pooled_squares, pooled_dof = 0.0, 0
    for i in range(5):
        values = signals[keep[:, i], i]
        assert fit.count[i] == len(values)
        if len(values):
            np.testing.assert_allclose(fit.mean[i], values.mean(0), rtol=1e-12)
        else:
            assert np.isnan(fit.mean[i]).all()
        if len(values) >= 2:
            np.testing.assert_allclose(fit.var[i], values.var(0, ddof=ddof), rtol=1e-12)
            pooled_squares = pooled_squares + ((values - values.mean(0)) ** 2).sum(0)
            pooled_dof += len(values) - ddof
        else:
            assert np.isnan(fit.var[i]).all()  # whatever ddof: one value has no spread
    np.testing.assert_allclose(fit.pooled_var, pooled_squares / pooled_dof, rtol=1e-12)


def test_without_two_shadows_anywhere_the_pool_is_the_spread_of_all_values():
    signals = np.array([[[1.0], [5.0]], [[2.0], [9.0]]])  # 2 shadows x 2 samples x 1 column
    keep = np.array([[True, False], [False, True]])  # one IN shadow per sample
    assert GaussianFit.of(signals, keep).pooled_var == pytest.approx(np.var([1.0, 9.0]))
    lone = np.array([[True, False], [False, False]])
    assert GaussianFit.of(signals, lone).pooled_var.tolist() == [1.0]  # one value: no spread


def test_variance_and_std_fall_back_to_the_pooled_variance(shadow_signals):
    signals, keep = shadow_signals
    fit = GaussianFit.of(signals, keep, ddof=1)
    own = fit.variance(global_variance=False)
    np.testing.assert_array_equal(own[:3], fit.var[:3])
    np.testing.assert_array_equal(own[3:], np.broadcast_to(fit.pooled_var, (2, 2)))
    np.testing.assert_array_equal(fit.variance(True), np.broadcast_to(fit.pooled_var, (5, 2)))
    np.testing.assert_array_equal(fit.std(False), np.sqrt(own))
    assert (fit.std(False, floor=100.0) == 100.0).all()


def test_a_missing_side_borrows_its_other_side_plus_the_average_shift(shadow_signals):
    signals, keep = shadow_signals
    fit_in, fit_out = GaussianFit.of(signals, keep), GaussianFit.of(signals, ~keep)
    both = [0, 1, 2, 4]  # sample 3 has no IN shadow
    shift = np.mean(
        [signals[keep[:, i], i].mean(0) - signals[~keep[:, i], i].mean(0) for i in both], 0
    )
    np.testing.assert_allclose(mean_shift(fit_in, fit_out), shift, rtol=1e-12)
    mean_in, mean_out = fill_missing_means(fit_in, fit_out)
    np.testing.assert_allclose(mean_in[3], signals[:, 3].mean(0) + shift, rtol=1e-12)
    np.testing.assert_array_equal(mean_in[both], fit_in.mean[both])
    np.testing.assert_array_equal(mean_out, fit_out.mean)


def test_without_a_sample_on_both_sides_the_shift_is_the_difference_of_side_means():
    signals = np.array([[[1.0], [10.0]], [[3.0], [20.0]]])
    keep = np.array([[True, False], [True, False]])  # sample 0 always IN, sample 1 always OUT
    fit_in, fit_out = GaussianFit.of(signals, keep), GaussianFit.of(signals, ~keep)
    assert mean_shift(fit_in, fit_out).tolist() == [2.0 - 15.0]
    mean_in, mean_out = fill_missing_means(fit_in, fit_out)
    assert mean_in[:, 0].tolist() == [2.0, 15.0 - 13.0]
    assert mean_out[:, 0].tolist() == [2.0 + 13.0, 15.0]


def test_normal_logpdf_is_scipys():
    rng = np.random.default_rng(1)
    x, mean, std = rng.normal(size=50), rng.normal(size=50), rng.uniform(0.01, 10, size=50)
    np.testing.assert_allclose(normal_logpdf(x, mean, std), norm.logpdf(x, mean, std), rtol=1e-12)


# -- population logits ----------------------------------------------------------------------------


def _view(access: Access = Access.LOGITS) -> ModelView:
    cache = {"none": torch.tensor([[1.0, 2.0]]), "hflip": torch.tensor([[3.0, 0.5]])}
    model = Model(nn.Identity(), [0.0], [1.0])
    return ModelView(model, access, population_logits=lambda augmentation: cache[augmentation])


def test_mirror_averaged_logits():
    assert mirror_averaged_logits(_view(), hflip=False).tolist() == [[1.0, 2.0]]
    averaged = mirror_averaged_logits(_view(), hflip=True, dtype=torch.float64)
    assert averaged.dtype == torch.float64 and averaged.tolist() == [[2.0, 1.25]]
    assert mirror_averaged_logits(_view(), hflip=True).dtype == torch.float32
    with pytest.raises(AccessDeniedError):
        mirror_averaged_logits(_view(Access.LABELS), hflip=False)


# -- batched evaluation ---------------------------------------------------------------------------


class _Lookup(nn.Module):
    """Logits one-hot at ``x[:, 0, 0, 0]``: predictions known in advance."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x[:, 0, 0, 0].long(), 4).float() * self.scale


def test_predictions_and_accuracy_count_by_hand():
    classes = torch.tensor([0, 3, 1, 1, 2, 0, 3])
    x = classes.float().view(-1, 1, 1, 1)
    y = torch.tensor([0, 3, 2, 1, 2, 1, 3])  # 5 of 7 right
    model = _Lookup().train()
    assert torch.equal(predictions(model, x, batch_size=3), classes)
    assert not model.training
    assert accuracy(model, x, y, batch_size=2) == 5 / 7
    assert accuracy(model, x[:0], y[:0]) == 0.0
    assert count_classes(model, x) == 4
    doubled = model_outputs(model, x, lambda logits: 2 * logits, batch_size=4)
    assert torch.equal(doubled, 2 * F.one_hot(classes, 4).float())
    assert model_outputs(model, x[:0]).numel() == 0


# -- the training loop ----------------------------------------------------------------------------


def _net(seed: int = 0) -> Model:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))
    return Model(net, [0.5], [0.25])


def _trainer(**recipe: object) -> StandardTrainer:
    options = {"epochs": 3, "batch_size": 5, "augment": "flip+crop", **recipe}
    return StandardTrainer(TrainingRecipe(**options), seed=7, device=CPU)  # type: ignore[arg-type]


def _same(a: nn.Module, b: nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


DATA = TensorData(torch.rand(23, 1, 4, 4), torch.arange(23) % 3)


def _by_hand(model: Model, trainer: StandardTrainer, data: TensorData) -> float:
    """The loop written out, in the order of its random draws."""
    torch.manual_seed(trainer.seed)
    generator = torch.Generator().manual_seed(trainer.seed)
    model.train()
    optimizer = trainer.make_optimizer(model)
    scheduler = trainer.make_scheduler(optimizer)
    for _ in range(trainer.recipe.epochs):
        total, seen = 0.0, 0
        for index in torch.randperm(len(data), generator=generator).split(5):
            loss = F.cross_entropy(model(trainer.augment(data.x[index], generator)), data.y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(index), seen + len(index)
        scheduler.step()
    model.eval()
    return total / seen


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_train_epochs_reproduces_a_hand_written_loop_bit_for_bit(optimizer):
    trainer = _trainer(optimizer=optimizer)
    expected_model, model = _net(), _net()
    expected = _by_hand(expected_model, trainer, DATA)
    epochs: list[tuple[int, int]] = []

    def loss(xb: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(xb), DATA.y[index])

    final = train_epochs(model, trainer, DATA.x, loss, on_epoch=lambda *e: epochs.append(e))
    assert final == expected
    assert _same(model, expected_model) and not _same(model, _net())  # trained, identically
    assert epochs == [(1, 3), (2, 3), (3, 3)] and not model.training


def test_train_epochs_trains_as_the_engines_standard_trainer():
    trainer = _trainer()
    engine, model = _net(), _net()
    trainer.fit(engine, DATA)
    train_epochs(model, trainer, DATA.x, lambda xb, i: trainer.loss(model(xb), DATA.y[i]))
    assert _same(model, engine) and not _same(model, _net())


def test_epoch_inputs_are_drawn_before_each_epochs_batches_and_empty_batches_do_not_count():
    trainer = _trainer(epochs=2, augment="none")
    drawn: list[torch.Tensor] = []

    def inputs(generator: torch.Generator) -> torch.Tensor:
        drawn.append(torch.randperm(4, generator=generator))
        return DATA.x[:4]

    def batches(n: int, generator: torch.Generator) -> list[torch.Tensor]:
        return [torch.arange(n), torch.arange(0)]

    model = _net()
    final = train_epochs(
        model,
        trainer,
        inputs,
        lambda xb, index: F.cross_entropy(model(xb), DATA.y[index]),  # NaN on the empty batch
        batches=batches,
        generator=torch.Generator().manual_seed(3),
    )
    expected = torch.Generator().manual_seed(3)
    assert [d.tolist() for d in drawn] == [
        torch.randperm(4, generator=expected).tolist() for _ in range(2)
    ]
    assert np.isfinite(final)


def test_autocast_is_bfloat16_on_cuda_only():
    assert isinstance(autocast(CPU), contextlib.nullcontext)
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else contextlib.nullcontext():
        context = autocast(torch.device("cuda"))
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16


def test_seeded_generator_seeds_the_global_rng_too():
    generator = seeded_generator(11)
    first, global_first = torch.rand(3, generator=generator), torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(global_first, torch.rand(3))
    assert torch.equal(first, torch.rand(3, generator=torch.Generator().manual_seed(11)))


def test_shuffled_batches_cover_every_index_once():
    batches = shuffled_batches(11, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4, 3]
    assert sorted(torch.cat(batches).tolist()) == list(range(11))


# -- the timm-style base class --------------------------------------------------------------------


class _Conv(TimmStyleNet):
    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        features = nn.Sequential(nn.Conv2d(input_shape[0], 6, 3, padding=1), nn.ReLU())
        pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        super().__init__(features, 6, num_classes, pool)


@attrs.frozen
class _ConvFactory:
    name: ClassVar[str] = "tiny-conv"
    description: ClassVar[str] = "a TimmStyleNet with a pool"

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return _Conv(input_shape, num_classes)


@attrs.frozen
class _MLPFactory:
    name: ClassVar[str] = "tiny-mlp"
    description: ClassVar[str] = "a TimmStyleNet without a pool"

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        size = int(np.prod(input_shape))
        return TimmStyleNet(mlp_features(size, 7, 2), 7, num_classes)


@pytest.mark.parametrize("factory", [_ConvFactory, _MLPFactory])
def test_the_base_class_keeps_timms_api_contract(factory):
    check_model(factory)
    check_model(factory, input_shape=(1, 8, 8))


def test_the_head_is_the_classifier_and_resets():
    net = _Conv((3, 8, 8), 5)
    x = torch.rand(2, 3, 8, 8)
    pre_logits = net.forward_head(net.forward_features(x), pre_logits=True)
    assert pre_logits.shape == (2, 6) and net.get_classifier() is net.head
    assert torch.equal(net(x), net.get_classifier()(pre_logits))
    net.reset_classifier(9)
    assert net(x).shape == (2, 9) and net.num_classes == 9
    custom = TimmStyleNet(nn.Flatten(), 12, 4, make_head=lambda f, c: nn.Linear(f, c, bias=False))
    custom.reset_classifier(2)
    assert custom.head.bias is None and custom.head.out_features == 2
    pickle.loads(pickle.dumps(net))


def test_mlp_features_flatten_then_linear_relu_pairs():
    layers = mlp_features(12, 5, 2)
    assert [type(m) for m in layers] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert layers(torch.rand(3, 3, 2, 2)).shape == (3, 5)
    assert len(mlp_features(12, 5, 0)) == 1


# -- datasets -------------------------------------------------------------------------------------


def test_channel_stats_per_channel_over_images_and_pixels():
    x = torch.rand(10, 3, 4, 4)
    x[:, 2] = 0.5  # a constant channel
    mean, std = channel_stats(x)
    for c in range(2):
        assert mean[c] == pytest.approx(float(x[:, c].mean()), rel=1e-6)
        assert std[c] == pytest.approx(float(x[:, c].flatten().std()), rel=1e-5)
    assert mean[2] == pytest.approx(0.5) and std[2] == pytest.approx(1e-6)  # floored, float32


@attrs.frozen
class _Tiny:
    name: ClassVar[str] = "tiny"
    description: ClassVar[str] = "built with loaded_dataset"

    def load(self, data_root: str | None) -> LoadedDataset:
        generator = torch.Generator().manual_seed(0)
        train = TensorData(torch.rand(8, 2, 4, 4, generator=generator), torch.arange(8) % 2)
        test = TensorData(torch.rand(4, 2, 4, 4, generator=generator), torch.arange(4) % 2)
        return loaded_dataset(train, test, 2, hflip_preserves_label=False)


def test_loaded_dataset_normalises_by_the_train_split():
    data = check_dataset(_Tiny)
    assert (data.mean, data.std) == channel_stats(data.train.x)
    assert data.num_classes == 2 and not data.hflip_preserves_label
