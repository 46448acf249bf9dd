"""Feldman-Zhang memorization from a pool of models trained on random subsets.

Feldman (2019) defines the memorization of sample ``i`` by a training algorithm ``A`` on ``S`` as

    ``mem(A, S, i) = Pr[h(x_i) = y_i | h <- A(S)] - Pr[h(x_i) = y_i | h <- A(S \\ i)]``,

and Feldman & Zhang (NeurIPS 2020, "What Neural Network Memorizes and Why") estimate it from
``K`` models each trained on a random subset: the accuracy on ``x_i`` of the models whose subset
held ``i`` minus that of the others. With privbench's pool (:mod:`privbench.engine.splits`,
each model on a random half of the population) this estimates memorization for training sets of
half the population, as Feldman & Zhang's estimate does for their subset ratio (0.7).

The standard error is that of a difference of two independent proportions,
``sqrt(p_in (1 - p_in) / n_in + p_out (1 - p_out) / n_out)``: the plug-in (Wald) estimate, which
is 0 where both accuracies are 0 or 1 and is trustworthy only with a few dozen models per side.

Ravikumar et al. (ICML 2024, Theorem 5.1 and Section 6.3) link this score to input-loss curvature;
:func:`rank_correlation` measures that link empirically.
"""

from __future__ import annotations

import attrs
import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import spearmanr


@attrs.frozen(eq=False)
class MemorizationEstimate:
    """Per-sample memorization (``N`` values each).

    ``score``, ``standard_error``, ``accuracy_in`` and ``accuracy_out`` are NaN where a sample
    has no model that trained on it (``n_in == 0``) or none that did not (``n_out == 0``); the
    accuracy of the side that does have models is kept.
    """

    score: np.ndarray
    """``accuracy_in - accuracy_out``, in [-1, 1]."""
    standard_error: np.ndarray
    accuracy_in: np.ndarray
    """Fraction of the models that trained on the sample and classify it correctly."""
    accuracy_out: np.ndarray
    """The same among models that did not train on it."""
    n_in: np.ndarray
    """How many models trained on each sample (int)."""
    n_out: np.ndarray
    """How many did not (int)."""


def _boolean_matrix(name: str, value: ArrayLike) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a K x N matrix (models x samples), got {array.ndim}-D")
    # astype(bool) would quietly turn a 2 or a NaN into True.
    if array.dtype != np.bool_ and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or 0/1")
    return array.astype(bool)


def memorization(correct: ArrayLike, keep: ArrayLike) -> MemorizationEstimate:
    """Feldman & Zhang's memorization estimate of every sample from a pool of ``K`` models.

    *correct* and *keep* are ``K x N`` booleans: model ``k`` classifies sample ``n`` correctly,
    and sample ``n`` was in model ``k``'s training set (the engine's keep masks).
    """
    correct = _boolean_matrix("correct", correct)
    keep = _boolean_matrix("keep", keep)
    if correct.shape != keep.shape:
        raise ValueError(f"correct has shape {correct.shape} but keep has shape {keep.shape}")
    n_in = keep.sum(axis=0)
    n_out = keep.shape[0] - n_in
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 -> NaN is the documented result
        p_in = (correct & keep).sum(axis=0) / n_in
        p_out = (correct & ~keep).sum(axis=0) / n_out
        error = np.sqrt(p_in * (1.0 - p_in) / n_in + p_out * (1.0 - p_out) / n_out)
    return MemorizationEstimate(
        score=p_in - p_out,
        standard_error=error,
        accuracy_in=p_in,
        accuracy_out=p_out,
        n_in=n_in,
        n_out=n_out,
    )


def rank_correlation(a: ArrayLike, b: ArrayLike) -> tuple[float, float]:
    """Spearman's rank correlation of two per-sample scores and its two-sided p-value.

    Pairs where either value is NaN are dropped (infinities rank at the ends). At least 3 pairs
    are needed; where either score is constant over them the correlation is undefined and
    ``(nan, nan)`` comes back. Used to check that memorization rises with input-loss curvature
    (Ravikumar et al., ICML 2024, Section 6.3).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"need two 1-D scores of equal length, got shapes {a.shape} and {b.shape}")
    both = ~(np.isnan(a) | np.isnan(b))
    if both.sum() < 3:
        raise ValueError(f"rank correlation needs at least 3 pairs without NaN, got {both.sum()}")
    a, b = a[both], b[both]
    if (a == a[0]).all() or (b == b[0]).all():
        return float("nan"), float("nan")
    result = spearmanr(a, b)
    return float(result.statistic), float(result.pvalue)
