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

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import beta
from sklearn.metrics import roc_auc_score, roc_curve


@attrs.frozen
class AttackMetrics:
    """One attack's summary; plain floats and ints so it stores as JSON and SQL as is."""

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


def _validate(scores: ArrayLike, is_member: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    truth = np.asarray(is_member).reshape(-1)
    if scores.shape != truth.shape:
        raise ValueError(f"{scores.shape[0]} scores but {truth.shape[0]} membership labels")
    # astype(bool) would quietly turn a label 2 or a NaN into "member".
    if truth.dtype != np.bool_ and not np.isin(truth, (0, 1)).all():
        raise ValueError("membership labels must be boolean or 0/1")
    truth = truth.astype(bool)
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} membership scores are NaN")
    if truth.all() or not truth.any():
        raise ValueError("metrics need both members and non-members")
    return scores, truth


def _rankable(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores sklearn accepts, plus the sorted distinct originals when they had to be ranked.

    sklearn refuses infinities, yet only the order matters: dense ranks keep it exactly, where
    replacing ``inf`` by ``max + 1`` would tie it with a finite score of 1e17.
    """
    if np.isfinite(scores).all():
        return scores, None
    values, ranks = np.unique(scores, return_inverse=True)
    return ranks.astype(np.float64), values


def roc(scores: ArrayLike, is_member: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` at every distinct score (no points dropped).

    ``thresholds[0]`` is sklearn's ``inf`` (nothing flagged); the others are original scores.
    """
    scores, truth = _validate(scores, is_member)
    ranked, values = _rankable(scores)
    fpr, tpr, thresholds = roc_curve(truth, ranked, drop_intermediate=False)
    if values is not None:
        thresholds = np.concatenate([thresholds[:1], values[thresholds[1:].astype(np.intp)]])
    return fpr, tpr, thresholds


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """The largest TPR among ROC points with FPR <= *max_fpr*, as in LiRA's code.

    With fewer than ``1/max_fpr`` non-members only zero-false-positive thresholds qualify.
    """
    return float(tpr[fpr <= max_fpr].max(initial=0.0))


def _lower(k: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # beta.ppf at k = 0 is NaN, replaced by np.where
        return np.where(k > 0, beta.ppf(alpha / 2, k, trials - k + 1), 0.0)


def _upper(k: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # isf keeps precision for upper bounds near 0
        return np.where(k < trials, beta.isf(alpha / 2, k + 1, trials - k), 1.0)


def clopper_pearson(
    successes: ArrayLike, trials: int, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval ``(lower, upper)``: exact, so valid at tiny counts."""
    k = np.asarray(successes, dtype=np.float64)
    return _lower(k, trials, 1.0 - confidence), _upper(k, trials, 1.0 - confidence)


def _per_count(
    bound: Callable[[np.ndarray, int, float], np.ndarray], rate: np.ndarray, n: int, alpha: float
) -> np.ndarray:
    """*bound* at each ROC point's count; beta quantiles are slow, so once per distinct count."""
    # roc_curve divides the counts by their totals; rint recovers them exactly.
    counts, inverse = np.unique(np.rint(rate * n), return_inverse=True)
    return bound(counts, n, alpha)[inverse]


def _epsilon(tpr: np.ndarray, fpr: np.ndarray, delta: float) -> float:
    """Largest eps that the DP inequalities need at any threshold; 0 when none needs one."""
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(np.clip(tpr - delta, 0, None) / fpr)
        second = np.log(np.clip(1 - fpr - delta, 0, None) / (1 - tpr))
    candidates = np.concatenate([first, second])
    candidates = candidates[np.isfinite(candidates)]  # zero FPR (or FNR) bounds nothing finite
    return float(max(0.0, candidates.max(initial=0.0)))


def compute_metrics(
    scores: ArrayLike, is_member: ArrayLike, *, delta: float = 1e-5, confidence: float = 0.95
) -> AttackMetrics:
    """Every metric over all thresholds of *scores*; NaN scores are rejected, ``±inf`` rank.

    ``epsilon_lower`` uses Clopper-Pearson intervals at *confidence* for each threshold, but the
    best threshold is picked on these same scores and LiRA's samples are not independent
    canaries: read it as an empirical indication (Jagielski et al. 2020, Nasr et al. 2021), not
    as a formal audit of a DP guarantee.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    scores, truth = _validate(scores, is_member)
    ranked, _ = _rankable(scores)
    fpr, tpr, _ = roc_curve(truth, ranked, drop_intermediate=False)
    n_members, n_nonmembers = int(truth.sum()), int((~truth).sum())
    tpr_lo = _per_count(_lower, tpr, n_members, 1.0 - confidence)
    fpr_hi = _per_count(_upper, fpr, n_nonmembers, 1.0 - confidence)
    return AttackMetrics(
        auc=float(roc_auc_score(truth, ranked)),
        tpr_at_0_1_fpr=tpr_at_fpr(fpr, tpr, 1e-3),
        tpr_at_1_fpr=tpr_at_fpr(fpr, tpr, 1e-2),
        balanced_accuracy=float(np.max((tpr + 1 - fpr) / 2)),
        advantage=float(np.max(tpr - fpr)),
        epsilon_lower=_epsilon(tpr_lo, fpr_hi, delta),
        epsilon_estimate=_epsilon(tpr, fpr, delta),
        n_members=n_members,
        n_nonmembers=n_nonmembers,
    )
