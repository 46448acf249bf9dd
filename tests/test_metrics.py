"""Metrics against scikit-learn and against brute force over every threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from privbench.metrics import clopper_pearson, compute_metrics, roc, tpr_at_fpr
from privbench.report import plot_roc, write_json_atomic


def brute_force(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Every threshold ``score >= t`` by a plain loop: TPR@FPR, balanced accuracy, advantage."""
    best = {"tpr@0.001": 0.0, "tpr@0.01": 0.0, "bal": 0.5, "adv": 0.0}
    for t in [*sorted(set(scores.tolist())), np.inf]:
        predicted = scores >= t
        tpr = (predicted & truth).sum() / truth.sum()
        fpr = (predicted & ~truth).sum() / (~truth).sum()
        for level in (0.001, 0.01):
            if fpr <= level:
                best[f"tpr@{level}"] = max(best[f"tpr@{level}"], tpr)
        best["bal"] = max(best["bal"], (tpr + 1 - fpr) / 2)
        best["adv"] = max(best["adv"], tpr - fpr)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_metrics_match_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random(3000) < 0.5
    # Rounded scores create ties; members are shifted up a little.
    scores = np.round(rng.normal(size=3000) + 0.4 * truth, 1 if seed % 2 else 3)
    metrics = compute_metrics(scores, truth)
    assert metrics.auc == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    expected = brute_force(scores, truth)
    assert metrics.tpr_at_0_1_fpr == pytest.approx(expected["tpr@0.001"])
    assert metrics.tpr_at_1_fpr == pytest.approx(expected["tpr@0.01"])
    assert metrics.balanced_accuracy == pytest.approx(expected["bal"])
    assert metrics.advantage == pytest.approx(expected["adv"])
    assert (metrics.n_members, metrics.n_nonmembers) == (truth.sum(), (~truth).sum())
    fpr, tpr, _ = roc(scores, truth)
    sk_fpr, sk_tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    assert np.array_equal(fpr, sk_fpr) and np.array_equal(tpr, sk_tpr)


def test_tpr_at_fpr_uses_only_points_within_the_budget():
    fpr = np.array([0.0, 0.0005, 0.002, 0.02, 1.0])
    tpr = np.array([0.0, 0.1, 0.3, 0.6, 1.0])
    assert tpr_at_fpr(fpr, tpr, 1e-3) == 0.1
    assert tpr_at_fpr(fpr, tpr, 1e-2) == 0.3


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
    # With zero errors the bound is log(TPR_lo / FPR_hi) for Clopper-Pearson at 95%.
    n = 10000
    tpr_lo = (0.025) ** (1 / n)
    fpr_hi = 1 - 0.025 ** (1 / n)
    assert bounds[2] == pytest.approx(np.log((tpr_lo - 1e-5) / fpr_hi), rel=1e-6)


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
        ([0.1, 0.2, 0.3], [True, False], "3 scores but 2"),
    ],
)
def test_bad_inputs_are_rejected(scores, truth, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(np.array(scores), np.array(truth))


def test_infinite_scores_still_rank():
    metrics = compute_metrics(np.array([np.inf, 1.0, -np.inf, 0.0]), np.array([1, 1, 0, 0]))
    assert metrics.auc == 1.0


def test_report_files_are_written_atomically(tmp_path):
    fpr, tpr, _ = roc_curve([0, 1, 0, 1, 1], [0.1, 0.9, 0.3, 0.2, 0.8])
    plot_roc({"loss": (fpr, tpr, 0.83)}, tmp_path / "roc.png", title="test")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_json_atomic(tmp_path / "r.json", {"b": [1, 2], "a": 0.5})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 0.5, "b": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "roc.png"]
