"""LiRA (Carlini et al. 2022) and RMIA (Zarifzadeh et al. 2024): the math on hand-made signals,
the contract, option errors, and end to end on an overfit pool and on a pool where membership
carries no information."""

from __future__ import annotations

import tempfile
import types
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from conftest import null_defense_plugin
from privbench_plugins.attacks.lira import LiRA, lira_scores
from privbench_plugins.attacks.rmia import RMIA, log_likelihood_ratio, pairwise_scores
from privbench_plugins.scorers.confidence import logit_confidence
from scipy.stats import norm

from privbench import OptionError, TensorData, TrainingRecipe
from privbench.engine.audit import prepare, run_audit
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import Workspace
from privbench.helpers import GaussianFit
from privbench.plugins import Registry
from privbench.testing import check_attack


def _registry(*extra: types.ModuleType) -> Registry:
    registry = Registry.from_environment()
    for module in ("privbench_plugins.attacks.lira", "privbench_plugins.attacks.rmia"):
        name = module.rsplit(".", 1)[1]
        if name not in registry.names("attack"):  # until pyproject declares them
            registry.load_module(module)
    for module in extra:
        registry.load_module(module)
    return registry


# -- LiRA's statistic and Gaussian fits ------------------------------------------------------


def test_phi_is_the_logit_of_the_true_class_probability():
    logits = torch.randn(50, 5, generator=torch.Generator().manual_seed(0)) * 2
    labels = torch.arange(50) % 5
    p = torch.softmax(logits.double(), 1).gather(1, labels[:, None]).squeeze(1).numpy()
    phi = logit_confidence(logits.double(), labels).numpy()
    assert np.allclose(phi, np.log(p / (1 - p)), rtol=1e-9)


def test_phi_stays_finite_and_exact_for_extreme_logits():
    logits = torch.tensor([[1e4, 0.0, -1e4], [-1e4, 0.0, 1e4], [30.0, 0.0, 0.0]])
    phi = logit_confidence(logits.double(), torch.tensor([0, 0, 0])).numpy()
    assert np.isfinite(phi).all()
    # z_y - logsumexp of the others: exact where p_y rounds to 1 (row 3 in float32) or 0.
    assert np.allclose(phi, [1e4, -2e4, 30.0 - np.log(2.0)], rtol=1e-12)
    p = torch.softmax(logits[2:], 1)[0, 0]
    assert p == 1.0, "float32 rounds this probability to 1: log(p / (1 - p)) would be inf"


@pytest.fixture
def hand_made() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """6 shadows x 5 samples x 2 queries; sample 3 is never IN, sample 4 IN once only."""
    rng = np.random.default_rng(1)
    keep = np.array(
        [
            [1, 1, 0, 0, 1],
            [1, 0, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
        ],
        dtype=bool,
    )
    shadows = rng.normal(size=(6, 5, 2)) + np.where(keep, 3.0, 0.0)[:, :, None]
    target = rng.normal(size=(5, 2)) + 1.5
    return target, shadows, keep


def test_gaussian_fit_matches_numpy_per_sample(hand_made):
    _, shadows, keep = hand_made
    fit = GaussianFit.of(shadows, keep, ddof=1)  # LiRA's unbiased variances
    for i in range(5):
        values = shadows[keep[:, i], i]
        assert fit.count[i] == len(values)
        if len(values) == 0:
            assert np.isnan(fit.mean[i]).all()
        else:
            assert np.allclose(fit.mean[i], values.mean(0))
        if len(values) >= 2:
            assert np.allclose(fit.var[i], values.var(0, ddof=1))
        else:
            assert np.isnan(fit.var[i]).all()
    groups = [shadows[keep[:, i], i] for i in range(5) if keep[:, i].any()]
    dof = sum(len(g) - 1 for g in groups)
    pooled = sum(((g - g.mean(0)) ** 2).sum(0) for g in groups) / dof
    assert np.allclose(fit.pooled_var, pooled)


@pytest.mark.parametrize("global_variance", [False, True])
def test_online_lira_is_the_gaussian_log_likelihood_ratio(hand_made, global_variance):
    target, shadows, keep = hand_made
    scores = lira_scores(target, shadows, keep, "online", global_variance)
    fit_in, fit_out = GaussianFit.of(shadows, keep, ddof=1), GaussianFit.of(shadows, ~keep, ddof=1)
    for i in (0, 1, 2):  # samples with at least two IN and two OUT shadows
        ins, outs = shadows[keep[:, i], i], shadows[~keep[:, i], i]
        sd_in = np.sqrt(fit_in.pooled_var) if global_variance else ins.std(0, ddof=1)
        sd_out = np.sqrt(fit_out.pooled_var) if global_variance else outs.std(0, ddof=1)
        expected = norm.logpdf(target[i], ins.mean(0), sd_in) - norm.logpdf(
            target[i], outs.mean(0), sd_out
        )
        assert scores[i] == pytest.approx(expected.sum(), rel=1e-9)
    # Sample 3 has no IN shadow: its IN mean is its OUT mean plus the average IN-OUT gap of the
    # samples that have both (all but 3).
    both = [0, 1, 2, 4]
    shift = (fit_in.mean[both] - fit_out.mean[both]).mean(0)
    sd_in, sd_out = np.sqrt(fit_in.pooled_var), np.sqrt(fit_out.pooled_var)
    mu_out = shadows[:, 3].mean(0)
    sd_out_3 = sd_out if global_variance else shadows[:, 3].std(0, ddof=1)
    expected = norm.logpdf(target[3], mu_out + shift, sd_in) - norm.logpdf(
        target[3], mu_out, sd_out_3
    )
    assert scores[3] == pytest.approx(expected.sum(), rel=1e-9)
    assert np.isfinite(scores).all()


def test_offline_lira_is_one_sided_and_higher_for_larger_confidence(hand_made):
    target, shadows, keep = hand_made
    scores = lira_scores(target, shadows, keep, "offline", global_variance=False)
    outs = shadows[~keep[:, 0], 0]
    expected = norm.logcdf(target[0], outs.mean(0), outs.std(0, ddof=1)).sum()
    assert scores[0] == pytest.approx(expected, rel=1e-9)
    higher = lira_scores(target + 1.0, shadows, keep, "offline", global_variance=False)
    assert (higher > scores).all(), "a more confident target must look more like a member"


def test_identical_shadow_signals_hit_the_variance_floor_not_infinity():
    shadows = np.zeros((4, 3, 1))
    keep = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=bool)
    for variant in ("online", "offline"):
        for global_variance in (False, True):
            scores = lira_scores(np.ones((3, 1)), shadows, keep, variant, global_variance)
            assert np.isfinite(scores).all()


# -- RMIA's ratio and pairwise comparison ----------------------------------------------------


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_pairwise_scores_match_the_n_by_z_comparison(gamma):
    rng = np.random.default_rng(0)
    log_ratio = np.round(rng.normal(size=300), 1)  # ties included
    z_index = np.sort(rng.choice(300, size=80, replace=False))
    dominates = np.exp(log_ratio[:, None]) / np.exp(log_ratio[None, z_index]) > gamma
    dominates[z_index, np.arange(80)] = False  # x is not compared with itself
    expected = dominates.sum(1) / (80 - np.isin(np.arange(300), z_index))
    assert np.allclose(pairwise_scores(log_ratio, z_index, gamma), expected)


def test_rmia_ratio_online_and_offline():
    p = np.array([[0.9, 0.2], [0.5, 0.4], [0.7, 0.1]])  # 3 reference models x 2 samples
    keep = np.array([[1, 0], [0, 0], [1, 1]], dtype=bool)
    target = np.log(np.array([0.8, 0.3]))
    online = log_likelihood_ratio(target, np.log(p), keep, online=True, offline_a=0.3)
    pr_x = [(0.8 + 0.5) / 2, (0.1 + 0.3) / 2]
    assert np.allclose(online, target - np.log(pr_x))
    offline = log_likelihood_ratio(target, np.log(p), keep, online=False, offline_a=0.3)
    p_out = np.array([0.5, 0.3])
    assert np.allclose(offline, target - np.log(((1 + 0.3) * p_out + 1 - 0.3) / 2))
    # One reference model that trained on sample 0: its OUT probability is inferred from the
    # inverse relation Pr_in = a Pr_out + 1 - a.
    one = log_likelihood_ratio(target, np.log(p[:1]), keep[:1], online=False, offline_a=0.5)
    p_out_0 = (0.9 - 0.5) / 0.5
    assert one[0] == pytest.approx(target[0] - np.log(((1.5) * p_out_0 + 0.5) / 2))


# -- contract and options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "options", "shadows"),
    [
        (LiRA, {}, None),
        (LiRA, {"variant": "offline"}, 1),
        (LiRA, {"augment": "hflip", "global_variance": False}, 3),
        (RMIA, {}, 1),
        (RMIA, {"variant": "offline", "augment": "hflip", "num_z": 5}, 2),
    ],
)
def test_attack_contract(cls, options, shadows):
    scores = check_attack(cls, shadows=shadows, **options)
    assert np.isfinite(scores).all()


def test_min_shadows_follow_the_variant():
    assert LiRA().min_shadows == 2
    assert LiRA(variant="offline").min_shadows == 1
    assert RMIA().min_shadows == 1


def _spec(**changes: Any) -> AuditSpec:
    base = AuditSpec(
        dataset=PluginChoice(
            "synthetic",
            {"num_train": 300, "num_test": 100, "size": 8, "channels": 1, "noise": 0.3,
             "label_noise": 0.2},
        ),
        model=PluginChoice("mlp", {"width": 64}),
        recipe=TrainingRecipe(epochs=30, batch_size=32, lr=0.05),
        shadows=7,
        device="cpu",
    )  # fmt: skip
    return attrs.evolve(base, **changes)


@pytest.mark.parametrize(
    ("attack", "options", "match"),
    [
        ("lira", {"variant": "bogus"}, "expected one of online, offline"),
        ("lira", {"augment": "crop"}, "expected one of none, hflip"),
        ("lira", {"global_variance": "maybe"}, "global_variance"),
        ("rmia", {"gamma": 0}, "gamma"),
        ("rmia", {"offline_a": 1.5}, "offline_a"),
        ("rmia", {"num_z": 1}, "num_z"),
        ("rmia", {"tau": 2}, "has no option 'tau'"),
    ],
)
def test_bad_options_raise_option_errors(attack, options, match):
    with pytest.raises(OptionError, match=match):
        _registry().create("attack", attack, options)


def test_online_lira_needs_two_shadow_models():
    registry = _registry()
    with pytest.raises(OptionError, match="needs at least 2 shadow models"):
        prepare(_spec(shadows=1, attacks=(PluginChoice("lira"),)), registry)
    offline = (PluginChoice("lira", {"variant": "offline"}), PluginChoice("rmia"))
    prepare(_spec(shadows=1, attacks=offline), registry)


# -- end to end ------------------------------------------------------------------------------


ATTACKS = {
    "loss": PluginChoice("loss"),
    "lira": PluginChoice("lira"),
    "lira-offline": PluginChoice("lira", {"variant": "offline"}),
    "rmia": PluginChoice("rmia"),
    "rmia-offline": PluginChoice("rmia", {"variant": "offline"}),
}


def _audit(registry: Registry, workspace: Workspace, **changes: Any) -> dict[str, dict]:
    """Metrics of every attack in ATTACKS on one pool (trained once, then read from the store:
    an audit may not name one attack twice)."""
    metrics = {}
    for label, choice in ATTACKS.items():
        result = run_audit(_spec(attacks=(choice,), **changes), workspace, registry=registry)
        metrics[label] = result.attacks[0].metrics.as_dict()
    return metrics


@pytest.fixture(scope="module")
def overfit(one_thread) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as root:
        return _audit(_registry(), Workspace(root))


@pytest.fixture(scope="module")
def null(one_thread) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as root:
        registry = _registry(null_defense_plugin())
        return _audit(registry, Workspace(root), defense=PluginChoice("ignore-members"))


def test_lira_and_rmia_beat_the_loss_attack_on_an_overfit_pool(overfit):
    loss, lira, rmia = overfit["loss"], overfit["lira"], overfit["rmia"]
    assert lira["auc"] > 0.6 and lira["tpr_at_1_fpr"] > 0.01
    assert lira["auc"] > loss["auc"]
    assert lira["tpr_at_1_fpr"] > 2 * loss["tpr_at_1_fpr"]
    assert rmia["auc"] > 0.6 and rmia["tpr_at_1_fpr"] > 2 * loss["tpr_at_1_fpr"]
    for label in ("lira-offline", "rmia-offline"):
        assert overfit[label]["auc"] > 0.6 and overfit[label]["tpr_at_1_fpr"] > 0.01


def test_no_attack_finds_membership_that_training_ignored(null):
    for label, metrics in null.items():
        assert abs(metrics["auc"] - 0.5) < 0.06, (label, metrics["auc"])
        assert metrics["tpr_at_1_fpr"] < 0.05, (label, metrics["tpr_at_1_fpr"])


def test_lira_refuses_mirrored_queries_where_they_change_labels():
    from privbench import AttackContext, OptionError

    context = AttackContext(
        target=None,
        shadows=[],
        shadow_keep=np.zeros((0, 2), dtype=bool),
        population=TensorData(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)),
        num_classes=2,
        seed=0,
        hflip_preserves_label=False,
    )
    with pytest.raises(OptionError, match="mirrored queries change labels"):
        LiRA(augment="hflip+shift").score(context)
