"""The bn-synthesis defense: contract on a BatchNorm model, the one-line error without BatchNorm,
that synthesis matches the teacher's statistics, utility of the student on real digits, and the
SSIM/PSNR helpers behind its similarity metadata."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from privbench_plugins.defenses.bn_synthesis import (
    BNSynthesis,
    bn_statistics_loss,
    psnr,
    ssim,
    synthesize,
)

from privbench import Model, PrivbenchError, TensorData, TrainingRecipe
from privbench.engine.training import StandardTrainer
from privbench.helpers import accuracy
from privbench.testing import check_defense, check_plugin_class

CPU = torch.device("cpu")
MEMBERS = 300
RECIPE = TrainingRecipe(epochs=15, batch_size=32)
SEEDS = (0, 1)


def _model(registry, shape, classes, seed=0, name="small-cnn", **options) -> Model:
    torch.manual_seed(seed)
    net = registry.create("model", name, options).create(shape, classes)
    return Model(net, [0.5] * shape[0], [0.5] * shape[0])


def _fit(registry, digits, seed, **options):
    model = _model(registry, digits.input_shape, 10, seed, batchnorm=True, width=16)
    trainer = StandardTrainer(RECIPE, seed=seed, device=CPU)
    meta = BNSynthesis(**options).fit(model, digits.train.subset(np.arange(MEMBERS)), trainer)
    return model, meta


@pytest.fixture(scope="module")
def fitted(registry, digits):
    return {seed: _fit(registry, digits, seed) for seed in SEEDS}


def test_contract_on_a_batchnorm_model(registry):
    check_plugin_class(BNSynthesis)
    data = TensorData(torch.rand(16, 1, 8, 8), torch.arange(16) % 3)

    def fit() -> tuple[Model, dict]:
        defense = BNSynthesis(steps=5, batch_size=8)
        model = defense.prepare_model(_model(registry, (1, 8, 8), 3, batchnorm=True, width=4))
        trainer = StandardTrainer(TrainingRecipe(epochs=1, batch_size=8), seed=0, device=CPU)
        meta = defense.fit(model, data, trainer)
        return defense.release(model), meta

    released, meta = fit()
    json.dumps(meta)  # JSON metadata
    assert type(released) is Model and not released.training
    with torch.no_grad():
        assert released(data.x).shape == (16, 3)
    assert meta["synthetic_count"] == 18  # ceil(16 / 3) per class
    assert 0.0 <= meta["nearest_private_ssim_mean"] <= meta["nearest_private_ssim_max"] <= 1.0
    assert math.isfinite(meta["nearest_private_psnr_max"])
    again, _ = fit()
    for key, value in released.state_dict().items():  # seeded: the same weights twice
        assert torch.equal(value, again.state_dict()[key]), key


def test_without_batchnorm_one_line_error(registry):
    with pytest.raises(PrivbenchError, match="needs a model with BatchNorm") as info:
        check_defense(BNSynthesis)  # the kit's tiny model is a linear layer
    assert "\n" not in str(info.value)
    mlp = _model(registry, (1, 8, 8), 3, name="mlp")
    trainer = StandardTrainer(TrainingRecipe(epochs=1), seed=0, device=CPU)
    with pytest.raises(PrivbenchError, match="--model-opt batchnorm=true"):
        BNSynthesis().fit(mlp, TensorData(torch.rand(6, 1, 8, 8), torch.arange(6) % 3), trainer)
    with pytest.raises(PrivbenchError):
        BNSynthesis().prepare_model(_model(registry, (1, 8, 8), 3))  # small-cnn's default: no BN


def test_synthesis_matches_the_batchnorm_statistics(registry, digits):
    teacher = _model(registry, digits.input_shape, 10, batchnorm=True, width=16)
    StandardTrainer(TrainingRecipe(epochs=10), seed=0, device=CPU).fit(
        teacher, digits.train.subset(np.arange(200))
    )
    labels = torch.arange(10).repeat(6)
    noise = torch.sigmoid(torch.randn(60, *digits.input_shape, generator=torch.Generator()))
    x = synthesize(teacher, labels, digits.input_shape, steps=100, seed=0)
    assert x.shape == (60, *digits.input_shape) and 0.0 <= float(x.min()) <= float(x.max()) <= 1
    before, after = bn_statistics_loss(teacher, noise), bn_statistics_loss(teacher, x)
    assert after < 0.15 * before, (before, after)
    # As low as on a batch of real held-out digits (the statistics the teacher recorded).
    assert after < 1.5 * bn_statistics_loss(teacher, digits.test.x[:60])
    again = synthesize(teacher, labels, digits.input_shape, steps=3, seed=1)
    assert torch.equal(again, synthesize(teacher, labels, digits.input_shape, steps=3, seed=1))


@pytest.mark.parametrize("seed", SEEDS)
def test_student_learns_real_digits_from_synthetic_images(fitted, digits, seed):
    model, meta = fitted[seed]
    assert meta["teacher_train_accuracy"] > 0.95
    assert meta["synthetic_count"] == MEMBERS
    assert meta["teacher_synthetic_accuracy"] > 0.8  # the synthesis hits its targets
    assert accuracy(model, digits.test.x, digits.test.y) > 0.6  # chance: 0.1


def test_batchnorm_matching_is_what_transfers_utility(registry, fitted, digits):
    plain, meta = _fit(registry, digits, 0, bn_weight=0.0)  # class-conditional noise only
    matched = accuracy(fitted[0][0], digits.test.x, digits.test.y)
    assert meta["teacher_synthetic_accuracy"] > 0.95
    assert accuracy(plain, digits.test.x, digits.test.y) < matched - 0.1


def test_synthetic_images_are_further_from_members_than_real_digits_are(fitted, digits):
    from privbench_plugins.defenses.bn_synthesis import nearest_similarity

    psnrs, ssims = nearest_similarity(digits.test.x, digits.train.x[:MEMBERS], CPU)
    for _, meta in fitted.values():
        assert meta["nearest_private_ssim_mean"] < float(ssims.mean())
        assert meta["nearest_private_psnr_mean"] < float(psnrs.mean())
        assert meta["nearest_private_ssim_max"] < 0.99  # no synthetic copy of a member


def test_ssim_and_psnr():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g)
    noise = torch.rand(4, 3, 16, 16, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-5)
    assert (ssim(x, noise).abs() < 0.1).all()
    smooth = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    assert (ssim(smooth, smooth + 0.01) > 0.9).all()  # a constant shift keeps the structure
    assert torch.allclose(ssim(x, noise), ssim(noise, x), atol=1e-6)
    assert ssim(x[:, :1, :8, :8], noise[:, :1, :8, :8]).shape == (4,)  # window shrinks to 7
    y = (x + 0.05 * noise).clamp(0, 1)
    mse = (x - y).square().flatten(1).mean(1)
    assert torch.allclose(psnr(x, y), 10 * torch.log10(1 / mse))
    assert torch.isfinite(psnr(x, x)).all() and (psnr(x, x) >= 99).all()


def _loss_attack_auc(model: Model, members: TensorData, non_members: TensorData) -> float:
    """Yeom et al.'s loss attack: lower loss, more likely a member."""
    from sklearn.metrics import roc_auc_score

    model.eval()
    with torch.no_grad():
        losses = [
            torch.nn.functional.cross_entropy(model(d.x), d.y, reduction="none")
            for d in (members, non_members)
        ]
    truth = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    return float(roc_auc_score(truth, -torch.cat(losses).numpy()))


def test_the_student_leaks_less_membership_than_the_undefended_model(registry, fitted, digits):
    members = digits.train.subset(np.arange(MEMBERS))
    non_members = digits.test.subset(np.arange(MEMBERS))
    undefended, students = [], []
    for seed in SEEDS:
        plain = _model(registry, digits.input_shape, 10, seed, batchnorm=True, width=16)
        StandardTrainer(RECIPE, seed=seed, device=CPU).fit(plain, members)
        undefended.append(_loss_attack_auc(plain, members, non_members))
        students.append(_loss_attack_auc(fitted[seed][0], members, non_members))
    assert np.mean(students) < np.mean(undefended) - 0.02, (students, undefended)
    assert abs(np.mean(students) - 0.5) < 0.05, students  # the student never saw a member
