"""RMIA's offline ``a`` tuned as Zarifzadeh et al. (2024) and the official code tune it: attack
one reference model with the others for every ``a`` of a grid and keep the best AUC. Checked
against a brute-force computation on hand-made logits, end to end on an overfit digits pool,
for its refusal with fewer than 2 reference models, and against the attack contract."""

from __future__ import annotations

import logging
import tempfile

import attrs
import numpy as np
import pytest
import torch
from privbench_plugins.attacks.rmia import A_GRID, RMIA, tune_offline_a
from sklearn.metrics import roc_auc_score

from privbench import Access, AttackContext, ModelView, OptionError, TensorData, TrainingRecipe
from privbench.engine.audit import prepare, run_audit
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import Workspace
from privbench.plugins import Registry
from privbench.testing import check_attack

N, CLASSES, SHADOWS = 60, 3, 5


def _registry() -> Registry:
    registry = Registry.from_environment()
    if "rmia" not in registry.names("attack"):  # until pyproject declares it
        registry.load_module("privbench_plugins.attacks.rmia")
    return registry


def _view(logits: np.ndarray) -> ModelView:
    table = torch.from_numpy(logits)
    return ModelView(None, Access.LOGITS, population_logits=lambda augmentation: table)  # type: ignore[arg-type]


@pytest.fixture
def hand_made() -> tuple[AttackContext, np.ndarray, np.ndarray]:
    """Logits of a target and 5 reference models on 60 samples whose true-class logit rises by
    a per-sample amount when the model trained on them; sample 0 is OUT of reference models 1..4
    nowhere (IN in all of them), so the inverse relation is exercised too."""
    rng = np.random.default_rng(7)
    labels = np.arange(N) % CLASSES
    keep = rng.random((SHADOWS, N)) < 0.5
    keep[1:, 0] = True
    member = rng.random(N) < 0.5
    difficulty = rng.normal(0.0, 1.5, size=N)
    gain = rng.uniform(0.0, 3.0, size=N)

    def logits(kept: np.ndarray) -> np.ndarray:
        out = rng.normal(0.0, 0.5, size=(N, CLASSES))
        out[np.arange(N), labels] += difficulty + gain * kept
        return out

    shadow_logits = np.stack([logits(k) for k in keep])
    context = AttackContext(
        target=_view(logits(member)),
        shadows=[_view(s) for s in shadow_logits],
        shadow_keep=keep,
        population=TensorData(torch.zeros(N, 1, 2, 2), torch.from_numpy(labels)),
        num_classes=CLASSES,
        seed=3,
    )
    log_p = shadow_logits - np.logaddexp.reduce(shadow_logits, axis=2, keepdims=True)
    return context, log_p[:, np.arange(N), labels], keep


def _brute_force_scores(
    target: np.ndarray, refs: np.ndarray, keep: np.ndarray, a: float, z: np.ndarray
) -> np.ndarray:
    """Offline RMIA per sample, as the paper writes it: Pr(x) = ((1 + a) Pr_out + 1 - a) / 2
    (Pr_out from an IN mean by Pr_in = a Pr_out + 1 - a where no OUT model exists), and the
    fraction of z other than x with LR(x) > LR(z), one pair at a time."""
    p = np.exp(refs)
    ratio = np.empty(len(target))
    for i in range(len(target)):
        outs, ins = p[~keep[:, i], i], p[keep[:, i], i]
        inverted = max((ins.mean() - 1 + a) / a, 0.0) if a > 0 and len(ins) else 0.0
        p_out = outs.mean() if len(outs) else inverted
        ratio[i] = np.exp(target[i]) / (((1 + a) * p_out + 1 - a) / 2)
    return np.array(
        [np.mean([ratio[i] > ratio[j] for j in z if j != i]) for i in range(len(target))]
    )


def _z_index(seed: int, num_z: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(N, size=min(num_z, N), replace=False))


def test_the_tuned_a_maximises_the_pseudo_targets_auc(hand_made, caplog):
    context, log_p, keep = hand_made
    z = _z_index(context.seed, 10_000)
    aucs = np.array(
        [
            roc_auc_score(keep[0], _brute_force_scores(log_p[0], log_p[1:], keep[1:], a, z))
            for a in A_GRID
        ]
    )
    assert np.ptp(aucs) > 0.01, "the grid's AUCs should differ for the test to mean something"
    best = A_GRID[int(np.argmax(aucs))]
    a, tuned_aucs = tune_offline_a(log_p, keep, z, gamma=1.0)
    assert a == best
    assert np.allclose(tuned_aucs, aucs)
    assert A_GRID[0] == 0.0 and A_GRID[-1] == 1.0 and len(A_GRID) == 21
    assert {round(0.1 * i, 1) for i in range(11)} <= set(A_GRID)  # the official grid

    # The real target is then attacked with all reference models and that a.
    with caplog.at_level(logging.INFO, logger="privbench_plugins.attacks.rmia"):
        scores = RMIA(variant="offline").score(context)
    assert f"a={best:.2f}" in caplog.text
    target = context.target.population_logits("none").numpy()
    labels = context.population.y.numpy()
    target_logp = (target - np.logaddexp.reduce(target, axis=1, keepdims=True))[
        np.arange(N), labels
    ]
    assert np.allclose(scores, _brute_force_scores(target_logp, log_p, keep, best, z))
    again = RMIA(variant="offline").score(context)
    assert np.array_equal(scores, again), "tuning must be deterministic"
    if best > 0:  # a fixed a equal to the tuned one gives the same scores
        assert np.array_equal(scores, RMIA(variant="offline", offline_a=best).score(context))


def test_auto_stands_for_the_old_fixed_a_online(hand_made):
    context, _, _ = hand_made
    auto = RMIA().score(context)
    assert np.array_equal(auto, RMIA(offline_a=0.3).score(context))


# -- too few reference models ----------------------------------------------------------------


def test_auto_needs_two_reference_models(hand_made):
    context, log_p, keep = hand_made
    one = AttackContext(
        target=context.target,
        shadows=context.shadows[:1],
        shadow_keep=keep[:1],
        population=context.population,
        num_classes=CLASSES,
        seed=0,
    )
    with pytest.raises(OptionError, match="needs at least 2 reference models") as err:
        RMIA(variant="offline").score(one)
    assert "\n" not in str(err.value)
    with pytest.raises(OptionError, match="needs at least 2 reference models"):
        tune_offline_a(log_p[:1], keep[:1], _z_index(0, 10), gamma=1.0)
    # A fixed a, or the online variant, still works with one reference model.
    assert np.isfinite(RMIA(variant="offline", offline_a=0.3).score(one)).all()
    assert np.isfinite(RMIA().score(one)).all()
    assert RMIA(variant="offline").min_shadows == 2
    assert RMIA(variant="offline", offline_a=0.5).min_shadows == 1
    assert RMIA().min_shadows == 1


def test_the_engine_refuses_auto_with_one_shadow_model_in_one_line():
    spec = AuditSpec(
        dataset=PluginChoice("synthetic", {"num_train": 40, "num_test": 20, "size": 4}),
        model=PluginChoice("mlp", {"width": 8}),
        shadows=1,
        attacks=(PluginChoice("rmia", {"variant": "offline"}),),
        device="cpu",
    )
    with pytest.raises(OptionError, match="needs at least 2 shadow models") as err:
        prepare(spec, _registry())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("options", "value"),
    [({"offline_a": "auto"}, "auto"), ({"offline_a": "0.5"}, 0.5), ({"offline_a": 1}, 1.0)],
)
def test_offline_a_takes_a_number_or_auto(options, value):
    assert _registry().create("attack", "rmia", options).offline_a == value


@pytest.mark.parametrize("bad", ["0", "1.5", "-0.2", "tuned"])
def test_offline_a_refuses_other_values(bad):
    with pytest.raises(OptionError, match="offline_a") as err:
        _registry().create("attack", "rmia", {"offline_a": bad})
    assert "\n" not in str(err.value)


# -- contract --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "shadows"),
    [({"variant": "offline"}, 2), ({"variant": "offline", "num_z": 5}, 4), ({}, 1)],
)
def test_attack_contract(options, shadows):
    torch.manual_seed(0)  # check_attack draws its population and models from torch's seed
    scores = check_attack(RMIA, shadows=shadows, **options)
    assert np.isfinite(scores).all()
    torch.manual_seed(0)
    assert np.array_equal(scores, check_attack(RMIA, shadows=shadows, **options))


# -- end to end ------------------------------------------------------------------------------


def test_tuned_a_beats_chance_and_matches_the_fixed_default_on_an_overfit_pool(one_thread):
    registry = _registry()
    base = AuditSpec(
        dataset=PluginChoice("digits"),
        model=PluginChoice("mlp"),
        shadows=5,
        population=300,
        recipe=TrainingRecipe(epochs=40),
        device="cpu",
    )
    auc = {}
    with tempfile.TemporaryDirectory() as root:
        workspace = Workspace(root)  # the pool is trained once, then read from the store
        for label, a in (("auto", "auto"), ("fixed", 0.3)):
            choice = PluginChoice("rmia", {"variant": "offline", "offline_a": a})
            spec = attrs.evolve(base, attacks=(choice,))
            result = run_audit(spec, workspace, registry=registry)
            auc[label] = result.attacks[0].metrics.auc
        assert result.to_record()["utility"]["train_accuracy"] > 0.95  # an overfit pool
    assert auc["auto"] > 0.6, auc
    assert auc["auto"] >= auc["fixed"] - 0.02, auc
