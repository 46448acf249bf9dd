"""The dataset-distillation (KIP) defense: the closed-form ReLU NTK against finite wide networks,
that KIP learns a support set KRR generalises from, the min-distance privacy term, the contract,
one-line errors, and that the released model leaks less membership than the undefended one."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import loss_auc, small_cnn
from privbench_plugins.defenses.kip import (
    KIPDefense,
    kip_distill,
    krr_evaluate,
    nearest_private_distance,
    relu_ntk,
)

from privbench import (
    LoadedDataset,
    Model,
    OptionError,
    PrivbenchError,
    TensorData,
    TrainingRecipe,
)
from privbench.engine.audit import run_audit
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import Workspace
from privbench.engine.training import StandardTrainer
from privbench.helpers import accuracy
from privbench.plugins import Registry
from privbench.testing import check_defense

CPU = torch.device("cpu")
# Overfit on purpose (as tests/test_distillation.py): no weight decay, small batches.
RECIPE = TrainingRecipe(epochs=30, batch_size=16, lr=0.05, weight_decay=0.0)
MEMBERS = 200  # at least 10 per class in the draws below (seeds 0, 1): per_class=10 fits
SEEDS = (0, 1)


pytestmark = pytest.mark.usefixtures("one_thread")


# -- the kernel ------------------------------------------------------------------------------


def _finite_kernels(
    x: torch.Tensor, depth: int, width: int, bias_var: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ReLU MLP in the NTK parameterisation (weight_var 2): the kernel of its last
    hidden layer (the readout's NNGP) and its empirical NTK, the Gram matrix of the parameter
    gradients of its scalar output, by autograd."""
    generator = torch.Generator().manual_seed(seed)
    dims = [x.shape[1]] + [width] * depth + [1]
    params = []
    for fan_in, fan_out in itertools.pairwise(dims):
        params.append(torch.randn(fan_out, fan_in, generator=generator).requires_grad_(True))
        params.append(torch.randn(fan_out, generator=generator).requires_grad_(True))

    def forward(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = v
        for layer, fan_in in enumerate(dims[:-1]):
            z = math.sqrt(2.0 / fan_in) * h @ params[2 * layer].T
            z = z + math.sqrt(bias_var) * params[2 * layer + 1]
            if layer < depth:
                h = torch.relu(z)
        return z.squeeze(-1), h

    rows = []
    for i in range(len(x)):
        out, _ = forward(x[i : i + 1])
        grads = torch.autograd.grad(out.sum(), params)
        rows.append(torch.cat([g.flatten() for g in grads]))
    jacobian = torch.stack(rows)
    with torch.no_grad():
        _, hidden = forward(x)
    nngp = 2.0 * hidden.double() @ hidden.double().T / width + bias_var
    return nngp, (jacobian @ jacobian.T).double()


@pytest.mark.parametrize(
    ("depth", "width", "bias_var", "seeds"),
    [(1, 8192, 0.0, 2), (1, 8192, 0.1, 2), (2, 2048, 0.1, 16)],
)
def test_relu_ntk_matches_wide_finite_networks(
    depth: int, width: int, bias_var: float, seeds: int
) -> None:
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(1))
    x[1] = 2 * x[0]  # same direction: angle 0
    x[2] = -x[0]  # opposite: angle pi
    nngp, ntk = relu_ntk(x.double(), x.double(), depth, bias_var=bias_var)
    finite = [_finite_kernels(x, depth, width, bias_var, seed) for seed in range(seeds)]
    empirical_nngp = sum(k[0] for k in finite) / seeds
    empirical_ntk = sum(k[1] for k in finite) / seeds
    ntk_error = float((empirical_ntk - ntk).norm() / ntk.norm())
    nngp_error = float((empirical_nngp - nngp).norm() / nngp.norm())
    print(f"depth {depth} width {width}: NTK error {ntk_error:.4f}, NNGP error {nngp_error:.4f}")
    # measured: 0.010 / 0.010 and 0.008 / 0.014 (depth 1), 0.005 / 0.006 (depth 2, 16 nets)
    assert ntk_error < 0.05 and nngp_error < 0.05


def test_relu_ntk_closed_forms_symmetry_and_psd() -> None:
    x = torch.randn(40, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for depth in (0, 1, 3):
        nngp, ntk = relu_ntk(x, x, depth)
        for k in (nngp, ntk):
            assert torch.allclose(k, k.T, atol=1e-12)
            assert float(torch.linalg.eigvalsh(k).min()) > -1e-9 * float(k.diagonal().max())
        # weight_var 2 preserves the diagonal: Sigma(x, x) = |x|^2 / d at every depth, and the
        # NTK adds one such term per layer.
        sq = x.flatten(1).square().sum(1) / 64
        assert torch.allclose(nngp.diagonal(), 2 * sq, rtol=1e-5)
        assert torch.allclose(ntk.diagonal(), 2 * sq * (depth + 1), rtol=1e-5)
    # Depth 0 is the linear kernel; one hidden layer is Cho and Saul's arc-cosine kernel.
    a, b = x[:2].flatten(1), x[2:5].flatten(1)
    nngp, ntk = relu_ntk(a, b, 0)
    assert torch.allclose(nngp, 2 * a @ b.T / 64) and torch.allclose(ntk, nngp)
    nngp, ntk = relu_ntk(a, b, 1)
    norms = 2 * a.norm(dim=1)[:, None] * b.norm(dim=1)[None, :] / 64
    theta = torch.arccos(2 * a @ b.T / 64 / norms)
    sigma = 2 * norms * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)
    assert torch.allclose(nngp, sigma, rtol=1e-6)
    assert torch.allclose(ntk, 2 * a @ b.T / 64 * (math.pi - theta) / math.pi + sigma, rtol=1e-6)


def test_relu_ntk_gradients_are_finite_at_the_diagonal() -> None:
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.cat([x, x[:1], torch.zeros(1, 1, 4, 4, dtype=torch.float64)])  # a copy, a zero
    x.requires_grad_(True)
    for depth in (1, 3):
        for bias_var in (0.0, 0.1):
            for k in relu_ntk(x, x, depth, bias_var=bias_var):
                (grad,) = torch.autograd.grad(k.square().sum(), x, retain_graph=True)
                assert torch.isfinite(grad).all()
        # The same points as two tensors (the cosine is exactly 1 or rounds past it).
        twin = x.detach().clone().requires_grad_(True)
        for k in relu_ntk(x, twin, depth):
            grads = torch.autograd.grad(k.sum(), (x, twin), retain_graph=True)
            assert all(torch.isfinite(g).all() for g in grads)
    scaled = torch.rand(4, 16, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    _, ntk = relu_ntk(scaled, 3 * scaled, 2)  # float32, angle 0 off the diagonal
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(ntk.sum(), scaled))
    # Exact gradients in both arguments away from the clamp.
    a = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, v: relu_ntk(u, v, 2, bias_var=0.1), (a, b))


# -- KIP ---------------------------------------------------------------------------------------


def test_kip_learns_a_support_set_that_krr_generalises_from(digits: LoadedDataset) -> None:
    for init, steps in (("real", 100), ("noise", 200)):
        result = kip_distill(digits.train, 10, per_class=10, steps=steps, init=init, seed=0)
        assert result.x.shape == (100, 1, 8, 8)
        assert float(result.x.min()) >= 0.0 and float(result.x.max()) <= 1.0
        assert torch.equal(result.hard_labels, torch.arange(10).repeat_interleave(10))
        before = krr_evaluate(
            result.space, result.initial_x, result.initial_labels, digits.test, 10
        )
        after = krr_evaluate(result.space, result.x, result.labels, digits.test, 10)
        print(f"init={init}: held-out KIP loss / KRR accuracy {before} -> {after}")
        # measured: real 0.219 / 0.941 -> 0.110 / 0.981; noise 1.009 / 0.102 -> 0.138 / 0.978
        assert after[0] < 0.7 * before[0]
        assert after[1] > 0.9  # chance: 0.1
        assert np.mean(result.losses[-10:]) < 0.7 * np.mean(result.losses[:10])
    learned = kip_distill(digits.train, 10, per_class=10, steps=50, learn_labels=True, seed=0)
    assert not torch.equal(learned.labels, learned.initial_labels)


def test_rkip_distils_by_the_infinite_width_reconstruction_loss(digits: LoadedDataset) -> None:
    """RKIP (Loo et al. Sec. 6): one image per class whose tangent features explain the
    kernel-regime parameter change of training on 300 digits."""
    private = digits.train.subset(np.arange(300))
    result = kip_distill(private, 10, per_class=1, steps=300, objective="rkip", seed=0)
    assert result.x.shape == (10, 1, 8, 8)
    assert float(result.x.min()) >= 0.0 and float(result.x.max()) <= 1.0
    before = krr_evaluate(result.space, result.initial_x, result.initial_labels, digits.test, 10)
    after = krr_evaluate(result.space, result.x, result.labels, digits.test, 10)
    # Measured: relative loss 0.95 -> 0.84; held-out KRR accuracy 0.73 -> 0.89 (KIP: 0.95).
    assert 0 < result.losses[-1] < result.losses[0] <= 1
    assert after[1] > before[1] + 0.08, (before, after)
    assert torch.equal(result.hard_labels, torch.arange(10))


def test_min_distance_keeps_distilled_images_away_from_private_ones(digits: LoadedDataset) -> None:
    private = digits.train.subset(np.arange(400))
    distances = {}
    for min_distance in (0.0, 1.5):
        result = kip_distill(private, 10, steps=150, min_distance=min_distance, seed=0)
        nearest, _ = nearest_private_distance(result.x, private.x)
        distances[min_distance] = float(nearest.min())
        accuracy = krr_evaluate(result.space, result.x, result.labels, digits.test, 10)[1]
        nearest_min = distances[min_distance]
        print(f"min_distance={min_distance}: nearest {nearest_min:.3f}, KRR {accuracy:.3f}")
        assert accuracy > 0.85  # the privacy term costs little utility here
    # measured: 0.583 without, 1.551 with min_distance=1.5 (KRR accuracy 0.974 -> 0.965)
    assert distances[1.5] > distances[0.0] + 0.5
    assert distances[1.5] > 1.5 * 0.95


def test_kip_fits_its_private_set_better_than_held_out_data(digits: LoadedDataset) -> None:
    """Why the released model still leaks some membership: the support set is fitted to the
    private images, not to their distribution."""
    order = np.random.default_rng(0).permutation(len(digits.train))
    members = digits.train.subset(order[:MEMBERS])
    non_members = digits.train.subset(order[MEMBERS : 2 * MEMBERS])
    result = kip_distill(members, 10, seed=0)
    member_loss = krr_evaluate(result.space, result.x, result.labels, members, 10)[0]
    held_out_loss = krr_evaluate(result.space, result.x, result.labels, non_members, 10)[0]
    print(f"KIP loss on members {member_loss:.4f}, on non-members {held_out_loss:.4f}")
    # measured: 0.0001 against 0.184
    assert member_loss < 0.5 * held_out_loss


def test_nearest_private_distance_is_exact_across_chunks() -> None:
    g = torch.Generator().manual_seed(0)
    x, private = torch.rand(7, 1, 4, 4, generator=g), torch.rand(50, 1, 4, 4, generator=g)
    d, i = nearest_private_distance(x, private, k=3, chunk=8)
    full = torch.cdist(x.flatten(1).double(), private.flatten(1).double())
    expected, index = full.topk(3, dim=1, largest=False)
    assert torch.allclose(d, expected) and torch.equal(i, index)


# -- the defense ------------------------------------------------------------------------------


def test_contract() -> None:
    # check_defense's data: 16 images of 3 classes, the smallest with 5.
    check_defense(KIPDefense, per_class=5)
    check_defense(KIPDefense, init="noise")  # the default 10 per class
    check_defense(KIPDefense, per_class=2, depth=2, learn_labels=True, min_distance=0.5)


def test_fit_metadata_is_json_and_seeded(registry: Registry) -> None:
    data = TensorData(
        torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(30) % 3
    )

    def fit() -> tuple[Model, dict[str, Any]]:
        torch.manual_seed(0)
        net = registry.create("model", "mlp", {"width": 16}).create((1, 8, 8), 3)
        model = Model(net, [0.5], [0.5])
        trainer = StandardTrainer(TrainingRecipe(epochs=2, batch_size=8), seed=3, device=CPU)
        return model, KIPDefense(per_class=4, steps=20, min_distance=0.5).fit(model, data, trainer)

    model, meta = fit()
    json.dumps(meta)
    assert meta["distilled_count"] == 12 and meta["kip_steps"] == 20
    assert meta["initial_nearest_private_distance_min"] == 0.0  # init=real: private copies
    assert meta["nearest_private_distance_min"] > 0.0
    assert meta["nearest_private_distance_min"] <= meta["nearest_private_distance_mean"]
    assert 0.0 <= meta["krr_private_accuracy"] <= 1.0 and "final_train_loss" in meta
    assert all(isinstance(v, (int, float, str)) for v in meta.values())
    again, _ = fit()
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_one_line_errors(registry: Registry) -> None:
    with pytest.raises(PrivbenchError, match=r"per_class=10 but class \d has only 5") as info:
        check_defense(KIPDefense)  # default init=real on check_defense's 5-image classes
    assert "\n" not in str(info.value) and "init=noise" in str(info.value)
    trainer = StandardTrainer(TrainingRecipe(epochs=1), seed=0, device=CPU)
    net = registry.create("model", "mlp").create((1, 8, 8), 3)
    labels_beyond = TensorData(torch.rand(20, 1, 8, 8), torch.arange(20) % 5)
    with pytest.raises(PrivbenchError, match="model has 3 outputs"):
        KIPDefense(per_class=2).fit(Model(net, [0.5], [0.5]), labels_beyond, trainer)


@pytest.mark.parametrize(
    "options",
    [
        {"init": "zeros"},
        {"per_class": 0},
        {"lr": 0},
        {"steps": -1},
        {"depth": 0},
        {"reg": 0},
        {"min_distance": -1.0},
        {"min_distance": 1.0, "distance_weight": 0.0},
        {"learn_label": True},
    ],
)
def test_bad_options_raise(registry: Registry, options: dict[str, Any]) -> None:
    with pytest.raises(OptionError):
        registry.create("defense", "dataset-distillation", options)


def test_the_released_model_leaks_less_membership(
    registry: Registry, digits: LoadedDataset
) -> None:
    undefended, defended = [], []
    for seed in SEEDS:
        order = np.random.default_rng(seed).permutation(len(digits.train))
        members = digits.train.subset(order[:MEMBERS])
        non_members = digits.train.subset(order[MEMBERS : 2 * MEMBERS])
        trainer = StandardTrainer(RECIPE, seed=seed, device=CPU)
        plain = small_cnn(registry, digits, seed)
        trainer.fit(plain, members)
        undefended.append(
            (loss_auc(plain, members, non_members), accuracy(plain, digits.test.x, digits.test.y))
        )
        student = small_cnn(registry, digits, seed)
        meta = KIPDefense().fit(student, members, trainer)
        defended.append(
            (
                loss_auc(student, members, non_members),
                accuracy(student, digits.test.x, digits.test.y),
            )
        )
        assert meta["kip_final_loss"] < meta["kip_initial_loss"]
    print("loss-attack AUC, test accuracy: undefended", undefended, "KIP", defended)
    # measured (seeds 0, 1): AUC 0.598 / 0.602 -> 0.543 / 0.551; accuracy 0.95 -> 0.86 / 0.84
    auc_plain, auc_kip = np.mean([u[0] for u in undefended]), np.mean([d[0] for d in defended])
    assert auc_kip < auc_plain - 0.02
    assert abs(auc_kip - 0.5) < 0.08
    assert min(d[1] for d in defended) > 0.6  # chance: 0.1


def test_an_audit_runs_it_end_to_end(tmp_path: Path, registry: Registry) -> None:
    spec = AuditSpec(
        defense=PluginChoice(
            "dataset-distillation", {"per_class": 5, "steps": 100, "min_distance": 1.0}
        ),
        model=PluginChoice("mlp"),
        recipe=RECIPE,
        shadows=1,
        population=300,
        attacks=(PluginChoice("loss"),),
        device="cpu",
    )
    record = run_audit(spec, Workspace(tmp_path), registry=registry).to_record()
    meta = record["training"]["target_meta"]
    assert meta["distilled_count"] == 50
    assert meta["nearest_private_distance_min"] > 0.9
    auc = record["attacks"][0]["metrics"]["auc"]
    print("audit: test accuracy", record["utility"]["test_accuracy"], "loss-attack AUC", auc)
    # measured: test accuracy 0.891, AUC 0.553
    assert record["utility"]["test_accuracy"] > 0.6
    assert 0.4 < auc < 0.6
