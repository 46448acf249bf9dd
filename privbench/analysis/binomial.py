"""Exact binomial intervals and the seeded halves that the ε estimates share: the hypothesis-
testing lower bound (:mod:`privbench.analysis.metrics`) and the Gaussian-DP fit
(:mod:`privbench.analysis.gdp`) both choose a test on one half of the scores and evaluate it with
Clopper-Pearson intervals on the other."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from numpy.typing import ArrayLike


def _beta() -> Any:
    """scipy's beta distribution, imported on use (scipy takes most of a second)."""
    from scipy.stats import beta

    return beta


def _lower(k: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # beta.ppf at k = 0 is NaN, replaced by np.where
        return np.where(k > 0, _beta().ppf(alpha / 2, k, trials - k + 1), 0.0)


def _upper(k: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # isf keeps precision for upper bounds near 0
        return np.where(k < trials, _beta().isf(alpha / 2, k + 1, trials - k), 1.0)


def clopper_pearson(
    successes: ArrayLike, trials: int, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval ``(lower, upper)``: exact, so valid at tiny counts."""
    k = np.asarray(successes, dtype=np.float64)
    return _lower(k, trials, 1.0 - confidence), _upper(k, trials, 1.0 - confidence)


def split_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The selection and evaluation halves of ``epsilon_lower``: a seeded random permutation of
    ``range(n)``, its first ``n // 2`` entries selecting the test and the rest evaluating it."""
    order = np.random.default_rng(seed).permutation(n)
    return order[: n // 2], order[n // 2 :]


@attrs.frozen(eq=False)
class SplitHalves:
    """Scores split by :func:`split_halves`: the selection half's ROC, on which a test is chosen,
    and the evaluation half, on which the chosen test's hits and false alarms are counted."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    members: int
    """Members in the selection half (``nonmembers`` likewise)."""
    nonmembers: int
    scores: np.ndarray
    """The evaluation half's scores, with ``truth``."""
    truth: np.ndarray

    @classmethod
    def of(cls, scores: np.ndarray, truth: np.ndarray, seed: int = 0) -> SplitHalves | None:
        """The halves of *scores* (higher = member), or None when either half lacks members or
        non-members: no test can then be chosen or counted."""
        from sklearn.metrics import roc_curve  # on use: scikit-learn takes a second to import

        select, evaluate = split_halves(len(scores), seed)
        for half in (select, evaluate):
            if truth[half].all() or not truth[half].any():
                return None
        s_truth = truth[select]
        fpr, tpr, thresholds = roc_curve(s_truth, scores[select], drop_intermediate=False)
        return cls(fpr, tpr, thresholds, int(s_truth.sum()), int((~s_truth).sum()),
                   scores[evaluate], truth[evaluate])  # fmt: skip

    def counts_at(self, threshold: float) -> tuple[int, int, int, int]:
        """``(hits, members, false alarms, non-members)`` of the test ``score >= threshold`` on
        the evaluation half."""
        flagged = self.scores >= threshold
        return (
            int((flagged & self.truth).sum()),
            int(self.truth.sum()),
            int((flagged & ~self.truth).sum()),
            int((~self.truth).sum()),
        )
