"""LiRA, the likelihood-ratio attack of Carlini et al. (2022), "Membership Inference Attacks From
First Principles" (IEEE S&P; official code: tensorflow/privacy, research/mi_lira_2021).

Threat model: ``logits`` access to the target; shadow models trained by the attacker on random
halves of the population (LiRA's own game, which privbench's engine plays).

For each sample LiRA compares the target's logit-scaled confidence with the distributions of that
same statistic over shadow models that did (IN) and did not (OUT) train on the sample, each
modelled as a Gaussian (Section IV, Algorithm 1):

- ``online``: log N(phi; mu_in, var_in) - log N(phi; mu_out, var_out), the log likelihood ratio.
- ``offline``: only OUT models are needed, and the test is one-sided (the paper's offline
  variant): members have a *larger* confidence than the OUT distribution predicts, so the score
  is log Pr[Z <= phi], Z ~ N(mu_out, var_out) (the paper's 1 - Pr[Z > phi]; higher = member).
  The official plotting code ranks offline by the two-sided -log N(phi; mu_out, var_out)
  instead; privbench follows the paper's one-sided test, which does not take an unusually *low*
  confidence for a sign of membership.

With several queries per sample (the image and its mirror), each query keeps its own column and
its own Gaussian, which is the paper's multivariate Gaussian with diagonal covariance over
augmented queries; the per-query log scores are summed (the official code averages them, which
ranks the same).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import attrs
import numpy as np
from scipy.special import log_ndtr

from privbench import Access, AttackContext, ModelView, OptionError, Signal, hookimpl
from privbench.helpers import GaussianFit, fill_missing_means, normal_logpdf

GLOBAL_VARIANCE_BELOW = 64
"""Carlini et al. find a variance shared by all samples ("fixed"/global variance) better than
per-sample variances when fewer than 64 shadow models are available (their study of the number of
shadow models); the official code calls it ``fix_variance``."""

MIN_STD = 1e-3
"""Floor on a standard deviation (in logit units): identical shadow signals would otherwise give
an infinitely sharp Gaussian and infinite scores."""


def signals(view: ModelView, augment: str) -> np.ndarray:
    """``N x A`` logit-scaled confidences of one model on the population, one column per query,
    from the ``logit-confidence`` scorer (cached per model, shared with any other attack)."""
    values = view.population_scores("logit-confidence", augment=augment, reduce="keep")
    return values.double().numpy().reshape(values.shape[0], -1)


def lira_scores(
    target: np.ndarray,
    shadows: np.ndarray,
    keep: np.ndarray,
    variant: str = "online",
    global_variance: bool = True,
) -> np.ndarray:
    """LiRA scores from ``N x A`` target signals, ``S x N x A`` shadow signals and the ``S x N``
    keep-mask: one score per sample, higher = member, vectorised over samples.

    Each side is fitted by :class:`privbench.helpers.GaussianFit` with unbiased variances
    (ddof 1). The mean is the mean, as in Algorithm 1 (the official code takes the median). The
    shared variance is the pooled within-sample variance ``sum (s - mean_i)^2 / sum (n_i - 1)``,
    which deviates from the official code, whose ``fix_variance`` takes the spread of all values
    and so adds the spread *between* samples' means; privbench falls back to that spread only
    where no sample has two shadows on a side."""
    keep = np.asarray(keep, dtype=bool)
    fit_in, fit_out = GaussianFit.of(shadows, keep, ddof=1), GaussianFit.of(shadows, ~keep, ddof=1)
    mu_in, mu_out = fill_missing_means(fit_in, fit_out)
    sd_out = fit_out.std(global_variance, floor=MIN_STD)
    if variant == "offline":
        return log_ndtr((target - mu_out) / sd_out).sum(-1)
    sd_in = fit_in.std(global_variance, floor=MIN_STD)
    log_in = normal_logpdf(target, mu_in, sd_in)
    return (log_in - normal_logpdf(target, mu_out, sd_out)).sum(-1)


@attrs.frozen
class LiRA:
    """Carlini et al. (2022): per-sample Gaussian likelihood ratio of the logit-scaled confidence.

    ``variant=online`` needs IN and OUT shadows (at least 2 shadow models, so that a sample can
    be IN in one and OUT in another); ``offline`` needs OUT shadows only (1 model suffices).
    A sample with no shadow on a side borrows that side's mean from its other side plus the
    average IN-OUT gap (``privbench.helpers.fill_missing_means``: the sample keeps its own
    difficulty rather than a population-wide mean), and the shared variance.
    """

    name: ClassVar[str] = "lira"
    description: ClassVar[str] = (
        "Carlini et al. 2022 likelihood-ratio attack on logit-scaled confidence, shadow Gaussians"
    )
    access: ClassVar[Access] = Access.LOGITS
    paper_reference_models: ClassVar[int] = 64
    """Carlini et al. report the online attack near its best from 64 shadow models on (their
    study of the number of shadow models); fewer gives a warning beside the results."""

    variant: Literal["online", "offline"] = "online"
    """``online``: IN and OUT Gaussians; ``offline``: one-sided test against OUT only."""
    augment: Literal["none", "hflip", "shift", "hflip+shift"] = "none"
    """Queries per sample, each with its own Gaussian: the image, its mirror and/or its shifts.
    The paper's mirrored and one-pixel-shifted copies; mirroring is refused where it changes the
    label (digits)."""
    global_variance: bool | None = None
    """Share one variance per side across samples (true) or fit one per sample (false).
    ``None``: shared only with fewer than 64 shadow models, as Carlini et al. recommend."""

    @property
    def min_shadows(self) -> int:
        return 2 if self.variant == "online" else 1

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        if "hflip" in self.augment and not hflip_preserves_label:
            return ()  # score() refuses with the reason
        return (Signal.scores("logit-confidence", augment=self.augment, reduce="keep"),)

    def score(self, context: AttackContext) -> np.ndarray:
        if "hflip" in self.augment and not context.hflip_preserves_label:
            raise OptionError("mirrored queries change labels in this dataset; use augment=none")
        target = signals(context.target, self.augment)
        shadows = np.stack([signals(view, self.augment) for view in context.shadows])
        global_variance = (
            len(context.shadows) < GLOBAL_VARIANCE_BELOW
            if self.global_variance is None
            else self.global_variance
        )
        return lira_scores(target, shadows, context.shadow_keep, self.variant, global_variance)


@hookimpl
def register_attacks(register):
    register(LiRA)
