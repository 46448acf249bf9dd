"""The shadow-calibrated baselines of the Curvature Clues comparison: hand-computed scores on fixed
logits, the modified entropy against its formula, class-wise thresholds, and an end-to-end audit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from privbench_plugins.attacks.baselines import (
    SablayrollesAttack,
    SongMittalAttack,
    WatsonAttack,
    YeAttackR,
    best_threshold,
    modified_entropy,
)
from sklearn.metrics import roc_auc_score

import privbench
from privbench import Access, AttackContext, Model, ModelView, OptionError, TensorData
from privbench.engine.audit import run_audit
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import Workspace
from privbench.testing import check_attack

ATTACKS = (SablayrollesAttack, WatsonAttack, YeAttackR, SongMittalAttack)


def _view(none: torch.Tensor, access: Access, hflip: torch.Tensor | None = None) -> ModelView:
    cache = {"none": none, "hflip": none if hflip is None else hflip}
    model = Model(torch.nn.Identity(), [0.0], [1.0])
    return ModelView(model, access, population_logits=lambda augmentation: cache[augmentation])


def _context(target, shadows, keep, y, num_classes=2, target_hflip=None, shadow_hflips=None):
    y = torch.as_tensor(y, dtype=torch.long)
    flips = shadow_hflips or [None] * len(shadows)
    return AttackContext(
        target=_view(target, Access.LOGITS, target_hflip),
        shadows=[_view(s, Access.PARAMETERS, f) for s, f in zip(shadows, flips, strict=True)],
        shadow_keep=np.asarray(keep, dtype=bool),
        population=TensorData(torch.zeros(len(y), 1, 2, 2), y),
        num_classes=num_classes,
        seed=0,
    )


def _logits_with_loss(losses, y) -> torch.Tensor:
    """Two-class logits whose cross-entropy on labels *y* is exactly *losses*:
    ``log(1 + e^z) = loss`` for the other class's logit ``z``."""
    losses = np.asarray(losses, dtype=np.float64)
    logits = torch.zeros(len(losses), 2, dtype=torch.float64)
    other = 1 - torch.as_tensor(y)
    logits[torch.arange(len(losses)), other] = torch.as_tensor(np.log(np.expm1(losses)))
    return logits


# Three samples, three shadows; sample 2 is IN for every shadow (no OUT model at all).
Y = [0, 1, 0]
TARGET = [0.5, 2.0, 1.45]
SHADOW_LOSSES = [[1.0, 0.1, 0.3], [3.0, 0.4, 0.6], [2.0, 1.6, 0.9]]
KEEP = [[False, True, True], [False, False, True], [True, False, True]]
# OUT losses: sample 0 -> 1.0, 3.0; sample 1 -> 0.4, 1.6; sample 2 -> none.
# IN losses:  sample 0 -> 2.0;      sample 1 -> 0.1;      sample 2 -> 0.3, 0.6, 0.9.


def _hand_context() -> AttackContext:
    return _context(
        _logits_with_loss(TARGET, Y), [_logits_with_loss(s, Y) for s in SHADOW_LOSSES], KEEP, Y
    )


def test_the_logit_helper_gives_the_losses_asked_for():
    logits = _logits_with_loss(TARGET, Y)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(Y), reduction="none")
    assert np.allclose(loss.numpy(), TARGET)


def test_watson_subtracts_the_mean_out_loss_and_pools_where_a_sample_has_none():
    pooled_out = np.mean([1.0, 3.0, 0.4, 1.6])
    expected = [2.0 - 0.5, 1.0 - 2.0, pooled_out - 1.45]
    assert np.allclose(WatsonAttack().score(_hand_context()), expected)


def test_sablayrolles_thresholds_halfway_between_in_and_out_means():
    tau = [(2.0 + 2.0) / 2, (0.1 + 1.0) / 2, (0.6 + np.mean([1.0, 3.0, 0.4, 1.6])) / 2]
    expected = np.array(tau) - TARGET
    assert np.allclose(SablayrollesAttack().score(_hand_context()), expected)
    # Not Watson's ranking: the IN losses move the threshold.
    assert not np.allclose(expected, WatsonAttack().score(_hand_context()))


def test_attack_r_scores_one_minus_the_percentile_among_out_losses():
    context = _hand_context()
    # sample 0: 0.5 below both OUT losses; sample 1: 2.0 above both; sample 2 has no OUT shadow:
    # pooled [0.4, 1.0, 1.6, 3.0] at percentiles [0, 1/3, 2/3, 1], 1.45 is 3/4 from 1.0 to 1.6.
    assert np.percentile([0.4, 1.0, 1.6, 3.0], 100 * 1.75 / 3) == pytest.approx(1.45)
    assert np.allclose(YeAttackR().score(context), [1.0, 0.0, 1 - 1.75 / 3])
    assert np.allclose(YeAttackR(percentile="weak").score(context), [1.0, 0.0, 1 - 2 / 4])
    # Gaussian: z-scores (mean - loss) / std with ddof=1; sample 2 takes the mean variance.
    var0, var1 = np.var([1.0, 3.0], ddof=1), np.var([0.4, 1.6], ddof=1)
    expected = [
        (2.0 - 0.5) / np.sqrt(var0),
        (1.0 - 2.0) / np.sqrt(var1),
        (np.mean([1.0, 3.0, 0.4, 1.6]) - 1.45) / np.sqrt((var0 + var1) / 2),
    ]
    assert np.allclose(YeAttackR(percentile="gaussian").score(context), expected)


def test_attack_r_interpolates_between_out_losses():
    # One sample, four shadows: OUT losses 1, 2, 4 (the fourth shadow is IN, loss 0.1).
    shadows = [_logits_with_loss([v], [0]) for v in (4.0, 1.0, 0.1, 2.0)]
    keep = [[False], [False], [True], [False]]
    context = _context(_logits_with_loss([3.0], [0]), shadows, keep, [0])
    # sorted OUT [1, 2, 4]: 3 sits halfway from 2 to 4 -> position 1.5 of 2 -> 75th percentile.
    assert np.percentile([1.0, 2.0, 4.0], 75) == pytest.approx(3.0)
    assert YeAttackR().score(context) == pytest.approx([0.25])
    assert YeAttackR(percentile="weak").score(context) == pytest.approx([1 / 3])


def test_attack_r_linear_score_is_sweeping_ye_alpha():
    """member if loss < np.percentile(OUT losses, 100 alpha)  <=>  score > 1 - alpha."""
    rng = np.random.default_rng(1)
    n, s = 40, 7
    y = rng.integers(0, 2, n)
    shadow_losses = rng.exponential(1.0, (s, n)) + 0.05
    keep = rng.random((s, n)) < 0.5
    keep[:, 0] = [True] * (s - 1) + [False]  # a sample with a single OUT loss
    target = rng.exponential(1.0, n) + 0.05
    context = _context(
        _logits_with_loss(target, y), [_logits_with_loss(v, y) for v in shadow_losses], keep, y
    )
    score = YeAttackR().score(context)
    for alpha in (0.1, 0.25, 0.5, 0.8, 0.95):
        for i in np.flatnonzero((~keep).sum(0) > 0):
            threshold = np.percentile(shadow_losses[~keep[:, i], i], 100 * alpha)
            assert (target[i] < threshold) == (score[i] > 1 - alpha + 1e-9), (alpha, i)


def test_hflip_averages_logits_for_the_target_and_every_shadow():
    rng = np.random.default_rng(2)
    y = [0, 1, 1, 0]
    logits = [torch.as_tensor(rng.normal(size=(4, 2))) for _ in range(6)]  # target, 2 shadows
    keep = [[True, False, True, False], [False, True, False, False]]
    flipped = _context(logits[0], logits[1:3], keep, y, 2, logits[3], logits[4:6])
    averaged = _context(
        (logits[0] + logits[3]) / 2,
        [(logits[1] + logits[4]) / 2, (logits[2] + logits[5]) / 2],
        keep,
        y,
    )
    for cls in ATTACKS:
        with_flip = cls(hflip=True).score(flipped)
        assert np.allclose(with_flip, cls().score(averaged)), cls.name
        assert not np.allclose(with_flip, cls().score(flipped)), cls.name


def _mentr_direct(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    rows = np.arange(len(y))
    own = -(1 - p[rows, y]) * np.log(p[rows, y])
    terms = -p * np.log(1 - p)
    terms[rows, y] = 0.0
    return own + terms.sum(1)


def test_modified_entropy_matches_its_formula():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3.0, size=(50, 5))
    y = rng.integers(0, 5, 50)
    got = modified_entropy(torch.as_tensor(logits), torch.as_tensor(y))
    assert np.allclose(got, _mentr_direct(logits, y), rtol=1e-10, atol=1e-12)


def test_modified_entropy_stays_exact_for_saturated_predictions():
    # Logits [a, 0, 0]: p0 = e^a / (e^a + 2), p1 = p2 = 1 / (e^a + 2), 1 - p0 = 2 / (e^a + 2).
    a = 40.0
    z = math.exp(a) + 2
    p_other, one_minus_p0 = 1 / z, 2 / z
    right = -one_minus_p0 * math.log1p(-one_minus_p0) - 2 * p_other * math.log1p(-p_other)
    wrong = -(1 - p_other) * math.log(p_other) - (1 - one_minus_p0) * math.log(one_minus_p0)
    wrong -= p_other * math.log1p(-p_other)
    got = modified_entropy(torch.tensor([[a, 0.0, 0.0]] * 2), torch.tensor([0, 1]))
    assert got[0] == pytest.approx(right, rel=1e-9) and 0 < got[0] < 1e-33
    assert got[1] == pytest.approx(wrong, rel=1e-9)
    # A more confident member gets a strictly lower value (no clipping plateau).
    sharper = modified_entropy(torch.tensor([[a + 5, 0.0, 0.0]]), torch.tensor([0]))
    assert 0 < sharper[0] < got[0]


def test_best_threshold_maximises_balanced_accuracy():
    assert best_threshold(np.array([3.0, 4.0, 5.0]), np.array([1.0, 2.0])) == 3.0
    # t=3: TPR 1, TNR 2/3; t=4: 2/3, 2/3; t=5: 1/3, 1.
    assert best_threshold(np.array([3.0, 4.0, 5.0]), np.array([1.0, 2.0, 4.5])) == 3.0
    with pytest.raises(ValueError):
        best_threshold(np.array([1.0]), np.array([]))


def _class_skewed_context(seed: int, shadows: int = 4, n: int = 200):
    """Two classes; class 1 is systematically harder (higher entropy) than class 0, so its
    members look like class 0's non-members: true-class margins 6 / 4 (class 0 in / out) and
    2.5 / 0.5 (class 1). Returns the context and the target's true membership."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    margin = {(0, True): 6.0, (0, False): 4.0, (1, True): 2.5, (1, False): 0.5}

    def logits(member: np.ndarray) -> torch.Tensor:
        m = np.array([margin[(c, bool(k))] for c, k in zip(y, member, strict=True)])
        out = np.zeros((n, 2))
        out[np.arange(n), y] = m + rng.normal(scale=0.4, size=n)
        return torch.as_tensor(out)

    keep = rng.random((shadows + 1, n)) < 0.5
    return _context(logits(keep[0]), [logits(k) for k in keep[1:]], keep[1:], y), keep[0]


def test_class_thresholds_differ_per_class_and_rescue_a_hard_class():
    context, truth = _class_skewed_context(0)
    global_scores = SongMittalAttack(class_thresholds=False).score(context)
    class_scores = SongMittalAttack().score(context)
    # The score is -Mentr minus its class's threshold: one shift per class, and they differ.
    shift = global_scores - class_scores
    y = context.population.y.numpy()
    t0, t1 = shift[y == 0], shift[y == 1]
    assert np.allclose(t0, t0[0]) and np.allclose(t1, t1[0])
    assert t0[0] > t1[0] + 0.01  # the easy class needs a stricter (higher -Mentr) threshold
    global_auc = roc_auc_score(truth, global_scores)
    class_auc = roc_auc_score(truth, class_scores)
    assert global_auc < 0.85 and class_auc > 0.95, (global_auc, class_auc)
    # At offset 0 (the paper's decision rule) the shadow-learned thresholds classify the target.
    assert ((class_scores >= 0) == truth).mean() > 0.9
    assert ((global_scores >= np.median(global_scores)) == truth).mean() < 0.85


def test_missing_shadows_fail_with_a_message():
    context = _context(_logits_with_loss([1.0], [0]), [], np.zeros((0, 1)), [0])
    for cls in ATTACKS:
        with pytest.raises(ValueError, match="shadow"):
            cls().score(context)


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.name)
def test_contract(cls):
    check_attack(cls)
    check_attack(cls, shadows=cls.min_shadows, hflip=True)


def test_contract_of_the_options():
    check_attack(YeAttackR, percentile="weak")
    check_attack(YeAttackR, percentile="gaussian")
    check_attack(SongMittalAttack, class_thresholds=False)


def test_registered_with_validated_options(registry):
    assert {"sablayrolles", "watson", "attack-r", "song-mittal"} <= set(registry.names("attack"))
    assert registry.create("attack", "attack-r", {"percentile": "gaussian"}) == YeAttackR(
        "gaussian"
    )
    assert registry.create("attack", "song-mittal", {"class_thresholds": "false"}) == (
        SongMittalAttack(class_thresholds=False)
    )
    with pytest.raises(OptionError):
        registry.create("attack", "attack-r", {"percentile": "cubic"})


def test_each_baseline_beats_chance_and_calibration_beats_the_loss(tmp_path, registry):
    names = ("loss", "watson", "sablayrolles", "attack-r", "song-mittal")
    spec = AuditSpec(
        dataset=PluginChoice("digits"),
        model=PluginChoice("mlp"),
        shadows=5,
        population=300,
        recipe=privbench.TrainingRecipe(epochs=40),
        attacks=tuple(PluginChoice(name) for name in names),
        device="cpu",
    )
    result = run_audit(spec, Workspace(tmp_path), registry=registry)
    auc = {a.name: a.metrics.auc for a in result.attacks}
    assert result.to_record()["utility"]["train_accuracy"] > 0.95  # an overfit pool
    for name in names:
        assert auc[name] > 0.55, auc
    for name in ("watson", "attack-r", "sablayrolles"):
        assert auc[name] > auc["loss"] + 0.01, auc
