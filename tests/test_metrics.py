"""Metrics against scikit-learn and against brute force over every threshold."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from scipy.stats import beta
from sklearn.metrics import roc_auc_score, roc_curve

from privbench.analysis.binomial import clopper_pearson, split_halves
from privbench.analysis.metrics import compute_metrics, roc, tpr_at_fpr
from privbench.results.files import write_json_atomic
from privbench.results.plots import plot_roc


def inequalities(tpr: float, fpr: float, delta: float) -> list[float]:
    """The eps each DP inequality needs at one threshold (-inf where it bounds nothing)."""
    first = math.log((tpr - delta) / fpr) if fpr > 0 and tpr - delta > 0 else -math.inf
    second = (
        math.log((1 - fpr - delta) / (1 - tpr)) if tpr < 1 and 1 - fpr - delta > 0 else -math.inf
    )
    return [first, second]


def counts(scores, truth, t) -> tuple[int, int, int, int]:
    predicted = scores >= t
    return (
        int((predicted & truth).sum()),
        int((predicted & ~truth).sum()),
        int(truth.sum()),
        int((~truth).sum()),
    )


def cp_bounds(tp: int, fp: int, n_pos: int, n_neg: int) -> tuple[float, float]:
    tpr_lo = beta.ppf(0.025, tp, n_pos - tp + 1) if tp > 0 else 0.0
    fpr_hi = beta.ppf(0.975, fp + 1, n_neg - fp) if fp < n_neg else 1.0
    return tpr_lo, fpr_hi


def held_out_epsilon(scores: np.ndarray, truth: np.ndarray, delta: float = 1e-5) -> float:
    """The documented protocol by plain loops: a seeded half picks the threshold and inequality
    (first of equals: inequality-major, thresholds from high to low), the other half bounds."""
    order = np.random.default_rng(0).permutation(len(scores))
    select, evaluate = order[: len(scores) // 2], order[len(scores) // 2 :]
    best, choice = -math.inf, None
    thresholds = [np.inf, *sorted(set(scores[select].tolist()), reverse=True)]
    for which in (0, 1):
        for t in thresholds:
            tpr_lo, fpr_hi = cp_bounds(*counts(scores[select], truth[select], t))
            value = inequalities(tpr_lo, fpr_hi, delta)[which]
            if value > best:
                best, choice = value, (which, t)
    if choice is None:
        return 0.0
    tpr_lo, fpr_hi = cp_bounds(*counts(scores[evaluate], truth[evaluate], choice[1]))
    return max(0.0, inequalities(tpr_lo, fpr_hi, delta)[choice[0]])


def brute_force(scores: np.ndarray, truth: np.ndarray, delta: float = 1e-5) -> dict[str, float]:
    """Every threshold ``score >= t`` by a plain loop."""
    best = {"tpr@0.0001": 0.0, "tpr@0.001": 0.0, "tpr@0.01": 0.0, "bal": 0.5, "adv": 0.0}
    best.update(eps=0.0, eer_gap=math.inf, eer_accuracies=set())
    for t in [*sorted(set(scores.tolist())), np.inf]:
        tp, fp, n_pos, n_neg = counts(scores, truth, t)
        tpr, fpr = tp / n_pos, fp / n_neg
        gap, accuracy = abs(fpr + tpr - 1), round((tpr + 1 - fpr) / 2, 12)
        if gap < best["eer_gap"] - 1e-12:
            best["eer_gap"], best["eer_accuracies"] = gap, {accuracy}
        elif abs(gap - best["eer_gap"]) <= 1e-12:
            best["eer_accuracies"].add(accuracy)
        for level in (0.0001, 0.001, 0.01):
            if fpr <= level:
                best[f"tpr@{level}"] = max(best[f"tpr@{level}"], tpr)
        best["bal"] = max(best["bal"], (tpr + 1 - fpr) / 2)
        best["adv"] = max(best["adv"], tpr - fpr)
        best["eps"] = max(best["eps"], *inequalities(tpr, fpr, delta))
    best["eps_lb"] = held_out_epsilon(scores, truth, delta)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_metrics_match_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 3000 if seed < 4 else 150  # small runs: fewer non-members than 1/FPR
    truth = rng.random(n) < (0.5 if seed % 3 else 0.2)
    # Rounded scores create ties; members are shifted up (strongly for seed 5).
    shift = 3.0 if seed == 5 else 0.4
    scores = np.round(rng.normal(size=n) + shift * truth, 1 if seed % 2 else 3)
    metrics = compute_metrics(scores, truth)
    assert metrics.auc == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    expected = brute_force(scores, truth)
    assert metrics.tpr_at_0_1_fpr == pytest.approx(expected["tpr@0.001"])
    assert metrics.tpr_at_1_fpr == pytest.approx(expected["tpr@0.01"])
    assert metrics.tpr_at_0_01_fpr == pytest.approx(expected["tpr@0.0001"])
    assert round(metrics.balanced_accuracy_at_eer, 12) in expected["eer_accuracies"]
    assert metrics.balanced_accuracy == pytest.approx(expected["bal"])
    assert metrics.advantage == pytest.approx(expected["adv"])
    assert metrics.epsilon_estimate == pytest.approx(expected["eps"])
    assert metrics.epsilon_lower == pytest.approx(expected["eps_lb"])
    assert 0 <= metrics.epsilon_lower <= metrics.epsilon_estimate
    assert (metrics.n_members, metrics.n_nonmembers) == (truth.sum(), (~truth).sum())
    fpr, tpr, _ = roc(scores, truth)
    sk_fpr, sk_tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    assert np.array_equal(fpr, sk_fpr) and np.array_equal(tpr, sk_tpr)


def test_tpr_at_fpr_uses_only_points_within_the_budget():
    fpr = np.array([0.0, 0.0005, 0.002, 0.02, 1.0])
    tpr = np.array([0.0, 0.1, 0.3, 0.6, 1.0])
    assert tpr_at_fpr(fpr, tpr, 1e-3) == 0.1
    assert tpr_at_fpr(fpr, tpr, 1e-2) == 0.3


def test_tpr_at_fpr_includes_points_exactly_at_the_budget():
    # 1000 non-members: 1 false positive is FPR 0.001 exactly, 10 are FPR 0.01.
    groups = [(10, True, 50), (5, False, 1), (4, True, 20), (3, False, 9), (2, True, 30)]
    groups.append((0, False, 990))
    scores = np.concatenate([np.full(n, float(s)) for s, _, n in groups])
    truth = np.concatenate([np.full(n, member) for _, member, n in groups])
    metrics = compute_metrics(scores, truth)
    assert (metrics.tpr_at_0_1_fpr, metrics.tpr_at_1_fpr) == (0.7, 1.0)


def test_perfect_separation_gives_a_growing_epsilon_bound():
    bounds = []
    for n in (100, 1000, 10000):
        truth = np.arange(2 * n) < n
        scores = truth.astype(float)
        metrics = compute_metrics(scores, truth)
        assert metrics.auc == 1.0 and metrics.tpr_at_0_1_fpr == 1.0
        assert metrics.balanced_accuracy == 1.0 and metrics.advantage == 1.0
        bounds.append(metrics.epsilon_lower)
    assert bounds[0] > 2.0 and bounds[0] < bounds[1] < bounds[2]
    # With zero errors on the evaluation half, Clopper-Pearson at 95% has closed forms.
    n = 10000
    _, evaluate = split_halves(2 * n)
    members = int((np.arange(2 * n) < n)[evaluate].sum())
    tpr_lo = 0.025 ** (1 / members)
    fpr_hi = 1 - 0.025 ** (1 / (len(evaluate) - members))
    closed_forms = [np.log((tpr_lo - 1e-5) / fpr_hi), np.log((1 - fpr_hi - 1e-5) / (1 - tpr_lo))]
    assert any(bounds[2] == pytest.approx(value, rel=1e-6) for value in closed_forms)


def test_epsilon_lower_is_a_valid_bound_for_a_known_mechanism():
    """Scores from the Laplace mechanism with scale 1/eps are exactly eps-DP in membership
    (the likelihood ratio never exceeds e^eps): the 95% lower bound may exceed the true eps in
    about 1 run of 20; the optimistic point estimate exceeds it far more often."""
    true_eps, exceeded, optimistic, bounds = 1.0, 0, 0, []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        truth = rng.random(20000) < 0.5
        scores = rng.laplace(loc=truth.astype(float), scale=1 / true_eps)
        metrics = compute_metrics(scores, truth, delta=0.0)
        exceeded += metrics.epsilon_lower > true_eps
        optimistic += metrics.epsilon_estimate > true_eps
        bounds.append(metrics.epsilon_lower)
    assert exceeded <= 3
    assert optimistic > 10  # picking the best threshold on the same scores overstates eps
    assert np.median(bounds) > 0.7  # and the honest bound is not vacuous


def test_random_scores_give_chance_and_no_epsilon():
    rng = np.random.default_rng(0)
    truth = rng.random(20000) < 0.5
    metrics = compute_metrics(rng.random(20000), truth)
    assert metrics.auc == pytest.approx(0.5, abs=0.02)
    assert metrics.epsilon_lower < 0.1
    assert metrics.epsilon_lower <= metrics.epsilon_estimate


def test_clopper_pearson_matches_the_closed_forms_at_the_edges():
    lower, upper = clopper_pearson(np.array([0, 10]), 10, 0.95)
    assert lower[0] == 0.0 and upper[1] == 1.0
    assert upper[0] == pytest.approx(1 - 0.025 ** (1 / 10))
    assert lower[1] == pytest.approx(0.025 ** (1 / 10))


@pytest.mark.parametrize(
    ("scores", "truth", "message"),
    [
        ([0.1, np.nan], [True, False], "NaN"),
        ([0.1, 0.2], [True, True], "both members and non-members"),
        ([0.1, 0.2], [False, False], "both members and non-members"),
        ([], [], "both members and non-members"),
        ([0.1, 0.2, 0.3], [True, False], "3 scores but 2"),
        ([0.1, 0.2, 0.3], [0, 1, 2], "boolean or 0/1"),
        ([0.1, 0.2], [1.0, np.nan], "boolean or 0/1"),
    ],
)
def test_bad_inputs_are_rejected(scores, truth, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(np.array(scores), np.array(truth))
    with pytest.raises(ValueError, match=message):
        roc(np.array(scores), np.array(truth))


@pytest.mark.parametrize(("option", "value"), [("delta", -0.1), ("confidence", 1.0)])
def test_bad_parameters_are_rejected(option, value):
    with pytest.raises(ValueError, match=option):
        compute_metrics([0.0, 1.0], [False, True], **{option: value})


def test_infinite_scores_still_rank():
    metrics = compute_metrics(np.array([np.inf, 1.0, -np.inf, 0.0]), np.array([1, 1, 0, 0]))
    assert metrics.auc == 1.0
    # inf must outrank a finite score that inf-replacement by "max + 1" would tie with.
    scores = np.array([np.inf, 1e17, 0.0, -np.inf])
    truth = np.array([True, False, False, False])
    assert compute_metrics(scores, truth).auc == 1.0
    fpr, tpr, thresholds = roc(scores, truth)
    assert fpr.tolist() == [0, 0, 1 / 3, 2 / 3, 1] and tpr.tolist() == [0, 1, 1, 1, 1]
    assert thresholds[1:].tolist() == [np.inf, 1e17, 0.0, -np.inf]


def test_report_files_are_written_atomically(tmp_path):
    fpr, tpr, _ = roc_curve([0, 1, 0, 1, 1], [0.1, 0.9, 0.3, 0.2, 0.8])
    curves = {"loss": (fpr, tpr, 0.83), "no auc": ([0.0, 1e-4, 1.0], [0.0, 0.2, 1.0], None)}
    plot_roc(curves, tmp_path / "out" / "roc.png", title="test")
    png = (tmp_path / "out" / "roc.png").read_bytes()
    assert len(png) > 1000 and png[:8] == b"\x89PNG\r\n\x1a\n"
    plot_roc(curves, tmp_path / "out" / "roc.png", title="overwritten")  # replaces in place
    data = {"b": [1, 2], "a": 0.5, "n": np.int64(3), "x": np.array([0.25, 1.0])}
    write_json_atomic(tmp_path / "out" / "r.json", data)
    text = (tmp_path / "out" / "r.json").read_text()
    assert json.loads(text) == {"a": 0.5, "b": [1, 2], "n": 3, "x": [0.25, 1.0]}
    assert text.index('"a"') < text.index('"b"') and text.endswith("\n")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.json", "roc.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out" / "r.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"old": True})

    def full_disk(fd):
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_json_atomic(target, {"new": True})
    with pytest.raises(OSError, match="No space"):
        plot_roc({}, tmp_path / "roc.png", title="chance only")
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
