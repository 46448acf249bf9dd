"""Feldman-Zhang memorization: exact values by hand, a simulated pool, NaN handling, and the rank
correlation used for the memorization-curvature link."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

from privbench.analysis.memorization import memorization, rank_correlation
from privbench.engine.splits import keep_masks

# 4 models x 4 samples; sample 3 is in every model's training set.
KEEP = np.array(
    [
        [1, 1, 0, 1],
        [1, 0, 1, 1],
        [0, 1, 0, 1],
        [0, 0, 1, 1],
    ],
    dtype=bool,
)
CORRECT = np.array(
    [
        [1, 1, 0, 1],
        [1, 1, 0, 0],
        [0, 0, 1, 1],
        [1, 0, 0, 1],
    ],
    dtype=bool,
)


def test_exact_values_by_hand() -> None:
    est = memorization(CORRECT, KEEP)
    # sample 0: in = models 0, 1 (both right); out = 2, 3 (one right)
    # sample 1: in = 0, 2 (one right); out = 1, 3 (one right)
    # sample 2: in = 1, 3 (none right); out = 0, 2 (one right)
    np.testing.assert_array_equal(est.n_in, [2, 2, 2, 4])
    np.testing.assert_array_equal(est.n_out, [2, 2, 2, 0])
    np.testing.assert_allclose(est.accuracy_in, [1.0, 0.5, 0.0, 0.75])
    np.testing.assert_allclose(est.accuracy_out[:3], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(est.score[:3], [0.5, 0.0, -0.5])
    # sqrt(p_in (1 - p_in) / n_in + p_out (1 - p_out) / n_out)
    np.testing.assert_allclose(
        est.standard_error[:3], [math.sqrt(0.125), math.sqrt(0.25), math.sqrt(0.125)]
    )


def test_unequal_in_and_out_counts() -> None:
    keep = np.array([[1, 1], [0, 1], [0, 0]], dtype=bool)
    correct = np.array([[1, 1], [1, 0], [0, 1]], dtype=bool)
    est = memorization(correct, keep)
    # sample 0: 1 of 1 in, 1 of 2 out; sample 1: 1 of 2 in, 1 of 1 out.
    np.testing.assert_allclose(est.score, [0.5, -0.5])
    np.testing.assert_allclose(est.standard_error, [math.sqrt(0.25 / 2), math.sqrt(0.25 / 2)])
    keep[:, 1], correct[:, 1] = [True, True, False], [True, False, False]  # 1 of 2 in, 0 of 1 out
    est = memorization(correct, keep)
    np.testing.assert_allclose(est.standard_error, [math.sqrt(0.125), math.sqrt(0.125)])
    np.testing.assert_allclose(est.score, [0.5, 0.5])


def test_samples_without_out_or_in_models_are_nan() -> None:
    est = memorization(CORRECT, KEEP)
    assert np.isnan(est.score[3]) and np.isnan(est.standard_error[3])
    assert np.isnan(est.accuracy_out[3]) and est.accuracy_in[3] == 0.75
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the 0/0 behind the NaNs must not warn
        never = memorization(CORRECT, ~KEEP)  # sample 3 now in no training set
    assert np.isnan(never.score[3]) and never.accuracy_out[3] == 0.75
    assert np.isnan(never.accuracy_in[3]) and never.n_in[3] == 0
    np.testing.assert_allclose(never.score[:3], -memorization(CORRECT, KEEP).score[:3])


def simulated_pool(num_models: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """300 samples in the engine's membership game: 100 memorized (right only when trained
    on), 100 typical (always right), 100 noisy (right w.p. 0.9 in, 0.3 out)."""
    keep = keep_masks(300, num_models, seed)
    rng = np.random.default_rng(seed)
    correct = np.empty_like(keep)
    correct[:, :100] = keep[:, :100]
    correct[:, 100:200] = True
    noisy = keep[:, 200:]
    correct[:, 200:] = rng.random(noisy.shape) < np.where(noisy, 0.9, 0.3)
    return correct, keep


def test_memorized_samples_score_one_and_typical_zero() -> None:
    est = memorization(*simulated_pool(32))
    np.testing.assert_array_equal(est.score[:100], 1.0)
    np.testing.assert_array_equal(est.score[100:200], 0.0)
    np.testing.assert_array_equal(est.standard_error[:200], 0.0)  # plug-in SE at 0 and 1
    assert est.score[200:].mean() == pytest.approx(0.6, abs=0.05)
    assert (est.n_in + est.n_out == 32).all()


def test_standard_error_shrinks_like_one_over_sqrt_k() -> None:
    # With n_in ~ n_out ~ K/2: SE ~ sqrt((0.9 * 0.1 + 0.3 * 0.7) / (K / 2)) = sqrt(0.6 / K).
    errors = {}
    for k in (64, 256, 1024):
        est = memorization(*simulated_pool(k, seed=k))
        noisy_se = est.standard_error[200:]
        assert noisy_se.mean() * math.sqrt(k) == pytest.approx(math.sqrt(0.6), rel=0.05)
        errors[k] = noisy_se.mean()
        # Calibrated: the spread of the estimates across identical samples matches the SE.
        assert est.score[200:].std() == pytest.approx(noisy_se.mean(), rel=0.2)
    assert errors[64] / errors[256] == pytest.approx(2.0, rel=0.05)
    assert errors[256] / errors[1024] == pytest.approx(2.0, rel=0.05)


def test_accepts_zero_one_integers() -> None:
    est = memorization(CORRECT.astype(int), KEEP.astype(np.uint8))
    np.testing.assert_allclose(est.score[:3], [0.5, 0.0, -0.5])


@pytest.mark.parametrize(
    ("correct", "keep", "message"),
    [
        (CORRECT, KEEP[:, :3], "shape"),
        (CORRECT[0], KEEP[0], "K x N"),
        (CORRECT * 2, KEEP, "boolean or 0/1"),
        (CORRECT, np.where(KEEP, np.nan, 0.0), "boolean or 0/1"),
    ],
)
def test_invalid_inputs_are_refused(correct, keep, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        memorization(correct, keep)


def test_rank_correlation_of_monotone_pairs() -> None:
    a = np.arange(20.0)
    rho, p = rank_correlation(a, a**3 + 5)
    assert rho == pytest.approx(1.0) and p < 1e-10
    rho, _ = rank_correlation(a, -np.exp(a))
    assert rho == pytest.approx(-1.0)


def test_rank_correlation_ignores_nans_pairwise() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=50)
    a[[3, 7]] = np.nan
    b[[7, 11]] = np.nan
    keep = ~(np.isnan(a) | np.isnan(b))
    expected = spearmanr(a[keep], b[keep])
    assert rank_correlation(a, b) == pytest.approx((expected.statistic, expected.pvalue))
    # Memorization's NaNs (no IN or no OUT model) drop out the same way.
    est = memorization(CORRECT, KEEP)
    rho, _ = rank_correlation(est.score, np.array([3.0, 2.0, 1.0, 100.0]))
    assert rho == pytest.approx(1.0)


def test_rank_correlation_degenerate_inputs() -> None:
    rho, p = rank_correlation(np.ones(5), np.arange(5.0))
    assert math.isnan(rho) and math.isnan(p)
    with pytest.raises(ValueError, match="at least 3"):
        rank_correlation([1.0, np.nan, 2.0], [1.0, 2.0, np.nan])
    with pytest.raises(ValueError, match="1-D"):
        rank_correlation(np.zeros(4), np.zeros(5))
