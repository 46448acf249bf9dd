"""Exact binomial intervals and the seeded halves that the ε estimates share: the hypothesis-
testing lower bound (:mod:`privbench.analysis.metrics`) and the Gaussian-DP fit
(:mod:`privbench.analysis.gdp`) both choose a test on one half of the scores and evaluate it with
Clopper-Pearson intervals on the other."""

from __future__ import annotations

from typing import Any

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
