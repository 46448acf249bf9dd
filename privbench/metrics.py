"""Membership-inference metrics from scores (higher = member) and the truth.

ROC and AUC come from scikit-learn. TPR at a fixed low FPR follows Carlini et al. (LiRA, 2022):
the largest TPR among ROC points whose FPR does not exceed it. With fewer than ``1/fpr``
non-members that reflects only thresholds with no false positive at all.

The empirical epsilon follows the hypothesis-testing view of DP (Kairouz et al. 2015) as used
by Jagielski et al. 2020 and Nasr et al. 2021: for an (eps, delta)-DP training algorithm every
test satisfies ``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps (1 - TPR) + delta``, so each
threshold's (TPR, FPR) bounds eps from below. ``epsilon_lower`` replaces TPR and FPR by their
Clopper-Pearson bounds (lower for TPR, upper for FPR); ``epsilon_estimate`` uses the point
estimates. Honest caveats: the threshold is chosen on the same scores (optimistic), and in LiRA's
game the samples are not independently inserted canaries, so this is an empirical indication of
leakage, not a formal privacy audit.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from scipy.stats import beta
from sklearn.metrics import roc_auc_score, roc_curve


@attrs.frozen
class AttackMetrics:
    auc: float
    tpr_at_0_1_fpr: float
    tpr_at_1_fpr: float
    balanced_accuracy: float
    advantage: float
    epsilon_lower: float
    epsilon_estimate: float
    n_members: int
    n_nonmembers: int

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _validate(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    truth = np.asarray(is_member).astype(bool).reshape(-1)
    if scores.shape != truth.shape:
        raise ValueError(f"{scores.shape[0]} scores but {truth.shape[0]} membership labels")
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} membership scores are NaN")
    if truth.all() or not truth.any():
        raise ValueError("metrics need both members and non-members")
    infinite = np.isinf(scores)
    if infinite.any():
        # Only order matters: put infinities just beyond the finite range (sklearn refuses them).
        finite = scores[~infinite]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        scores = np.where(
            scores == np.inf, high + 1.0, np.where(scores == -np.inf, low - 1.0, scores)
        )
    return scores, truth


def roc(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` at every distinct score (no points dropped)."""
    scores, truth = _validate(scores, is_member)
    return roc_curve(truth, scores, drop_intermediate=False)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """The largest TPR among ROC points with FPR <= *max_fpr*."""
    return float(tpr[fpr <= max_fpr].max(initial=0.0))


def clopper_pearson(
    successes: np.ndarray, trials: int, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval ``(lower, upper)`` for a binomial proportion."""
    alpha = 1.0 - confidence
    k = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lower = np.where(k > 0, beta.ppf(alpha / 2, k, trials - k + 1), 0.0)
        upper = np.where(k < trials, beta.ppf(1 - alpha / 2, k + 1, trials - k), 1.0)
    return lower, upper


def _epsilon(tpr: np.ndarray, fpr: np.ndarray, delta: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(np.clip(tpr - delta, 0, None) / fpr)
        second = np.log(np.clip(1 - fpr - delta, 0, None) / (1 - tpr))
    candidates = np.concatenate([first, second])
    candidates = candidates[np.isfinite(candidates)]
    return float(max(0.0, candidates.max(initial=0.0)))


def compute_metrics(
    scores: np.ndarray, is_member: np.ndarray, *, delta: float = 1e-5, confidence: float = 0.95
) -> AttackMetrics:
    scores, truth = _validate(scores, is_member)
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    n_members, n_nonmembers = int(truth.sum()), int((~truth).sum())
    tpr_lo, _ = clopper_pearson(np.rint(tpr * n_members), n_members, confidence)
    _, fpr_hi = clopper_pearson(np.rint(fpr * n_nonmembers), n_nonmembers, confidence)
    return AttackMetrics(
        auc=float(roc_auc_score(truth, scores)),
        tpr_at_0_1_fpr=tpr_at_fpr(fpr, tpr, 1e-3),
        tpr_at_1_fpr=tpr_at_fpr(fpr, tpr, 1e-2),
        balanced_accuracy=float(np.max((tpr + 1 - fpr) / 2)),
        advantage=float(np.max(tpr - fpr)),
        epsilon_lower=_epsilon(tpr_lo, fpr_hi, delta),
        epsilon_estimate=_epsilon(tpr, fpr, delta),
        n_members=n_members,
        n_nonmembers=n_nonmembers,
    )
