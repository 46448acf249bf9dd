"""Theoretical bounds: hand-computed values, limits, monotonicity, validation, and the DP ROC
bound against the exact ROC of mechanisms with known (eps, delta)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import laplace, norm
from sklearn.metrics import roc_auc_score, roc_curve

from privbench.analysis.theory import (
    curvature_distinguishability_bound,
    dp_advantage_bound,
    dp_auc_bound,
    dp_tpr_bound,
    fit_curvature_distinguishability,
    mean_curvature_bound,
    memorization_bound,
    memorization_curvature_bound,
    output_kl_bound,
    stability_bound,
    theoretical_maximum,
)

LN2, LN3 = math.log(2.0), math.log(3.0)
# Unknown constants of the ICML theorems, chosen so the values are easy by hand:
# c2 = (4m - 1) gamma + 2 (m - 1) Delta + rho/6 E||alpha||^3 = 39 * .01 + 18 * .02 + 1 = 1.75.
ICML = dict(m=10, loss_bound=2.0, generalization=0.01, model_bias=0.02, hessian_lipschitz=6.0,
            perturbation_third_moment=1.0)  # fmt: skip


# ---------------------------------------------------------------------------------- values


def test_tpr_bound_by_hand() -> None:
    # eps = ln 2: min(1, 2 FPR + delta, 1 - (1 - delta - FPR) / 2)
    assert dp_tpr_bound(0.1, LN2, 0.0) == pytest.approx(0.2)  # first inequality binds
    assert dp_tpr_bound(0.5, LN2, 0.0) == pytest.approx(0.75)  # second binds
    assert dp_tpr_bound(0.0, LN2, 0.01) == pytest.approx(0.01)
    assert dp_tpr_bound(0.1, LN2, 0.01) == pytest.approx(0.21)
    assert dp_tpr_bound(0.995, LN2, 0.01) == 1.0  # beyond FPR = 1 - delta


def test_advantage_auc_and_memorization_by_hand() -> None:
    assert dp_advantage_bound(LN3, 0.0) == pytest.approx(0.5)  # (3 - 1) / (3 + 1)
    assert dp_advantage_bound(LN3, 0.1) == pytest.approx(0.55)  # (3 - 1 + 0.2) / 4
    assert dp_auc_bound(LN3, 0.0) == pytest.approx(0.75)  # e^eps / (1 + e^eps)
    assert dp_auc_bound(LN3, 0.1) == pytest.approx(0.9 * 0.75 + 0.1 * 0.9 * 0.25 + 0.1)
    assert memorization_bound(LN2, 0.0) == pytest.approx(0.5)  # Theorem 5.4: 1 - e^-eps
    assert memorization_bound(LN2, 0.2) == pytest.approx(0.6)  # 1 - e^-eps (1 - delta)
    assert stability_bound(LN2, loss_bound=3.0) == pytest.approx(1.5)  # Lemma 5.2
    assert output_kl_bound(0.7) == pytest.approx(0.7)


def test_icml_curvature_theorems_by_hand() -> None:
    # Theorem 5.3: L (m + 1)(1 - e^-eps) + c2 = 2 * 11 * 0.5 + 1.75
    assert mean_curvature_bound(LN2, **ICML) == pytest.approx(12.75)
    # Theorem 5.1: (curvature + m beta + c2) / L = (curvature + 0.1 + 1.75) / 2
    bound = memorization_curvature_bound([0.0, 4.0], stability=0.01, **ICML)
    np.testing.assert_allclose(bound, [0.925, 2.925])
    # The offset alone, term by term as eq. (9) writes it.
    c1 = 6 / (6 * 2) + 10 * 0.01 / 2 + 39 * 0.01 / 2 + 2 * 9 * 0.02 / 2
    assert memorization_curvature_bound(0.0, stability=0.01, **ICML) == pytest.approx(c1)


def test_curvature_bound_chains_with_stability_lemma() -> None:
    """Theorem 5.3 is Lemma A.4 with beta = L(1 - e^-eps) from Lemma 5.2, counted m + 1 times."""
    eps = np.array([0.5, 2.0, 8.0])
    beta = stability_bound(eps, loss_bound=2.0)
    no_privacy_term = mean_curvature_bound(0.0, **ICML)
    np.testing.assert_allclose(mean_curvature_bound(eps, **ICML), 11 * beta + no_privacy_term)


# ---------------------------------------------------------------------------------- limits


def test_no_privacy_loss_gives_chance() -> None:
    fpr = np.linspace(0, 1, 11)
    np.testing.assert_allclose(dp_tpr_bound(fpr, 0.0, 0.0), fpr)
    np.testing.assert_allclose(dp_tpr_bound(fpr, 0.0, 0.05), np.minimum(1, fpr + 0.05))
    assert dp_auc_bound(0.0, 0.0) == 0.5
    assert dp_advantage_bound(0.0, 0.0) == 0.0
    assert dp_advantage_bound(0.0, 1e-5) == pytest.approx(1e-5)
    assert memorization_bound(0.0, 0.0) == 0.0
    assert mean_curvature_bound(0.0, **ICML) == pytest.approx(1.75)  # only c2 is left
    tiny = theoretical_maximum(1e-9, 0.0)
    assert tiny.auc == pytest.approx(0.5) and tiny.advantage == pytest.approx(0.0, abs=1e-9)


def test_no_guarantee_gives_trivial_bounds() -> None:
    inf = math.inf
    np.testing.assert_array_equal(dp_tpr_bound([0.0, 1e-3, 0.5], inf, 0.0), 1.0)
    assert dp_tpr_bound(0.0, 800.0, 1e-5) == pytest.approx(1e-5)  # e^800 overflows, not NaN
    assert dp_auc_bound(inf, 0.0) == 1.0
    assert dp_advantage_bound(inf, 0.0) == 1.0
    assert memorization_bound(inf, 0.0) == 1.0
    assert dp_auc_bound(3.0, 1.0) == 1.0 and dp_advantage_bound(3.0, 1.0) == 1.0


# --------------------------------------------------------------------------- monotonicity


def test_bounds_grow_with_epsilon_delta_and_m() -> None:
    eps = np.linspace(0, 20, 201)
    for values in (
        dp_auc_bound(eps, 1e-5),
        dp_advantage_bound(eps, 1e-5),
        memorization_bound(eps, 0.0),
        mean_curvature_bound(eps, **ICML),
        stability_bound(eps, loss_bound=1.0),
    ):
        assert (np.diff(values) > 0).all()
    for fpr in (1e-3, 1e-2, 0.3):
        assert (np.diff(dp_tpr_bound(fpr, eps, 1e-5)) >= 0).all()
    deltas = np.linspace(0, 0.5, 11)
    assert (np.diff(dp_auc_bound(1.0, deltas)) > 0).all()
    assert (np.diff(memorization_bound(1.0, deltas)) > 0).all()
    m = np.arange(2, 1000)
    icml = {**ICML, "m": m}
    assert (np.diff(mean_curvature_bound(1.0, **icml)) > 0).all()
    assert (np.diff(memorization_curvature_bound(0.5, stability=0.01, **icml)) > 0).all()
    # Curvature over a larger loss bound means less memorization (Theorem 5.1's 1/L).
    losses = np.linspace(0.5, 5, 10)
    loose = {**ICML, "loss_bound": losses}
    assert (np.diff(memorization_curvature_bound(3.0, stability=0.01, **loose)) < 0).all()


def test_memorization_bound_is_above_the_tight_advantage() -> None:
    """mem is the advantage of the test "h(x_i) == y_i": Theorem 5.4 must not undercut it."""
    eps = np.linspace(0, 10, 101)[:, None]
    delta = np.array([0.0, 1e-5, 0.1])
    assert (memorization_bound(eps, delta) >= dp_advantage_bound(eps, delta) - 1e-15).all()


@pytest.mark.parametrize(("eps", "delta"), [(0.5, 0.0), (2.0, 0.0), (1.0, 0.05)])
def test_largest_memorization_of_a_binary_dp_mechanism(eps: float, delta: float) -> None:
    """Over all (Pr[correct | in], Pr[correct | out]) an (eps, delta)-DP algorithm can produce,
    the largest memorization is the advantage bound, below Theorem 5.4's."""
    p, q = np.meshgrid(np.linspace(0, 1, 2001), np.linspace(0, 1, 2001))
    e = math.exp(eps)
    feasible = (
        (p <= e * q + delta)
        & (q <= e * p + delta)
        & (1 - p <= e * (1 - q) + delta)
        & (1 - q <= e * (1 - p) + delta)
    )
    largest = (p - q)[feasible].max()
    assert largest == pytest.approx(dp_advantage_bound(eps, delta), abs=1e-3)
    assert largest <= memorization_bound(eps, delta)


# --------------------------------------------------------- the ROC bound against mechanisms


def test_randomized_response_meets_the_bound() -> None:
    for eps in (0.1, 1.0, 4.0):
        p = math.exp(eps) / (1 + math.exp(eps))  # says "member" w.p. p for members
        assert dp_tpr_bound(1 - p, eps, 0.0) == pytest.approx(p)
        # ROC (0,0)-(1-p, p)-(1,1): its area and height above the diagonal are the bounds.
        assert dp_auc_bound(eps, 0.0) == pytest.approx((1 - p) * p / 2 + p * (1 + p) / 2)
        assert dp_advantage_bound(eps, 0.0) == pytest.approx(2 * p - 1)
        # With probability delta the mechanism reveals membership outright: (eps, delta)-DP.
        delta = 0.02
        tpr, fpr = delta + (1 - delta) * p, (1 - delta) * (1 - p)
        assert dp_tpr_bound(fpr, eps, delta) == pytest.approx(tpr)


@pytest.mark.parametrize("eps", [0.1, 1.0, 3.0, 8.0])
def test_laplace_mechanism_stays_below(eps: float) -> None:
    """Release membership (0/1) plus Laplace(1/eps) noise: eps-DP; every threshold's ROC point
    lies below the bound."""
    t = np.linspace(-30 / eps, 30 / eps, 20001)
    fpr = laplace.sf(t, scale=1 / eps)
    tpr = laplace.sf(t - 1, scale=1 / eps)
    assert (tpr <= dp_tpr_bound(fpr, eps, 0.0) + 1e-12).all()
    auc = -np.trapezoid(tpr, fpr)
    assert 0.5 < auc <= dp_auc_bound(eps, 0.0)
    assert (tpr - fpr).max() <= dp_advantage_bound(eps, 0.0)


def gaussian_delta(eps: float, mu: float) -> float:
    """The exact delta(eps) of the Gaussian mechanism with sensitivity / sigma = mu (Balle and
    Wang 2018, Theorem 8)."""
    return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)


@pytest.mark.parametrize(("eps", "mu"), [(1.0, 0.5), (1.0, 2.0), (4.0, 3.0)])
def test_gaussian_mechanism_stays_below_its_exact_delta_only(eps: float, mu: float) -> None:
    delta = gaussian_delta(eps, mu)
    fpr = np.concatenate([np.logspace(-12, -1, 500), np.linspace(0.1, 1, 500)])
    tpr = norm.sf(norm.isf(fpr) - mu)
    assert (tpr <= dp_tpr_bound(fpr, eps, delta) + 1e-9).all()
    # Half that delta is not a valid guarantee: the bound must then fail somewhere.
    assert (tpr > dp_tpr_bound(fpr, eps, delta / 2) + 1e-9).any()


def test_auc_bound_is_the_area_under_the_tpr_bound() -> None:
    fpr = np.linspace(0, 1, 200001)
    for eps, delta in [(0.3, 0.0), (2.0, 1e-5), (5.0, 0.1), (1.0, 0.5)]:
        area = np.trapezoid(dp_tpr_bound(fpr, eps, delta), fpr)
        assert dp_auc_bound(eps, delta) == pytest.approx(area, abs=1e-8)
        advantage = (dp_tpr_bound(fpr, eps, delta) - fpr).max()
        assert dp_advantage_bound(eps, delta) == pytest.approx(advantage, abs=1e-5)


def test_simulated_dp_attack_measures_at_most_the_bound() -> None:
    """Scores from randomized response at eps = 1 on 200k samples: measured AUC and advantage
    match the (tight) bound up to sampling noise."""
    rng = np.random.default_rng(0)
    eps, n = 1.0, 200_000
    member = rng.random(n) < 0.5
    says_member = rng.random(n) < np.where(member, 1, -1) * (math.tanh(eps / 2) / 2) + 0.5
    scores = says_member + rng.random(n) * 1e-3  # ties broken at random
    auc = roc_auc_score(member, scores)
    fpr, tpr, _ = roc_curve(member, scores)
    assert auc == pytest.approx(dp_auc_bound(eps, 0.0), abs=0.005)
    assert (tpr - fpr).max() == pytest.approx(dp_advantage_bound(eps, 0.0), abs=0.01)


# ------------------------------------------------------------------- shape and the report


def test_vectorised_broadcasting_and_scalars() -> None:
    out = dp_tpr_bound(np.linspace(0, 1, 5)[:, None], [0.5, 1.0, 2.0], 1e-5)
    assert out.shape == (5, 3)
    assert isinstance(dp_auc_bound(1.0, 0.0), float)
    assert dp_auc_bound([1.0, 2.0], [0.0, 0.0]).shape == (2,)
    assert memorization_curvature_bound(np.zeros((3, 4)), stability=0.0, **ICML).shape == (3, 4)


def test_theoretical_maximum_matches_the_functions() -> None:
    top = theoretical_maximum(2.0, 1e-5)
    assert top.auc == dp_auc_bound(2.0, 1e-5)
    assert top.advantage == dp_advantage_bound(2.0, 1e-5)
    assert top.balanced_accuracy == pytest.approx((1 + top.advantage) / 2)
    assert top.tpr_at_0_1_fpr == pytest.approx(math.exp(2.0) * 1e-3 + 1e-5)
    assert top.tpr_at_1_fpr == pytest.approx(math.exp(2.0) * 1e-2 + 1e-5)
    chance = theoretical_maximum(0.0, 0.0)
    assert (chance.auc, chance.tpr_at_0_1_fpr, chance.tpr_at_1_fpr) == (0.5, 1e-3, 1e-2)
    assert chance.balanced_accuracy == 0.5
    assert set(chance.as_dict()) >= {"auc", "advantage", "tpr_at_1_fpr", "epsilon", "delta"}


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: dp_tpr_bound(0.1, -1.0, 0.0), "epsilon must be >= 0"),
        (lambda: dp_tpr_bound(0.1, math.nan, 0.0), "epsilon must not be NaN"),
        (lambda: dp_tpr_bound(1.5, 1.0, 0.0), "fpr must lie in"),
        (lambda: dp_auc_bound(1.0, 1.5), "delta must lie in"),
        (lambda: dp_advantage_bound(1.0, -1e-9), "delta must be >= 0"),
        (lambda: memorization_bound([1.0, -2.0], 0.0), "epsilon must be >= 0"),
        (lambda: stability_bound(1.0, loss_bound=0.0), "loss_bound must be > 0"),
        (lambda: mean_curvature_bound(1.0, **{**ICML, "m": 1}), "m must be >= 2"),
        (lambda: mean_curvature_bound(1.0, **{**ICML, "m": 2.5}), "must be an integer"),
        (lambda: mean_curvature_bound(1.0, **{**ICML, "model_bias": -1}), "model_bias"),
        (lambda: mean_curvature_bound(1.0, **{**ICML, "loss_bound": math.inf}), "finite"),
        (
            lambda: mean_curvature_bound(1.0, **{**ICML, "perturbation_third_moment": 0.0}),
            "Jensen",
        ),
        (lambda: memorization_curvature_bound(1.0, stability=-0.1, **ICML), "stability"),
        (lambda: memorization_curvature_bound(math.nan, stability=0, **ICML), "mean_curvature"),
    ],
)
def test_invalid_arguments_are_refused(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_unknown_constants_have_no_defaults() -> None:
    with pytest.raises(TypeError):
        mean_curvature_bound(1.0, m=10, loss_bound=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        stability_bound(1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        memorization_bound(1.0)  # type: ignore[call-arg]


# ------------------------------------------------------------ Curvature Clues (NeurIPS 2024)

CLUES = dict(m=100, loss_bound=0.01, offset=0.2, scale=0.5)


def test_curvature_distinguishability_by_hand() -> None:
    # 0.5 * (0.01 * 100 * (1 - 1/2) + 0.01 + 0.2)^2 = 0.5 * 0.71^2
    assert curvature_distinguishability_bound(LN2, **CLUES) == pytest.approx(0.5 * 0.71**2)
    # eps = 0: no privacy loss leaves only the constant, (L + offset)^2 scale.
    assert curvature_distinguishability_bound(0.0, **CLUES) == pytest.approx(0.5 * 0.21**2)


def test_curvature_distinguishability_grows_with_epsilon_and_m_and_saturates() -> None:
    eps = np.linspace(0, 50, 501)
    values = curvature_distinguishability_bound(eps, **CLUES)
    assert (np.diff(values[:200]) > 0).all()  # strictly, until float saturation
    assert (np.diff(values) >= 0).all()
    # Saturation: 1 - e^-eps -> 1, so the last 40 epsilons add almost nothing.
    limit = 0.5 * (0.01 * 100 + 0.01 + 0.2) ** 2
    assert values[-1] == pytest.approx(limit, rel=1e-9)
    assert values[100] > 0.99 * limit
    m = np.arange(2, 500)
    assert (np.diff(curvature_distinguishability_bound(1.0, **{**CLUES, "m": m})) > 0).all()


def test_fit_recovers_the_constants_and_bounds_every_point() -> None:
    eps = np.array([1.0, 2, 3, 4, 5, 10, 15, 25, 50])
    truth = curvature_distinguishability_bound(eps, m=200, loss_bound=1.0, offset=30.0,
                                               scale=2e-6)  # fmt: skip
    fit = fit_curvature_distinguishability(eps, truth, m=200)
    assert fit.offset == pytest.approx(30.0, rel=1e-3)
    assert fit.scale == pytest.approx(2e-6, rel=1e-3)
    assert fit.margin == pytest.approx(0.0, abs=1e-9)
    noisy = truth + np.random.default_rng(0).normal(0, 0.01, eps.size)
    fit = fit_curvature_distinguishability(eps, noisy, m=200)
    assert (fit(eps) >= noisy - 1e-12).all()
    assert fit.margin > 0


def test_curvature_bound_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="scale must be > 0"):
        curvature_distinguishability_bound(1.0, **{**CLUES, "scale": 0.0})
    with pytest.raises(ValueError, match="three distinct epsilons"):
        fit_curvature_distinguishability([1.0, 1.0, 2.0], [0.6, 0.6, 0.7], m=100)
    with pytest.raises(ValueError, match="measured values"):
        fit_curvature_distinguishability([1.0, 2.0, 3.0], [0.6, 0.7], m=100)
    with pytest.raises(TypeError):
        curvature_distinguishability_bound(1.0, m=10)  # type: ignore[call-arg]


def test_fit_survives_flat_and_falling_sweeps() -> None:
    """A measured sweep need not rise (chance-level attacks): the fit still returns a bound."""
    eps = np.array([1.0, 4.0, 16.0])
    for measured in ([0.678, 0.660, 0.649], [0.5, 0.5, 0.5]):
        fit = fit_curvature_distinguishability(eps, measured, m=100)
        assert (fit(eps) >= np.array(measured) - 1e-12).all()
        assert np.diff(fit(np.linspace(1, 50, 50))).min() >= 0
