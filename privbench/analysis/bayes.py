"""A two-sided Bayesian ε estimate of one membership test (Zanella-Béguelin et al., "Bayesian
Estimation of Differential Privacy", ICML 2023).

A threshold test on the scores makes ``FP`` false positives among ``N`` non-members and ``FN``
false negatives among ``P`` members. Under (ε, δ)-DP every test satisfies
``FPR + e^ε FNR >= 1 - δ`` and ``FNR + e^ε FPR >= 1 - δ`` (Kairouz et al. 2015), so the test's
rates demonstrate ``ε(FPR, FNR) = max(log((1-δ-FPR)/FNR), log((1-δ-FNR)/FPR), 0)``: the two
inequalities ``epsilon_lower`` uses (:mod:`privbench.analysis.metrics`). The paper puts a
posterior on the rates and pushes it through ``ε(FPR, FNR)``; privbench:

1. **prior**: Jeffreys, ``Beta(1/2, 1/2)`` on each rate, as the paper's ``joint-beta`` model, so
   the posterior is ``FPR ~ Beta(FP + 1/2, N - FP + 1/2)`` and, independently,
   ``FNR ~ Beta(FN + 1/2, P - FN + 1/2)``. δ is the ``delta`` of ``compute_metrics`` (1e-5 by
   default), as for the other ε estimates;
2. **test**: chosen on the selection half of the same seeded halves as ``epsilon_lower`` and the
   GDP fit (:class:`~privbench.analysis.binomial.SplitHalves`), and counted on the other half.
   It is the test ``epsilon_lower`` evaluates, the threshold with the largest Clopper-Pearson
   lower bound on ε, for two reasons: the paper's code also keeps the threshold whose interval
   has the largest lower end, and a lower bound prefers thresholds with enough samples, where
   the largest point estimate would prefer one with two or three errors, whose posterior is
   mostly prior. When no lower bound is positive on the selection half (an attack at chance),
   the best of them is a threshold flagging none, or all but a few, of the samples, and its few
   errors would leave a posterior as wide as 0 to 4; the test is then the equal-error one
   (``FPR`` closest to ``FNR`` there, as ``balanced_accuracy_at_eer``), which flags about half
   the samples and so has the narrowest posterior near 0. Constant scores, whose only tests
   flag no sample or all of them, give 0;
3. **posterior of ε**: ``P(ε <= e)`` is the posterior mass of the (e, δ)-DP region, as in the
   paper, by numerical integration, not sampling (deterministic, no seed): given ``FNR = y``
   the region is ``FPR >= max(0, 1-δ-e^e y, (1-δ-y) e^-e)``, whose probability is a regularized
   incomplete beta function, exactly; the outer integral over ``FNR`` is a 64-point
   Gauss-Legendre rule in its posterior CDF. It is within 5e-5 of scipy's two-dimensional
   quadrature (``tests/test_bayes_epsilon.py``), about 1e-4 in the quantiles (1% of the upper
   end for a test with no errors at all, whose posterior has a heavy upper tail);
4. **interval and point**: the equal-tailed credible interval at ``confidence`` (the 2.5% and
   97.5% posterior quantiles at 95%, as the paper's ``eps_lo_hi``, not the highest-density
   interval) and the posterior median as the point, so ``low <= point <= high`` always. The
   quantiles are found by Brent's method to 1e-6, in about 1 ms for the three.

The interval is for the ε that *this test* demonstrates, a Bayesian estimate of it: not a lower
bound on the training algorithm's ε (``epsilon_lower`` is), nor an upper bound on it, since
another test may demonstrate more. On the Laplace mechanism with ε = 1 it holds the chosen
test's ε (at most 1) in all 20 seeds of the tests, and its median is near 1.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import attrs
import numpy as np
from numpy.typing import ArrayLike

from privbench.analysis.binomial import SplitHalves

PRIOR = 0.5
"""Both parameters of the Beta prior on each rate: Jeffreys' prior."""
NODES = 64
"""Gauss-Legendre points of the integral over the false-negative rate's posterior."""
XTOL = 1e-6
"""How closely the quantiles of ε are found."""
MAX_EPSILON = 700.0
"""Where the search for a quantile stops: ``e^ε`` overflows past about 709."""


@attrs.frozen
class BayesEstimate:
    epsilon: float
    """The posterior median of ε."""
    epsilon_low: float
    epsilon_high: float
    threshold: float | None = None
    """The test ``score >= threshold`` (None: none could be made)."""


def epsilon_of_rates(fpr: ArrayLike, fnr: ArrayLike, delta: float) -> np.ndarray:
    """The ε a test with these rates demonstrates at *delta* (``inf`` at a zero rate facing a
    positive numerator): the two DP inequalities, at least 0."""
    fpr, fnr = np.asarray(fpr, dtype=np.float64), np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(np.clip(1 - delta - fpr, 0, None) / fnr)
        second = np.log(np.clip(1 - delta - fnr, 0, None) / fpr)
    both = np.stack([first, second])
    both[np.isnan(both)] = -np.inf  # 0/0: that inequality holds at every ε
    return np.maximum(both.max(axis=0), 0.0)


@functools.cache
def _legendre() -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre points and weights on (0, 1)."""
    points, weights = np.polynomial.legendre.leggauss(NODES)
    return (points + 1) / 2, weights / 2


def _special() -> Any:
    """scipy.special, imported on use (scipy takes most of a second to import)."""
    from scipy import special

    return special


def posterior_cdf(
    epsilon: float,
    false_positives: int,
    negatives: int,
    false_negatives: int,
    positives: int,
    delta: float,
) -> float:
    """``P(ε(FPR, FNR) <= epsilon)`` under the Jeffreys posterior of the two rates."""
    return _posterior(false_positives, negatives, false_negatives, positives, delta)(epsilon)


def _posterior(
    false_positives: int, negatives: int, false_negatives: int, positives: int, delta: float
) -> Any:
    special = _special()
    a_fpr, b_fpr = false_positives + PRIOR, negatives - false_positives + PRIOR
    points, weights = _legendre()
    fnr = special.betaincinv(false_negatives + PRIOR, positives - false_negatives + PRIOR, points)

    def cdf(epsilon: float) -> float:
        # P(FPR >= L) = I_{1-L}(b, a): betainc, about 15 times faster than betaincc.
        grow = math.exp(epsilon)
        above = np.minimum(np.minimum(delta + grow * fnr, 1 - (1 - delta - fnr) / grow), 1.0)
        return float(special.betainc(b_fpr, a_fpr, above) @ weights)

    return cdf


def posterior_quantiles(
    probabilities: ArrayLike,
    false_positives: int,
    negatives: int,
    false_negatives: int,
    positives: int,
    delta: float,
) -> np.ndarray:
    """The posterior quantiles of ε at *probabilities* (each in (0, 1))."""
    from scipy.optimize import brentq

    special = _special()
    cdf = _posterior(false_positives, negatives, false_negatives, positives, delta)
    at_zero = cdf(0.0)  # the posterior mass of ε = 0
    out = []
    for p in np.asarray(probabilities, dtype=np.float64).reshape(-1):
        if at_zero >= p:
            out.append(0.0)
            continue
        # ε > e needs FPR < e^-e or FNR < e^-e: a bracket from the two rates' own quantiles.
        tail = (1 - p) / 2
        smallest = min(
            special.betaincinv(false_positives + PRIOR, negatives - false_positives + PRIOR, tail),
            special.betaincinv(false_negatives + PRIOR, positives - false_negatives + PRIOR, tail),
        )
        high = min(max(-math.log(smallest), 1e-3), MAX_EPSILON)
        while cdf(high) < p and high < MAX_EPSILON:  # the quadrature may fall just short
            high = min(2 * high, MAX_EPSILON)
        out.append(float(brentq(lambda e, p=p: cdf(e) - p, 0.0, high, xtol=XTOL)))
    return np.asarray(out)


def _chosen_threshold(halves: SplitHalves, test: tuple[int, float, float] | None) -> float | None:
    """The threshold of :func:`bayes_estimate`'s test (None: none but a trivial one)."""
    if test is not None and test[2] > 0:
        return test[1]
    fpr, tpr = halves.fpr, halves.tpr
    usable = ~(((fpr == 0) & (tpr == 0)) | ((fpr == 1) & (tpr == 1)))  # flags none or all
    if not usable.any():
        return None
    return float(halves.thresholds[int(np.argmin(np.where(usable, abs(fpr + tpr - 1), np.inf)))])


def bayes_estimate(
    halves: SplitHalves | None,
    test: tuple[int, float, float] | None,
    *,
    delta: float = 1e-5,
    confidence: float = 0.95,
) -> BayesEstimate:
    """ε's posterior median and equal-tailed credible interval at *confidence* for the test
    chosen on *halves* (:meth:`SplitHalves.of <privbench.analysis.binomial.SplitHalves.of>`),
    counted on its evaluation half. *test* is the test ``epsilon_lower`` chose there
    (:func:`~privbench.analysis.metrics.lower_bound_test`, which
    :func:`~privbench.analysis.metrics.compute_metrics` makes once for both)."""
    nothing = BayesEstimate(0.0, 0.0, 0.0)
    if halves is None:
        return nothing
    threshold = _chosen_threshold(halves, test)
    if threshold is None:
        return nothing
    hits, members, false_alarms, non_members = halves.counts_at(threshold)
    tail = (1 - confidence) / 2
    low, median, high = posterior_quantiles(
        [tail, 0.5, 1 - tail], false_alarms, non_members, members - hits, members, delta
    )
    return BayesEstimate(float(median), float(low), float(high), threshold)
