"""The Gaussian-DP fit of an attack's ROC (privbench.analysis.gdp): the duality against a
numerical integral, coverage on the Gaussian mechanism whose μ is known, and what it says of a
Laplace mechanism (an estimate, not a bound, for tails that are not Gaussian)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import laplace, norm

from privbench.analysis.gdp import MIN_FALSE_POSITIVES, delta_of, epsilon_of, gdp_estimate
from privbench.analysis.metrics import compute_metrics


def _delta_by_integration(mu: float, epsilon: float) -> float:
    """δ(ε) of N(0,1) vs N(μ,1) as the hockey-stick divergence, by quadrature."""
    x = np.linspace(-40, 40, 400_001)
    p, q = norm.pdf(x, loc=mu), norm.pdf(x)
    return float(np.trapezoid(np.clip(p - math.exp(epsilon) * q, 0, None), x))


@pytest.mark.parametrize("mu", [0.25, 1.0, 2.5])
def test_the_duality_matches_the_hockey_stick_divergence(mu):
    for epsilon in (0.0, 0.5, 2.0):
        assert delta_of(mu, epsilon) == pytest.approx(_delta_by_integration(mu, epsilon), abs=1e-7)
    eps = epsilon_of(mu, 1e-5)
    assert delta_of(mu, eps) == pytest.approx(1e-5, rel=1e-6)
    assert epsilon_of(0.0, 1e-5) == 0.0 and epsilon_of(math.inf, 1e-5) == math.inf


def test_the_interval_covers_the_mu_of_the_gaussian_mechanism():
    """Scores N(μ·member, 1) are exactly μ-GDP in membership: the 95% interval holds it in
    most runs, and ε's interval holds ε(μ, δ)."""
    true_mu, covered, eps_covered = 1.0, 0, 0
    true_eps = epsilon_of(true_mu, 1e-5)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        truth = rng.random(20_000) < 0.5
        estimate = gdp_estimate(rng.normal(truth * true_mu, 1.0), truth)
        covered += estimate.mu_low <= true_mu <= estimate.mu_high
        eps_covered += estimate.epsilon_low <= true_eps <= estimate.epsilon_high
        assert estimate.mu_low <= estimate.mu <= estimate.mu_high
    assert covered >= 17 and eps_covered >= 17


def test_a_laplace_mechanism_gets_an_estimate_not_a_bound():
    """Laplace(member, 1/ε) is ε-DP with ε = 1. Its ROC's μ is estimated consistently with the
    exact curve, but the GDP conversion of that μ to (ε, 1e-5) exceeds 1: for tails that are not
    Gaussian the fit is an estimate, which is why ``epsilon_lower`` stays the bound."""
    thresholds = np.linspace(0.0, 8.0, 8001)
    fpr, tpr = laplace.sf(thresholds), laplace.sf(thresholds, loc=1.0)
    usable = (fpr * 10_000 >= MIN_FALSE_POSITIVES) & (fpr <= 0.5)
    exact = float(np.max(norm.ppf(tpr[usable]) - norm.ppf(fpr[usable])))
    found = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        truth = rng.random(20_000) < 0.5
        scores = rng.laplace(truth.astype(float), 1.0)
        found.append(gdp_estimate(scores, truth))
        assert compute_metrics(scores, truth, delta=0.0).epsilon_lower <= 1.0 + 0.2
    assert abs(np.median([f.mu for f in found]) - exact) < 0.1
    assert sum(f.mu_low <= exact for f in found) >= 9
    assert all(f.epsilon_low > 1.0 for f in found)


def test_chance_scores_give_mu_near_zero_and_metrics_carry_the_fit():
    rng = np.random.default_rng(0)
    truth = rng.random(4000) < 0.5
    metrics = compute_metrics(rng.random(4000), truth)
    assert metrics.gdp_mu < 0.2 and metrics.epsilon_gdp_low == 0.0
    assert metrics.epsilon_gdp_low <= metrics.epsilon_gdp <= metrics.epsilon_gdp_high
    few = compute_metrics(np.r_[np.ones(5), np.zeros(5)], np.r_[np.ones(5), np.zeros(5)] > 0)
    assert few.epsilon_gdp == 0.0, "under 10 false positives: no test to fit"


def test_a_perfect_attack_demonstrates_a_large_epsilon_not_none():
    # Every threshold with false positives then flags every member: the estimate must not
    # fall back to 0 (it did), but bound μ from below by what the counts allow.
    rng = np.random.default_rng(0)
    truth = rng.random(1000) < 0.5
    scores = truth + rng.random(1000) * 0.5
    estimate = gdp_estimate(scores, truth)
    assert estimate.mu_low > 4 and estimate.epsilon_low > 3
    assert estimate.epsilon_low <= estimate.epsilon <= estimate.epsilon_high
