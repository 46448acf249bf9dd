"""The Bayesian ε estimate (privbench.analysis.bayes, Zanella-Béguelin et al. 2023): its
posterior against scipy's two-dimensional quadrature, what it says of the Laplace mechanism
whose ε is known (an estimate of the chosen test's ε, not a bound either way), chance scores,
and its invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import beta, laplace

from privbench.analysis.bayes import (
    bayes_estimate,
    epsilon_of_rates,
    posterior_cdf,
    posterior_quantiles,
)
from privbench.analysis.binomial import SplitHalves
from privbench.analysis.metrics import compute_metrics, lower_bound_test


def estimate(scores, truth, seed: int = 0):
    """:func:`bayes_estimate` on the split and test that ``epsilon_lower`` makes of *scores*."""
    halves = SplitHalves.of(np.asarray(scores, dtype=np.float64), np.asarray(truth), seed)
    return bayes_estimate(halves, None if halves is None else lower_bound_test(halves, 1e-5, 0.95))


def _log_beta_pdf(a: float, b: float):
    """``log`` of the Beta(a, b) density, in closed form: scipy.stats' frozen pdf would make
    each of dblquad's many points cost tens of microseconds."""
    constant = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    return lambda x: constant + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x)


def _cdf_by_quadrature(epsilon, fp, negatives, fn, positives, delta):
    """``P(ε <= epsilon)`` as the Jeffreys posterior's mass of the (ε, δ)-DP region,
    ``FPR >= max(0, 1-δ-e^ε FNR, (1-δ-FNR) e^-ε)``, by scipy's dblquad over (FNR, FPR)."""
    log_fpr = _log_beta_pdf(fp + 0.5, negatives - fp + 0.5)
    log_fnr = _log_beta_pdf(fn + 0.5, positives - fn + 0.5)
    grow = math.exp(epsilon)

    def density(x, y):
        return math.exp(log_fpr(x) + log_fnr(y)) if 0 < x < 1 else 0.0

    def boundary(y):
        return max(0.0, 1 - delta - grow * y, (1 - delta - y) / grow)

    # FNR over its bulk: the posterior mass outside is under 1e-12.
    fnr = beta(fn + 0.5, positives - fn + 0.5)
    mass, _ = integrate.dblquad(density, fnr.ppf(1e-13), fnr.isf(1e-13), boundary, lambda y: 1.0,
                                epsabs=1e-10, epsrel=1e-10)  # fmt: skip
    return mass


@pytest.mark.parametrize(
    ("counts", "epsilons"),
    [
        ((30, 1000, 400, 1000), (2.7, 3.0, 3.3)),  # a leaky test: ε about 3
        ((480, 1000, 470, 1000), (0.0, 0.05, 0.12)),  # near chance: mass at ε = 0
        ((3, 20, 10, 25), (0.5, 1.3, 2.5)),  # few samples: a wide posterior
    ],
)
def test_the_posterior_matches_two_dimensional_quadrature(counts, epsilons):
    for epsilon in epsilons:
        exact = _cdf_by_quadrature(epsilon, *counts, 1e-5)
        assert posterior_cdf(epsilon, *counts, 1e-5) == pytest.approx(exact, abs=5e-5)
    # The quantiles invert it.
    low, median, high = posterior_quantiles([0.025, 0.5, 0.975], *counts, 1e-5)
    for q, value in ((0.025, low), (0.5, median), (0.975, high)):
        if value > 0:
            assert _cdf_by_quadrature(value, *counts, 1e-5) == pytest.approx(q, abs=1e-4)


def test_epsilon_of_rates_is_the_two_inequalities():
    assert epsilon_of_rates(0.1, 0.2, 0.0) == pytest.approx(math.log(0.8 / 0.1))  # the larger
    assert epsilon_of_rates(0.5, 0.5, 0.0) == 0.0 and epsilon_of_rates(0.7, 0.6, 0.0) == 0.0
    assert epsilon_of_rates(0.0, 0.5, 0.0) == math.inf
    assert epsilon_of_rates(1.0, 0.0, 0.0) == 0.0, "flags all: 0/0 holds at every ε"


def _laplace_runs(n: int, seeds: range) -> list[tuple[float, object]]:
    """Laplace(member, 1/ε) scores with ε = 1: the mechanism is 1-DP in membership. Each run's
    estimate with the ε its chosen test truly has (from the exact rates at its threshold)."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        truth = rng.random(n) < 0.5
        found = estimate(rng.laplace(truth.astype(float), 1.0), truth)
        t = found.threshold
        out.append((float(epsilon_of_rates(laplace.sf(t), laplace.cdf(t, loc=1.0), 1e-5)),
                    found))  # fmt: skip
    return out


def test_on_the_laplace_mechanism_the_interval_covers_the_chosen_tests_epsilon():
    """A Bayesian estimate from one test is not a bound on the mechanism's ε: it estimates what
    the chosen test demonstrates, which is at most 1 (exactly 1 at a threshold at or beyond
    the two locations). The 95% interval covers that in about 95% of seeds, so its low end
    falls below the mechanism's ε = 1 as often; its high end may lie above 1 or not."""
    runs = _laplace_runs(20_000, range(20))
    assert all(truly <= 1.0 for truly, _ in runs)
    assert sum(e.epsilon_low <= truly <= e.epsilon_high for truly, e in runs) >= 17
    assert sum(e.epsilon_low <= 1.0 for _, e in runs) >= 18
    assert abs(np.median([e.epsilon for _, e in runs]) - 1.0) < 0.1
    assert any(e.epsilon_high > 1.0 for _, e in runs), "not a lower bound: it reaches past ε"


def test_with_many_samples_the_point_approaches_the_demonstrated_epsilon():
    ((truly, found),) = _laplace_runs(400_000, range(1))
    assert truly > 0.97, "the chosen threshold shows about all of ε = 1"
    assert abs(found.epsilon - truly) < 0.05
    assert found.epsilon_high - found.epsilon_low < 0.2


def test_chance_scores_give_an_interval_from_zero():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        truth = rng.random(4000) < 0.5
        metrics = compute_metrics(rng.random(4000), truth)
        assert metrics.epsilon_bayes_low == 0.0 and metrics.epsilon_bayes_high < 0.3, seed
    constant = compute_metrics(np.zeros(10), np.arange(10) < 5)
    assert (constant.epsilon_bayes, constant.epsilon_bayes_high) == (0.0, 0.0), "no test"


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    negatives=st.integers(1, 5000),
    positives=st.integers(1, 5000),
    fp_share=st.floats(0, 1),
    fn_share=st.floats(0, 1),
    delta=st.sampled_from([0.0, 1e-5, 1e-2]),
)
def test_the_quantiles_are_ordered_and_non_negative(
    negatives, positives, fp_share, fn_share, delta
):
    fp, fn = round(fp_share * negatives), round(fn_share * positives)
    low, median, high = posterior_quantiles([0.025, 0.5, 0.975], fp, negatives, fn, positives,
                                            delta)  # fmt: skip
    assert 0.0 <= low <= median <= high < math.inf


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    n=st.integers(4, 400),
    signal=st.floats(0, 5),
    data_seed=st.integers(0, 2**16),
    split_seed=st.integers(0, 3),
)
def test_the_estimate_is_ordered_non_negative_and_deterministic(n, signal, data_seed, split_seed):
    rng = np.random.default_rng(data_seed)
    truth = np.arange(n) % 2 == 0
    scores = np.round(rng.normal(truth * signal, 1.0), 1)  # ties too
    first = estimate(scores, truth, seed=split_seed)
    assert 0.0 <= first.epsilon_low <= first.epsilon <= first.epsilon_high < math.inf
    assert estimate(scores, truth, seed=split_seed) == first


def test_compute_metrics_carries_the_estimate_and_shares_the_lower_bounds_test():
    rng = np.random.default_rng(3)
    truth = rng.random(10_000) < 0.5
    scores = rng.laplace(truth.astype(float), 1.0)
    metrics = compute_metrics(scores, truth)
    alone = estimate(scores, truth)
    assert (metrics.epsilon_bayes_low, metrics.epsilon_bayes, metrics.epsilon_bayes_high) == (
        alone.epsilon_low,
        alone.epsilon,
        alone.epsilon_high,
    )
    # The same test: Clopper-Pearson on each rate is the more cautious here.
    assert metrics.epsilon_lower <= metrics.epsilon_bayes_low
