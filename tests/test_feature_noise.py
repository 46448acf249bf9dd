"""The feature-noise defense and the hcr scorer (Tygert et al., HCR bounds on dithered features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import linear_features
from privbench_plugins.defenses.feature_noise import FeatureNoise
from privbench_plugins.scorers.hcr import HCR, dct_matrix

from privbench import Access, Model, ModelView, TrainingRecipe
from privbench.engine.audit import run_audit
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import Workspace
from privbench.engine.training import StandardTrainer
from privbench.testing import check_defense, check_scorer

MODULES = {
    ("defense", "feature-noise"): "privbench_plugins.defenses.feature_noise",
    ("scorer", "hcr"): "privbench_plugins.scorers.hcr",
}


def _linear_model(weight: torch.Tensor) -> Model:
    """Features ``a(x) = W x`` (mean 0, std 1: the normalised input is the pixels)."""
    return Model(linear_features(weight), [0.0], [1.0]).to(weight.dtype).eval()


def _released(scale: float, seed: int = 0, rms: float = 2.0) -> tuple[Model, Model]:
    torch.manual_seed(0)
    model = FeatureNoise(scale=scale, seed=seed).prepare_model(_linear_model(torch.randn(6, 16)))
    model.feature_rms.fill_(rms)
    return model, FeatureNoise(scale=scale, seed=seed).release(model)


def test_released_features_get_noise_of_the_right_scale():
    model, released = _released(0.5, rms=2.0)
    x = torch.rand(1, 1, 4, 4).expand(4000, 1, 4, 4)
    with torch.no_grad():
        clean = model(x[:1])
        noisy = torch.cat([released(x[i : i + 500]) for i in range(0, 4000, 500)])
    # identity head: logits are the noisy features; sigma = 0.5 * 2.0
    assert released.noise_std == pytest.approx(1.0)
    assert noisy.std(0).numpy() == pytest.approx(np.ones(6), rel=0.06)
    assert (noisy.mean(0) - clean[0]).abs().max() < 0.1
    assert torch.equal(released.features(x[:1]), model.features(x[:1]))


def test_zero_scale_leaves_logits_unchanged_and_noise_is_seeded():
    model, released = _released(0.0)
    x = torch.rand(8, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(released(x), model(x))
        runs = [_released(0.5, seed)[1] for seed in (0, 0, 1)]
        first, again, other = ([r(x), r(x)] for r in runs)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], first[1])  # fresh noise on every query
    assert not torch.equal(first[0], other[0])


def test_fit_records_the_rms_in_a_stored_buffer(tmp_path, registry):
    digits = registry.create("dataset", "digits").load(None)
    defense = FeatureNoise(scale=1.0)

    def fresh() -> Model:
        torch.manual_seed(0)
        net = registry.create("model", "small-cnn", {"width": 8}).create(digits.input_shape, 10)
        return defense.prepare_model(Model(net, digits.mean, digits.std))

    model, data = fresh(), digits.train.subset(np.arange(128))
    trainer = StandardTrainer(TrainingRecipe(epochs=1), seed=0, device=torch.device("cpu"))
    meta = defense.fit(model, data, trainer)
    with torch.no_grad():
        rms = model.features(data.x).square().mean().sqrt()
    assert meta["feature_rms"] == pytest.approx(float(rms), rel=1e-5)
    assert meta["noise_std"] == pytest.approx(meta["feature_rms"])
    ws = Workspace(tmp_path).create()
    ws.save_model("cd" * 32, model, meta)
    loaded = fresh()
    assert list(loaded.state_dict()) == list(model.state_dict())
    assert "feature_rms" in loaded.state_dict()
    ws.load_model("cd" * 32, loaded)
    assert float(loaded.feature_rms) == pytest.approx(meta["feature_rms"], rel=1e-6)
    released = [defense.release(m.eval()) for m in (model, loaded)]
    assert list(released[0].state_dict()) == list(model.state_dict())
    with torch.no_grad():
        assert torch.equal(released[0](data.x), released[1](data.x))


def test_contracts():
    check_defense(FeatureNoise)
    check_defense(FeatureNoise, scale=0.0)
    check_scorer(HCR)
    check_scorer(HCR, method="optimal", coefficients=2)


def test_hcr_matches_the_closed_form_on_a_linear_feature_map():
    """For ``a(x) = W x`` the HCR supremum is the Cramer-Rao bound
    ``sigma^2 c^T (W^T W)^{-1} c``, approached as the step shrinks."""
    torch.manual_seed(0)
    weight = torch.randn(24, 16, dtype=torch.float64)
    model = _linear_model(weight)
    view = ModelView(model, Access.PARAMETERS)
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    rms = (x.flatten(1) @ weight.T).square().mean(1).sqrt()  # no feature_rms buffer: per sample
    dct = dct_matrix(4)
    inverse = torch.linalg.inv(weight.T @ weight)
    closed = {}
    for scale in (0.5, 2.0):
        blocks = [torch.outer(dct[i], dct[j]).flatten() for i in range(2) for j in range(2)]
        cramer_rao = torch.stack([(c @ inverse @ c).sqrt() for c in blocks]).mean()
        closed[scale] = scale * rms * cramer_rao
        optimal = HCR(scale=scale, method="optimal", coefficients=2).score(view, x, None)
        assert optimal.numpy() == pytest.approx(closed[scale].numpy(), rel=0.01)
        # random starts: valid lower bounds, below the supremum, and not vacuous
        drawn = HCR(scale=scale, draws=25).score(view, x, None)
        dc = scale * rms * (blocks[0] @ inverse @ blocks[0]).sqrt()
        assert (drawn <= dc * 1.001).all() and (drawn >= 0.3 * dc).all()
    assert (closed[2.0] > closed[0.5]).all()
    # a finite step gives less than the limit: sqrt(s / expm1(s)) with s = step^2
    coarse = HCR(scale=0.5, method="optimal", step=1.0).score(view, x, None)
    c = torch.outer(dct[0], dct[0]).flatten()
    limit = 0.5 * rms * (c @ inverse @ c).sqrt()
    factor = (1.0 / np.expm1(1.0)) ** 0.5
    assert coarse.numpy() == pytest.approx((limit * factor).numpy(), rel=1e-4)


def test_hcr_reads_sigma_from_a_feature_noise_model():
    model, released = _released(0.5, rms=3.0)
    model = model.double()
    released = FeatureNoise(scale=0.5).release(model)
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    values = HCR(scale=0.5, method="optimal").score(ModelView(released, Access.PARAMETERS), x, None)
    c = torch.outer(dct_matrix(4)[0], dct_matrix(4)[0]).flatten()
    weight = model.net.global_pool.weight  # linear_features: the pre-logits are W x
    # W is 6 x 16: the bound lives in W's row space, (W^T W)^+
    with torch.no_grad():
        expected = 1.5 * (c @ torch.linalg.pinv(weight.T @ weight) @ c).sqrt()
    assert values.numpy() == pytest.approx(np.full(4, expected.item()), rel=0.01)
    # Without a scale of its own the scorer takes the released model's: scale 2 doubles sigma.
    louder = FeatureNoise(scale=2.0).release(model)
    default = HCR(method="optimal").score(ModelView(louder, Access.PARAMETERS), x, None)
    assert default.numpy() == pytest.approx(4 * values.numpy(), rel=0.01)


@pytest.mark.slow
def test_more_noise_means_less_leakage_and_less_accuracy(tmp_path, registry):
    results = {}
    for scale in (0.0, 1.0, 2.0):
        spec = AuditSpec(
            defense=PluginChoice("feature-noise", {"scale": scale}),
            recipe=TrainingRecipe(epochs=30),
            shadows=3,
            population=400,
            attacks=(PluginChoice("loss"),),
            device="cpu",
        )
        record = run_audit(spec, Workspace(tmp_path), registry=registry).to_record()
        assert record["training"]["target_meta"]["noise_std"] == pytest.approx(
            scale * record["training"]["target_meta"]["feature_rms"]
        )
        results[scale] = (record["attacks"][0]["metrics"]["auc"], record["utility"])
    # Reused models and cached noisy logits: a repeated audit reproduces the run.
    again = run_audit(spec, Workspace(tmp_path), registry=registry).to_record()
    assert again["training"]["trained"] == 0
    assert (again["attacks"][0]["metrics"]["auc"], again["utility"]) == results[2.0]
    # A fresh workspace trains and draws the same noise again: the same numbers.
    fresh = run_audit(spec, Workspace(tmp_path / "fresh"), registry=registry).to_record()
    assert fresh["training"]["trained"] == 4
    assert (fresh["attacks"][0]["metrics"]["auc"], fresh["utility"]) == results[2.0]
    # measured: AUC 0.587 / 0.572 / 0.551, test accuracy 0.850 / 0.753 / 0.569
    aucs = [results[s][0] for s in (0.0, 1.0, 2.0)]
    accuracy = [results[s][1]["test_accuracy"] for s in (0.0, 1.0, 2.0)]
    assert aucs[0] > aucs[1] > aucs[2]
    assert accuracy[0] > accuracy[1] > accuracy[2]


def test_noise_on_the_pre_pooling_map(registry):
    """layer=pre-pooling: the RMS, the noise and the hcr bound all concern forward_features."""
    digits = registry.create("dataset", "digits").load(None)
    torch.manual_seed(0)
    net = registry.create("model", "small-cnn", {"width": 8}).create(digits.input_shape, 10)
    defense = FeatureNoise(scale=1.0, layer="pre-pooling")
    model = defense.prepare_model(Model(net, digits.mean, digits.std))
    data = digits.train.subset(np.arange(64))
    trainer = StandardTrainer(TrainingRecipe(epochs=1), seed=0, device=torch.device("cpu"))
    meta = defense.fit(model, data, trainer)
    model.eval()
    with torch.no_grad():
        feature_map = net.forward_features(model.normalize(data.x))
        assert feature_map.ndim == 4  # a map, not pooled features
        assert meta["feature_rms"] == pytest.approx(float(feature_map.square().mean().sqrt()))
        released = defense.release(model)
        assert torch.equal(released.features(data.x), feature_map)
        quiet = FeatureNoise(scale=0.0, layer="pre-pooling").release(model)
        assert torch.allclose(quiet(data.x), model(data.x), atol=1e-5)
        # Noise on the map before pooling is averaged down by the pool: the logits move less
        # than with the same relative noise on the pooled features.
        moved_map = (released(data.x) - model(data.x)).abs().mean()
        # (the released models share the feature_rms buffer: measure the map's first)
        model.feature_rms.fill_(float(model.features(data.x).square().mean().sqrt()))
        pooled = FeatureNoise(scale=1.0).release(model)
        moved_pooled = (pooled(data.x) - model(data.x)).abs().mean()
        model.feature_rms.fill_(meta["feature_rms"])
    assert 0 < moved_map < moved_pooled
    values = HCR(draws=2, passes=1, iterations=10, coefficients=2).score(
        ModelView(released, Access.PARAMETERS), data.x[:3], data.y[:3]
    )
    assert values.shape == (3,) and torch.isfinite(values).all() and (values > 0).all()
