"""Book-keeping per-sample clipping (``dp_clipping``) against exact per-sample gradients and
against opacus' reference mode: the clipped sums, the norms, whole DP-SGD trainings and their
epsilon; the models it refuses, and why."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from privbench_plugins.defenses import dp_clipping
from privbench_plugins.defenses.dp_sgd import DPSGD
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from privbench import Model, PrivbenchError, TrainingRecipe
from privbench.engine.training import StandardTrainer


def _exact_clipped_sum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bound: float):
    """Every sample's own gradient by ``torch.func`` (vmap of grad), clipped as opacus clips
    (factor ``min(1, C / (norm + 1e-6))``) and summed: the definition, computed directly."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, (p, buffers), (xi[None],)), yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in per_sample.values()], 1).norm(dim=1)
    clip = (bound / (norms + 1e-6)).clamp(max=1.0)
    return {k: torch.einsum("b,b...->...", clip, g) for k, g in per_sample.items()}, norms


def _book_kept(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bound: float):
    clipping = dp_clipping.BookKeeping(model, bound)
    with clipping.active():
        F.cross_entropy(model(x), y).backward()
        sums, norms = clipping.clipped_sum()
    names = {p: k for k, p in model.named_parameters()}
    return {names[p]: v for p, v in sums.items()}, norms


class _Residual(nn.Module):
    """timm's ResNet block in miniature: in-place ReLUs and ``x += shortcut``, which opacus'
    hooks mode cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.norm1 = nn.GroupNorm(2, 8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(2, 8)
        self.act = nn.ReLU(inplace=True)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.stem(x)))
        shortcut = x
        x = self.norm2(self.conv(x))
        x += shortcut
        x = self.act(x)
        return self.head(x.mean((2, 3)))


class _Tokens(nn.Module):
    """Linear and LayerNorm over a sequence (a ViT's layers): the per-sample gradient sums
    over positions."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2).reshape(x.shape[0], -1, 4)  # 16 tokens of 4
        return self.head(self.norm(self.embed(tokens)).mean(1))


def _registry_net(registry, name, options, shape):
    return registry.create("model", name, options).create(shape, 10)


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        pytest.param(lambda r, s: _registry_net(r, "small-cnn", {}, s), (1, 8, 8), id="small-cnn"),
        pytest.param(lambda r, s: _registry_net(r, "conv-fc", {}, s), (1, 8, 8), id="conv-fc"),
        pytest.param(
            lambda r, s: _registry_net(r, "conv-fc", {"norm": "group"}, s),
            (1, 8, 8),
            id="conv-fc-groupnorm",
        ),
        pytest.param(lambda r, s: _registry_net(r, "tanh-cnn", {}, s), (1, 16, 16), id="tanh-cnn"),
        pytest.param(lambda r, s: _Residual(), (1, 8, 8), id="in-place-residual"),
        pytest.param(lambda r, s: _Tokens(), (1, 8, 8), id="linear-layernorm-sequence"),
    ],
)
def test_clipped_sums_and_norms_match_exact_per_sample_gradients(registry, build, shape):
    torch.manual_seed(0)
    net = build(registry, shape).train()
    x, y = torch.randn(12, *shape), torch.randint(0, 10, (12,))
    _, exact_norms = _exact_clipped_sum(net, x, y, 1.0)
    bound = float(exact_norms.median())  # half the samples clipped, half not
    exact, exact_norms = _exact_clipped_sum(net, x, y, bound)
    sums, norms = _book_kept(net, x, y, bound)
    torch.testing.assert_close(norms, exact_norms, rtol=1e-4, atol=1e-6)
    assert sums.keys() == exact.keys()
    for name, value in exact.items():
        torch.testing.assert_close(sums[name], value, rtol=1e-4, atol=1e-6, msg=name)
    assert all(p.requires_grad for p in net.parameters())  # restored after the context


def test_both_norm_computations_agree_with_the_instantiated_gradient():
    """The ghost norm (cheap for few positions and wide layers) and the instantiated per-sample
    gradient (cheap for many positions): each picked where it costs less, both exact."""
    torch.manual_seed(0)
    for k, o, t in [(64, 64, 4), (9, 16, 64)]:  # ghost is cheaper for the first, not the second
        a, g = torch.randn(5, k, t), torch.randn(5, o, t)
        assert (t * t * (k + o) < o * k * t) == (k == 64)
        direct = torch.einsum("bot,bkt->bok", g, a).square().sum((1, 2))
        torch.testing.assert_close(dp_clipping._weight_norms(a, g), direct, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # opacus' hooks, expected
def test_matches_opacus_reference_mode_on_one_batch(registry):
    """The clipped sum of one batch equals what opacus' DPOptimizer (hooks mode, the
    reference) accumulates, noise off."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    torch.manual_seed(0)
    net = _registry_net(registry, "conv-fc", {"norm": "group"}, (1, 12, 12)).train()
    x, y = torch.randn(16, 1, 12, 12), torch.randint(0, 10, (16,))
    ours, _ = _book_kept(net, x, y, 0.5)
    reference = GradSampleModule(net)
    optimizer = DPOptimizer(
        torch.optim.SGD(reference.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=0.5,
        expected_batch_size=16,
        loss_reduction="mean",
    )
    F.cross_entropy(reference(x), y).backward()
    optimizer.pre_step()
    for name, p in net.named_parameters():
        torch.testing.assert_close(ours[name], p.summed_grad, rtol=1e-4, atol=1e-6, msg=name)
    reference.to_standard_module()


def _train(registry, digits, defense: DPSGD, **options):
    torch.manual_seed(0)
    net = registry.create("model", "small-cnn", options).create(
        digits.input_shape, digits.num_classes
    )
    model = defense.prepare_model(Model(net, digits.mean, digits.std))
    trainer = StandardTrainer(
        TrainingRecipe(epochs=2, batch_size=32), seed=0, device=torch.device("cpu")
    )
    meta = defense.fit(model, digits.train.subset(np.arange(192)), trainer)
    return model, meta


@pytest.mark.parametrize("budget", [{"noise_multiplier": 1.0}, {"epsilon": 3.0}])
def test_training_matches_opacus_hooks_mode_and_spends_the_same_epsilon(registry, digits, budget):
    """Same seed, same Poisson batches, same noise draws: book-keeping and opacus train the
    same model (to rounding) and report the same epsilon and noise multiplier."""
    ours, ours_meta = _train(
        registry, digits, DPSGD(grad_sample_mode="book-keeping", **budget), batchnorm=True
    )
    ref, ref_meta = _train(
        registry, digits, DPSGD(grad_sample_mode="hooks", **budget), batchnorm=True
    )
    assert (
        ours_meta["grad_sample_mode"] == "book-keeping" and ref_meta["grad_sample_mode"] == "hooks"
    )
    assert ours_meta["epsilon"] == pytest.approx(ref_meta["epsilon"], rel=1e-12)
    assert ours_meta["noise_multiplier"] == ref_meta["noise_multiplier"]
    state = ref.state_dict()
    for name, value in ours.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=1e-4, atol=1e-5, msg=name)
    other = _train(registry, digits, DPSGD(noise_multiplier=2.0), batchnorm=True)[0].state_dict()
    assert max((other[k] - v).abs().max() for k, v in state.items()) > 1e-3  # it can tell


def test_auto_picks_book_keeping_where_it_can_and_opacus_where_it_cannot(registry, digits):
    defense = DPSGD(noise_multiplier=1.0)
    net = registry.create("model", "small-cnn").create(digits.input_shape, digits.num_classes)
    assert defense.resolved_mode(Model(net, digits.mean, digits.std)) == "book-keeping"

    class WithEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Embedding(4, 8)
            self.head = nn.Linear(8, 10)

        def forward(self, x):
            return self.head(self.table(x.long().clamp(0, 3)).mean((1, 2, 3)))

    odd = WithEmbedding()
    reasons = dp_clipping.unsupported(odd)
    assert len(reasons) == 1 and "table (Embedding)" in reasons[0]
    assert defense.resolved_mode(odd) == "hooks"
    with pytest.raises(dp_clipping.UnsupportedModelError, match="Embedding"):
        dp_clipping.BookKeeping(odd, 1.0)


def test_refuses_an_input_changed_in_place_after_a_layer_read_it():
    class Sneaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Linear(64, 10)
            self.second = nn.Linear(64, 10)

        def forward(self, x):
            h = x.flatten(1) * 1.0
            out = self.first(h)
            h.mul_(2.0)  # the input `first` read, changed afterwards
            return out + self.second(h)

    net = Sneaky().train()
    clipping = dp_clipping.BookKeeping(net, 1.0)
    with clipping.active():
        F.cross_entropy(net(torch.randn(4, 1, 8, 8)), torch.zeros(4, dtype=torch.long)).backward()
        with pytest.raises(dp_clipping.UnsupportedModelError, match="modified in place"):
            clipping.clipped_sum()


def test_explicit_book_keeping_on_an_unsupported_model_is_a_one_line_error(registry, digits):
    defense = DPSGD(noise_multiplier=1.0, grad_sample_mode="book-keeping")
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    net[1].bias.requires_grad_(False)  # a layer half frozen: its norm would be wrong
    model = Model(net, digits.mean, digits.std)
    trainer = StandardTrainer(
        TrainingRecipe(epochs=1, batch_size=32), seed=0, device=torch.device("cpu")
    )
    with pytest.raises(PrivbenchError, match="frozen and trainable") as caught:
        defense.fit(model, digits.train.subset(np.arange(64)), trainer)
    assert "\n" not in str(caught.value) and "grad_sample_mode=hooks" in str(caught.value)


def test_an_empty_poisson_batch_gives_zero_sums():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).train()
    clipping = dp_clipping.BookKeeping(net, 1.0)
    with clipping.active():
        out = net(torch.randn(0, 1, 8, 8))
        (out.sum() * 0).backward()
        sums, norms = clipping.clipped_sum()
    assert norms.shape == (0,)
    assert all(torch.count_nonzero(v) == 0 for v in sums.values())
