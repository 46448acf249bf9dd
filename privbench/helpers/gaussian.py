"""Per-sample Gaussian fits to shadow-model signals: the likelihood-ratio machinery that
shadow-calibrated attacks share (LiRA, Carlini et al. 2022; Curvature Clues, Ravikumar et al.
2024).

An attack with ``S`` shadow models reads one signal per shadow, population sample and query
(``S x N x A``) and knows which shadows trained on which sample (an ``S x N`` keep mask). For each
sample and query column it fits one Gaussian to the shadows that trained on the sample (the IN
side, ``mask = keep``) and one to those that did not (the OUT side, ``mask = ~keep``):
:class:`GaussianFit`. A sample that lacks a side borrows that side's mean from its other side
(:func:`fill_missing_means`), and a sample with fewer than two shadows on a side borrows the
variance pooled over all samples (:meth:`GaussianFit.variance`). :func:`normal_logpdf` is the
log-density the likelihood ratio is made of.
"""

from __future__ import annotations

import math
import warnings

import attrs
import numpy as np


@attrs.frozen(eq=False)
class GaussianFit:
    """Per-sample Gaussians of one side (IN or OUT) from ``S x N x A`` signals and the ``S x N``
    mask of the shadows on that side.

    - ``mean`` (``N x A``): the mean over the sample's shadows on this side; NaN where it has
      none.
    - ``var`` (``N x A``): the variance with ``ddof`` (1: unbiased; 0: as ``np.nanvar``); NaN
      where the sample has fewer than two shadows on this side, whatever ``ddof``.
    - ``count`` (``N``): how many shadows the sample has on this side.
    - ``pooled_var`` (``A``): one variance per column shared by all samples, the pooled
      within-sample variance ``sum_i sum_s (s - mean_i)^2 / sum_i (n_i - ddof)`` over the samples
      with ``n_i >= 2``: squared deviations from each sample's own mean, so the spread *between*
      samples' means does not count. Where no sample has two shadows on this side it is the
      variance (ddof 0) of all values on this side, and 1 where there are fewer than two values.
    """

    mean: np.ndarray
    var: np.ndarray
    count: np.ndarray
    pooled_var: np.ndarray
    ddof: int = 1

    @classmethod
    def of(cls, signals: np.ndarray, mask: np.ndarray, *, ddof: int = 1) -> GaussianFit:
        """Fit every sample and column of ``signals`` (``S x N x A``, finite) over the shadows
        in ``mask`` (``S x N`` booleans)."""
        mask = np.asarray(mask, dtype=bool)
        m = mask[:, :, None].astype(np.float64)
        count = mask.sum(0)
        n = count[:, None].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (signals * m).sum(0) / n
            squares = (np.square(signals - np.nan_to_num(mean)) * m).sum(0)
            var = np.where(n >= 2, squares / (n - ddof), np.nan)
        usable = count >= 2
        dof = np.where(usable, count - ddof, 0).sum()
        if dof > 0:
            # Rows with fewer than two shadows hold exact zeros, so summing them all changes
            # nothing; masking them keeps ddof 0 from counting their shadows in the denominator.
            pooled = np.where(usable[:, None], squares, 0.0).sum(0) / dof
        elif mask.sum() >= 2:
            pooled = signals[mask].var(axis=0)
        else:
            pooled = np.ones(signals.shape[-1])
        return cls(mean=mean, var=var, count=count, pooled_var=pooled, ddof=ddof)

    def variance(self, global_variance: bool) -> np.ndarray:
        """``N x A`` variances: the pooled one everywhere with ``global_variance`` (LiRA's
        "fixed variance" for few shadows), else each sample's own where it has one and the pooled
        one where it has fewer than two shadows."""
        pooled = np.broadcast_to(self.pooled_var, self.mean.shape)
        if global_variance:
            return pooled
        return np.where(np.isnan(self.var), pooled, self.var)

    def std(self, global_variance: bool, floor: float = 0.0) -> np.ndarray:
        """``N x A`` standard deviations of :meth:`variance`, at least ``floor``."""
        return np.maximum(np.sqrt(self.variance(global_variance)), floor)


def mean_shift(fit_in: GaussianFit, fit_out: GaussianFit) -> np.ndarray:
    """The average ``mean_in - mean_out`` per column over the samples that have both sides;
    where none has both, the difference of the two sides' average means (0 where a side is
    empty)."""
    both = (fit_in.count > 0) & (fit_out.count > 0)
    if both.any():
        shift = (fit_in.mean[both] - fit_out.mean[both]).mean(0)
    else:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            # An all-NaN column (a side no sample has) is expected here; nan_to_num handles it.
            warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
            shift = np.nanmean(fit_in.mean, 0) - np.nanmean(fit_out.mean, 0)
    return np.nan_to_num(shift)


def fill_missing_means(fit_in: GaussianFit, fit_out: GaussianFit) -> tuple[np.ndarray, np.ndarray]:
    """``(mean_in, mean_out)`` (``N x A``) where a sample without shadows on one side takes its
    own other side's mean shifted by :func:`mean_shift`: it keeps the sample's own difficulty
    rather than falling back to a population-wide mean."""
    shift = mean_shift(fit_in, fit_out)
    mean_in = np.where(np.isnan(fit_in.mean), fit_out.mean + shift, fit_in.mean)
    mean_out = np.where(np.isnan(fit_out.mean), fit_in.mean - shift, fit_out.mean)
    return mean_in, mean_out


def normal_logpdf(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``log N(x; mean, std^2)``, elementwise (as ``scipy.stats.norm.logpdf(x, mean, std)``)."""
    return -0.5 * np.square((x - mean) / std) - np.log(std) - 0.5 * math.log(2 * math.pi)
