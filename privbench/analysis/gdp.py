"""A two-sided ε estimate from an attack's ROC through Gaussian differential privacy (f-DP).

Under μ-GDP (Dong, Roth & Su, "Gaussian Differential Privacy", JRSS-B 2022) every membership
test satisfies ``TPR <= Φ(Φ⁻¹(FPR) + μ)``, so each threshold of an attack gives the μ it
demonstrates, ``Φ⁻¹(TPR) - Φ⁻¹(FPR)``. DP-SGD is close to GDP (their central limit theorem),
which is why auditing tools (PrivacyGuard, privacy-estimates) report the ROC's GDP fit beside the
hypothesis-testing lower bound of :mod:`privbench.analysis.metrics`. privbench:

1. chooses the threshold with the largest μ on one half of the scores (the same seeded halves
   as ``epsilon_lower``), among thresholds whose FPR has at least :data:`MIN_FALSE_POSITIVES`
   false positives and at most 0.5, so that μ is not read off one or two samples; where no
   such threshold misses a member (a near-perfect attack), the one whose Clopper-Pearson
   bounds there demonstrate the largest μ;
2. on the other half, takes two-sided Clopper-Pearson intervals of that test's TPR and FPR at
   ``confidence`` and turns them into ``μ_low = Φ⁻¹(TPR_low) - Φ⁻¹(FPR_high)`` (at least 0),
   the point ``μ``, and ``μ_high = Φ⁻¹(TPR_high) - Φ⁻¹(FPR_low)``;
3. converts each μ to ε at ``delta`` by the exact GDP-to-(ε, δ) duality (their Corollary 2.13):
   ``δ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2)``.

The interval is for the μ (and ε) *this attack* demonstrates; it says "at least μ_low" about the
training algorithm only if the algorithm is GDP-shaped (Gaussian-like tails). For a mechanism
with other tails (the Laplace mechanism) it is an estimate, not a bound: the tests check both.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from privbench.analysis.binomial import SplitHalves, clopper_pearson

MIN_FALSE_POSITIVES = 10
"""A test is chosen among thresholds with at least this many false positives on the selection
half: Φ⁻¹ of a rate near 0 grows without bound, and one or two samples would decide μ."""


@attrs.frozen
class GDPEstimate:
    mu: float
    mu_low: float
    mu_high: float
    epsilon: float
    epsilon_low: float
    epsilon_high: float


def delta_of(mu: float, epsilon: float) -> float:
    """The δ at which μ-GDP implies (ε, δ)-DP (Dong, Roth & Su, Corollary 2.13)."""
    from scipy.stats import norm  # on use: scipy takes most of a second to import

    if mu <= 0:
        return 0.0
    return float(
        norm.cdf(-epsilon / mu + mu / 2) - math.exp(epsilon) * norm.cdf(-epsilon / mu - mu / 2)
    )


def epsilon_of(mu: float, delta: float) -> float:
    """The smallest ε with μ-GDP ⟹ (ε, δ)-DP: 0 for μ = 0, ``inf`` for μ = ``inf``."""
    if not mu > 0:
        return 0.0
    if not math.isfinite(mu):
        return math.inf
    if delta_of(mu, 0.0) <= delta:
        return 0.0
    high = 1.0
    while delta_of(mu, high) > delta:  # δ(ε) decreases in ε
        high *= 2
        if high > 1e4:
            return math.inf
    from scipy.optimize import brentq

    return float(brentq(lambda e: delta_of(mu, e) - delta, 0.0, high, xtol=1e-10))


def gdp_estimate(
    scores: np.ndarray,
    truth: np.ndarray,
    *,
    delta: float = 1e-5,
    confidence: float = 0.95,
    seed: int = 0,
    halves: SplitHalves | None = None,
) -> GDPEstimate:
    """μ and ε with their two-sided intervals from *scores* (higher = member) and *truth*.
    *halves*: the split already made (:func:`~privbench.analysis.metrics.compute_metrics`
    shares it with ``epsilon_lower``)."""
    from scipy.stats import norm

    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)
    nothing = GDPEstimate(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    halves = halves or SplitHalves.of(scores, truth, seed)
    if halves is None:
        return nothing
    fpr, tpr = halves.fpr, halves.tpr
    usable = (fpr * halves.nonmembers >= MIN_FALSE_POSITIVES - 0.5) & (fpr <= 0.5) & (tpr < 1)
    with np.errstate(divide="ignore", invalid="ignore"):  # Φ⁻¹(0 or 1): masked out
        if usable.any():
            demonstrated = np.where(usable, norm.ppf(tpr) - norm.ppf(fpr), -np.inf)
        else:
            # Every threshold with enough false positives flags every member (a near-perfect
            # attack, or too few non-members): the test is the one with the largest μ that
            # Clopper-Pearson bounds allow on the selection half, which stays finite there.
            tpr_low, _ = clopper_pearson(tpr * halves.members, halves.members, confidence)
            _, fpr_high = clopper_pearson(fpr * halves.nonmembers, halves.nonmembers, confidence)
            demonstrated = np.nan_to_num(norm.ppf(tpr_low) - norm.ppf(fpr_high), nan=-np.inf)
            if not demonstrated.max() > 0:
                return nothing
    threshold = halves.thresholds[int(np.argmax(demonstrated))]
    hits, members, false_alarms, non_members = halves.counts_at(threshold)
    (tpr_low,), (tpr_high,) = clopper_pearson([hits], members, confidence)
    (fpr_low,), (fpr_high,) = clopper_pearson([false_alarms], non_members, confidence)

    def mu_of(true_positive: float, false_positive: float) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(max(0.0, norm.ppf(true_positive) - norm.ppf(false_positive)))

    mu = mu_of(hits / members, false_alarms / non_members)
    mu_low, mu_high = mu_of(tpr_low, fpr_high), mu_of(tpr_high, fpr_low)
    return GDPEstimate(
        mu=mu,
        mu_low=mu_low,
        mu_high=mu_high,
        epsilon=epsilon_of(mu, delta),
        epsilon_low=epsilon_of(mu_low, delta),
        epsilon_high=epsilon_of(mu_high, delta),
    )
