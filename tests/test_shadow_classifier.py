"""The learned shadow-model attack of Shokri et al. (2017): its features, its per-class
classifiers on hand-made records, the fallback for one-label classes, the contract, and end to
end on an overfit pool and on a pool where membership carries no information."""

from __future__ import annotations

import tempfile
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from conftest import null_defense_plugin
from privbench_plugins.attacks.shadow_classifier import (
    ShadowClassifier,
    logit_scale,
    shadow_classifier_scores,
)
from sklearn.metrics import roc_auc_score

from privbench import OptionError, TrainingRecipe
from privbench.engine.audit import run_audit
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import Workspace
from privbench.plugins import Registry
from privbench.testing import AttackContract, check_attack

CLASSIFIERS = ("gradient-boosting", "mlp", "logistic")

# -- features --------------------------------------------------------------------------------


def test_features_are_the_logit_scaled_probabilities():
    logits = torch.randn(40, 4, generator=torch.Generator().manual_seed(0)) * 3
    p = torch.softmax(logits.double(), 1).numpy()
    assert np.allclose(logit_scale(logits).numpy(), np.log(p / (1 - p)), rtol=1e-9)


def test_features_stay_finite_and_exact_where_the_softmax_saturates():
    logits = torch.tensor([[60.0, 0.0, 0.0], [1e4, 0.0, -1e4]], dtype=torch.float64)
    z = logit_scale(logits).numpy()
    assert np.isfinite(z).all()
    # The top class: z_y - logsumexp of the others, although p rounds to 1 in float64.
    assert z[0, 0] == pytest.approx(60.0 - np.log(2.0), rel=1e-12)
    assert z[1, 0] == pytest.approx(1e4, rel=1e-12)
    assert z[0, 1] == pytest.approx(-60.0, rel=1e-12)  # 0 - logsumexp(60, 0)


# -- the classifiers on hand-made records ----------------------------------------------------


def _records(signal: float, seed: int = 0, shadows: int = 4, n: int = 600, classes: int = 3):
    """Features where a member of class c moves along a direction of its own: coordinate
    ``(c + 1) % C``, up for even classes and down for odd ones, so that one rule for all classes
    would mix them up. Returns target and shadow features, keep-masks, labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    keep = rng.random((shadows, n)) < 0.5
    target_in = rng.random(n) < 0.5
    shift = np.zeros((n, classes))
    shift[np.arange(n), (labels + 1) % classes] = np.where(labels % 2 == 0, signal, -signal)

    def features(members: np.ndarray) -> np.ndarray:
        return rng.normal(size=(*members.shape, classes)) + members[..., None] * shift

    return features(target_in), features(keep), keep, target_in, labels


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_per_class_classifiers_recover_membership_that_the_features_show(classifier):
    target, shadows, keep, target_in, labels = _records(signal=3.0)
    scores = shadow_classifier_scores(target, shadows, keep, labels, classifier=classifier)
    assert scores.shape == (600,) and np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all(), "scores are member probabilities"
    assert roc_auc_score(target_in, scores) > 0.9


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_features_independent_of_membership_give_chance(classifier):
    target, shadows, keep, target_in, labels = _records(signal=0.0)
    scores = shadow_classifier_scores(target, shadows, keep, labels, classifier=classifier)
    assert abs(roc_auc_score(target_in, scores) - 0.5) < 0.06


def test_sorted_top_k_features_lose_the_class_order():
    # Membership lives in which coordinate moves, which sorting discards, yet the size of the
    # largest entry still moves: top-3 of 3 classes keeps some signal, less than the full vector.
    target, shadows, keep, target_in, labels = _records(signal=3.0)
    full = shadow_classifier_scores(target, shadows, keep, labels, top_k=0)
    top1 = shadow_classifier_scores(target, shadows, keep, labels, top_k=1)
    assert roc_auc_score(target_in, full) > roc_auc_score(target_in, top1)


def test_a_class_with_one_label_falls_back_to_the_classifier_over_all_classes():
    target, shadows, keep, _, labels = _records(signal=3.0, shadows=1, classes=4)
    labels = np.where(labels == 3, 0, labels)
    labels[3] = 3  # a class of one sample: its single shadow record has one label
    first = shadow_classifier_scores(target, shadows, keep, labels, seed=5)
    again = shadow_classifier_scores(target, shadows, keep, labels, seed=5)
    assert np.isfinite(first).all() and np.array_equal(first, again)
    assert 0.0 < first[3] < 1.0, "the fallback classifier's probability, not the class's 0 or 1"
    # Every record of one label: no classifier at all, a constant score.
    constant = shadow_classifier_scores(target, shadows, np.ones_like(keep), labels)
    assert (constant == 1.0).all()


def test_shapes_must_agree():
    target, shadows, keep, _, labels = _records(signal=1.0)
    with pytest.raises(ValueError, match="disagree"):
        shadow_classifier_scores(target[:10], shadows, keep, labels)


# -- contract and options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "shadows"),
    [
        ({}, None),
        ({}, 1),
        ({"classifier": "mlp", "top_k": 2}, 2),
        ({"classifier": "logistic", "hflip": True}, 3),
    ],
)
def test_attack_contract(options, shadows):
    scores = check_attack(ShadowClassifier, shadows=shadows, **options)
    assert np.isfinite(scores).all()


class TestShadowClassifierContract(AttackContract):
    plugin_class = ShadowClassifier


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"classifier": "forest"}, "expected one of gradient-boosting, mlp, logistic"),
        ({"top_k": -1}, "top_k"),
        ({"depth": 3}, "has no option 'depth'"),
    ],
)
def test_bad_options_raise_option_errors(options, match):
    with pytest.raises(OptionError, match=match):
        Registry.from_environment().create("attack", "shadow-classifier", options)


# -- end to end ------------------------------------------------------------------------------


def _spec(**changes: Any) -> AuditSpec:
    base = AuditSpec(
        dataset=PluginChoice(
            "synthetic",
            {"num_train": 400, "num_test": 100, "size": 8, "channels": 1, "noise": 0.3,
             "label_noise": 0.2},
        ),
        model=PluginChoice("mlp", {"width": 64}),
        recipe=TrainingRecipe(epochs=30, batch_size=32, lr=0.05),
        shadows=5,
        device="cpu",
    )  # fmt: skip
    return attrs.evolve(base, **changes)


ATTACKS = {
    "loss": PluginChoice("loss"),
    "shadow-classifier": PluginChoice("shadow-classifier"),
    "shadow-classifier-mlp": PluginChoice("shadow-classifier", {"classifier": "mlp"}),
    "shadow-classifier-logistic": PluginChoice("shadow-classifier", {"classifier": "logistic"}),
}


def _audit(registry: Registry, workspace: Workspace, **changes: Any) -> dict[str, dict]:
    """Metrics of every attack in ATTACKS on one pool (trained once, then read from the store)."""
    metrics = {}
    for label, choice in ATTACKS.items():
        result = run_audit(_spec(attacks=(choice,), **changes), workspace, registry=registry)
        metrics[label] = result.attacks[0].metrics.as_dict()
    return metrics


@pytest.fixture(scope="module")
def overfit(one_thread) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as root:
        return _audit(Registry.from_environment(), Workspace(root))


@pytest.fixture(scope="module")
def null(one_thread) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as root:
        registry = Registry.from_environment()
        registry.load_module(null_defense_plugin())
        return _audit(registry, Workspace(root), defense=PluginChoice("ignore-members"))


def test_beats_chance_on_an_overfit_pool(overfit):
    for label, metrics in overfit.items():
        assert metrics["auc"] > 0.6, (label, metrics["auc"])
    assert overfit["shadow-classifier"]["tpr_at_1_fpr"] > 0.01


def test_falls_to_chance_when_training_ignores_membership(null):
    for label, metrics in null.items():
        assert abs(metrics["auc"] - 0.5) < 0.06, (label, metrics["auc"])
        assert metrics["tpr_at_1_fpr"] < 0.05, (label, metrics["tpr_at_1_fpr"])
