"""Membership-inference metrics from scores (higher = member) and the truth.

ROC and AUC come from scikit-learn. TPR at a fixed low FPR follows Carlini et al. (LiRA, 2022):
the largest TPR among ROC points whose FPR does not exceed it. With fewer than ``1/fpr``
non-members that reflects only thresholds with no false positive at all.

The empirical epsilon follows the hypothesis-testing view of DP (Kairouz et al. 2015) as used
by Jagielski et al. 2020 and Nasr et al. 2021: for an (eps, delta)-DP training algorithm every
test satisfies ``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps (1 - TPR) + delta``, so each
threshold's (TPR, FPR) bounds eps from below.

- ``epsilon_lower`` is a statistically honest lower bound: the threshold (and which of the two
  inequalities) is chosen on a random half of the scores, and the Clopper-Pearson bounds at
  ``confidence`` (lower for TPR, upper for FPR) are taken on the other half, as auditing work
  separates the choice of test from its evaluation (Jagielski et al. 2020). Picking the best of
  thousands of thresholds on the same scores would overstate it (by about 0.3 on a million
  samples of a weak attack).
- ``epsilon_estimate`` is the point estimate, maximised over all thresholds of all scores:
  optimistic, for comparison.
- ``epsilon_gdp`` with ``epsilon_gdp_low`` and ``epsilon_gdp_high`` is the two-sided estimate
  of the Gaussian-DP (f-DP) fit of the ROC (:mod:`privbench.analysis.gdp`), with ``gdp_mu``.
- ``epsilon_bayes`` with ``epsilon_bayes_low`` and ``epsilon_bayes_high`` is the posterior median
  and credible interval of the ε that ``epsilon_lower``'s test demonstrates, from its counts on
  the evaluation half (Zanella-Béguelin et al. 2023, :mod:`privbench.analysis.bayes`).

Caveat for both: in LiRA's game the samples are not independently inserted canaries, so this is an
empirical indication of leakage, not a formal audit of a DP guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
from numpy.typing import ArrayLike

from privbench.analysis.bayes import bayes_estimate
from privbench.analysis.binomial import SplitHalves, _lower, _upper
from privbench.analysis.gdp import gdp_estimate


@attrs.frozen
class AttackMetrics:
    """One attack's summary; plain floats and ints so it stores as JSON and SQL as is."""

    auc: float
    tpr_at_0_1_fpr: float
    tpr_at_1_fpr: float
    tpr_at_0_01_fpr: float
    balanced_accuracy: float
    balanced_accuracy_at_eer: float
    """Accuracy at the threshold minimising |FPR + TPR - 1|, as Curvature Clues reports it."""
    advantage: float
    epsilon_lower: float
    epsilon_estimate: float
    n_members: int
    n_nonmembers: int
    gdp_mu: float = math.nan
    """The μ of Gaussian DP the attack demonstrates (:mod:`privbench.analysis.gdp`)."""
    epsilon_gdp: float = math.nan
    """ε at ``delta`` of that μ, with its two-sided 95% interval ``epsilon_gdp_low`` to
    ``epsilon_gdp_high``: an estimate, two-sided, beside the one-sided ``epsilon_lower``."""
    epsilon_gdp_low: float = math.nan
    epsilon_gdp_high: float = math.nan
    epsilon_bayes: float = math.nan
    """The posterior median of the ε ``epsilon_lower``'s test demonstrates (Jeffreys prior on its
    rates, :mod:`privbench.analysis.bayes`), with the equal-tailed 95% credible interval
    ``epsilon_bayes_low`` to ``epsilon_bayes_high``: an estimate, two-sided."""
    epsilon_bayes_low: float = math.nan
    epsilon_bayes_high: float = math.nan
    epsilon_one_run: float | None = None
    """A one-run audit's ε lower bound from this attack's canary scores (Steinke et al.,
    :mod:`privbench.analysis.one_run`); None in LiRA's game."""

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


# scikit-learn and scipy.stats take most of a second to import: on use, so that reading results
# (and starting the command line) does not pay for them.
def roc_curve(*args: Any, **kwargs: Any) -> Any:
    from sklearn.metrics import roc_curve as sklearn_roc_curve

    return sklearn_roc_curve(*args, **kwargs)


def roc_auc_score(*args: Any, **kwargs: Any) -> Any:
    from sklearn.metrics import roc_auc_score as sklearn_roc_auc_score

    return sklearn_roc_auc_score(*args, **kwargs)


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


def roc_points(fpr: np.ndarray, tpr: np.ndarray, points: int = 200) -> dict[str, list[float]]:
    """A compact ROC for storage: TPR on *points* log-spaced FPRs from the smallest non-zero FPR
    to 1, each the largest TPR among ROC points at or below that FPR (as :func:`tpr_at_fpr`),
    so a curve redrawn from it never claims more than the attack achieved."""
    fpr = np.asarray(fpr, dtype=np.float64)
    positive = fpr[fpr > 0]
    floor = positive.min() if positive.size else 1.0
    grid = np.unique(np.concatenate([[0.0], np.logspace(np.log10(floor), 0.0, points)]))
    values = tpr_on_grid(fpr, tpr, grid)
    return {"fpr": np.round(grid, 8).tolist(), "tpr": np.round(values, 6).tolist()}


def tpr_on_grid(fpr: ArrayLike, tpr: ArrayLike, grid: ArrayLike) -> np.ndarray:
    """At each FPR of *grid*, the largest TPR among ROC points at or below it (0 below them
    all): :func:`tpr_at_fpr` on a whole grid, never above what the curve achieved."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    order = np.argsort(fpr, kind="stable")
    best = np.maximum.accumulate(tpr[order])
    at = np.searchsorted(fpr[order], np.asarray(grid, dtype=np.float64), side="right") - 1
    return np.where(at >= 0, best[np.clip(at, 0, None)], 0.0)


def _per_count(
    bound: Callable[[np.ndarray, int, float], np.ndarray], rate: np.ndarray, n: int, alpha: float
) -> np.ndarray:
    """*bound* at each ROC point's count; beta quantiles are slow, so once per distinct count."""
    # roc_curve divides the counts by their totals; rint recovers them exactly.
    counts, inverse = np.unique(np.rint(rate * n), return_inverse=True)
    return bound(counts, n, alpha)[inverse]


def _epsilon_candidates(tpr: np.ndarray, fpr: np.ndarray, delta: float) -> np.ndarray:
    """``2 x thresholds``: the eps each DP inequality needs at each threshold (-inf: none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(np.clip(tpr - delta, 0, None) / fpr)
        second = np.log(np.clip(1 - fpr - delta, 0, None) / (1 - tpr))
    candidates = np.stack([first, second])
    candidates[~np.isfinite(candidates)] = -np.inf
    return candidates


def _confidence_bounds(
    tpr: np.ndarray, fpr: np.ndarray, n_members: int, n_nonmembers: int, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    alpha = 1.0 - confidence
    return (
        _per_count(_lower, tpr, n_members, alpha),
        _per_count(_upper, fpr, n_nonmembers, alpha),
    )


def lower_bound_test(
    halves: SplitHalves, delta: float, confidence: float
) -> tuple[int, float, float] | None:
    """The test ``epsilon_lower`` evaluates, chosen on the selection half of *halves*:
    ``(inequality, threshold, bound)``, the threshold and DP inequality (0: TPR, 1: TNR) with
    the largest Clopper-Pearson lower bound on eps there, not clipped at 0; None when no
    threshold bounds eps at all."""
    tpr_lo, fpr_hi = _confidence_bounds(
        halves.tpr, halves.fpr, halves.members, halves.nonmembers, confidence
    )
    candidates = _epsilon_candidates(tpr_lo, fpr_hi, delta)
    if not np.isfinite(candidates).any():
        return None
    inequality, best = np.unravel_index(np.argmax(candidates), candidates.shape)
    return int(inequality), float(halves.thresholds[best]), float(candidates[inequality, best])


def epsilon_lower_bound(
    scores: np.ndarray,
    truth: np.ndarray,
    *,
    delta: float = 1e-5,
    confidence: float = 0.95,
    seed: int = 0,
    halves: SplitHalves | None = None,
    test: tuple[int, float, float] | None = None,
) -> float:
    """Choose the test on one half (:func:`~privbench.analysis.binomial.split_halves`), bound
    eps with it on the other; *halves* is that split already made and *test* the test chosen
    on it (:func:`compute_metrics` shares both with the GDP fit and the Bayesian estimate)."""
    halves = halves or SplitHalves.of(scores, truth, seed)
    if halves is None:
        return 0.0
    test = test or lower_bound_test(halves, delta, confidence)
    if test is None:
        return 0.0
    inequality, threshold, _ = test
    hits, n_members, false_alarms, n_nonmembers = halves.counts_at(threshold)
    tpr_e = np.array([hits / n_members])
    fpr_e = np.array([false_alarms / n_nonmembers])
    tpr_lo_e, fpr_hi_e = _confidence_bounds(tpr_e, fpr_e, n_members, n_nonmembers, confidence)
    value = _epsilon_candidates(tpr_lo_e, fpr_hi_e, delta)[inequality, 0]
    return float(max(0.0, value))


def compute_metrics(
    scores: ArrayLike, is_member: ArrayLike, *, delta: float = 1e-5, confidence: float = 0.95
) -> AttackMetrics:
    """Every metric of *scores*; NaN scores are rejected, ``±inf`` rank above/below all."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    scores, truth = _validate(scores, is_member)
    ranked, _ = _rankable(scores)
    fpr, tpr, _ = roc_curve(truth, ranked, drop_intermediate=False)
    n_members, n_nonmembers = int(truth.sum()), int((~truth).sum())
    halves = SplitHalves.of(ranked, truth)  # one split and its ROC for the three ε estimates
    test = None if halves is None else lower_bound_test(halves, delta, confidence)
    gdp = gdp_estimate(ranked, truth, delta=delta, confidence=confidence, halves=halves)
    bayes = bayes_estimate(halves, test, delta=delta, confidence=confidence)
    return AttackMetrics(
        auc=float(roc_auc_score(truth, ranked)),
        tpr_at_0_1_fpr=tpr_at_fpr(fpr, tpr, 1e-3),
        tpr_at_1_fpr=tpr_at_fpr(fpr, tpr, 1e-2),
        tpr_at_0_01_fpr=tpr_at_fpr(fpr, tpr, 1e-4),
        balanced_accuracy=float(np.max((tpr + 1 - fpr) / 2)),
        balanced_accuracy_at_eer=float(((tpr + 1 - fpr) / 2)[np.argmin(np.abs(fpr + tpr - 1))]),
        advantage=float(np.max(tpr - fpr)),
        epsilon_lower=epsilon_lower_bound(
            ranked, truth, delta=delta, confidence=confidence, halves=halves, test=test
        ),
        epsilon_estimate=float(max(0.0, _epsilon_candidates(tpr, fpr, delta).max())),
        n_members=n_members,
        n_nonmembers=n_nonmembers,
        gdp_mu=gdp.mu,
        epsilon_gdp=gdp.epsilon,
        epsilon_gdp_low=gdp.epsilon_low,
        epsilon_gdp_high=gdp.epsilon_high,
        epsilon_bayes=bayes.epsilon,
        epsilon_bayes_low=bayes.epsilon_low,
        epsilon_bayes_high=bayes.epsilon_high,
    )
