"""RMIA, the relative membership inference attack of Zarifzadeh, Liu and Shokri (2024),
"Low-Cost High-Power Membership Inference Attacks" (ICML; official code:
privacytrustlab/ml_privacy_meter).

Threat model: ``logits`` access to the target; reference (shadow) models trained by the attacker
on random halves of the population; the population itself as the attacker's reference data.

RMIA scores ``x`` by how often its likelihood ratio against the reference models dominates that
of population samples ``z``:

    LR(x) = Pr(x | theta) / Pr(x),   Pr(x) = E_theta'[Pr(x | theta')] over reference models,
    score(x) = fraction of z with LR(x) / LR(z) > gamma.

``Pr(x | theta)`` is the softmax probability of the true label (the paper's and the official
code's choice, with an optional temperature). Online, ``Pr(x)`` averages IN and OUT reference
models; offline, only OUT models are used and the missing IN models are approximated linearly,
``Pr_in(x) ~ a Pr_out(x) + (1 - a)``, so that ``Pr(x) = ((1 + a) Pr_out(x) + 1 - a) / 2`` (the
paper's offline RMIA; with a single reference model the official code inverts the same relation
to turn an IN model into an OUT estimate, and so does this plugin wherever a sample has no OUT
reference model).

Choice of z. The paper draws z from population data. privbench's context holds no samples known
to be outside the target's training set, so z is a seeded random subset of the population
itself (``num_z`` of them, from ``context.seed``), each with its ratio computed exactly as x's.
Because one z set serves every x, the score is the empirical CDF of LR(z) at LR(x) / gamma, a
monotone function of LR(x): z sets the resolution (1 / num_z) and the calibration across targets,
not the ranking within one target. It is computed by sorting and binary search, O(N log Z),
rather than an N x Z comparison matrix.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import attrs
import numpy as np
import torch

from privbench import Access, AttackContext, ModelView, Signal, hookimpl

_TINY = np.finfo(np.float64).tiny


def log_true_class_probability(
    view: ModelView, labels: torch.Tensor, augment: str, temperature: float
) -> np.ndarray:
    """log Pr(x | theta) per population sample: the (temperature-scaled) softmax probability of
    the true label, averaged over the queried views (privbench's choice for ``hflip``)."""
    queries = ("none", "hflip") if augment == "hflip" else ("none",)
    index = labels.long()[:, None]
    logp = [
        torch.log_softmax(view.population_logits(q).double() / temperature, dim=1)
        .gather(1, index)
        .squeeze(1)
        for q in queries
    ]
    return (torch.logsumexp(torch.stack(logp), dim=0) - math.log(len(logp))).numpy()


def log_likelihood_ratio(
    target: np.ndarray, shadows: np.ndarray, keep: np.ndarray, *, online: bool, offline_a: float
) -> np.ndarray:
    """log Pr(x | theta) - log Pr(x) from the target's ``N`` log-probabilities and the reference
    models' ``S x N`` log-probabilities with their ``S x N`` keep-mask.

    Online, Pr(x) is the balanced mixture (Pr_in + Pr_out) / 2 of the IN and OUT means (the
    paper trains half of the reference models on x; here each sample's split is uneven, so the
    two means are weighted equally). Offline, Pr_in comes from the linear approximation above.
    """
    keep = np.asarray(keep, dtype=bool)
    p = np.exp(shadows)
    n_in, n_out = keep.sum(0), (~keep).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = (p * keep).sum(0) / n_in
        mean_out = (p * ~keep).sum(0) / n_out
    a = offline_a
    out_from_in = np.maximum((mean_in - (1 - a)) / a, 0.0)
    p_out = np.where(n_out > 0, mean_out, out_from_in)
    p_in = np.where(online & (n_in > 0), mean_in, a * p_out + (1 - a))
    return target - np.log(np.maximum((p_in + p_out) / 2, _TINY))


def pairwise_scores(log_ratio: np.ndarray, z_index: np.ndarray, gamma: float) -> np.ndarray:
    """Fraction of z (other than x itself) with LR(x) / LR(z) > gamma, for every x."""
    z = np.sort(log_ratio[z_index])
    threshold = log_ratio - math.log(gamma)
    count = np.searchsorted(z, threshold, side="left")  # z strictly below the threshold
    own = np.zeros(len(log_ratio), dtype=bool)
    own[z_index] = True
    count = count - (own & (log_ratio < threshold))
    return count / (len(z) - own)


@attrs.frozen
class RMIA:
    """Zarifzadeh et al. (2024): pairwise likelihood ratios against population samples.

    Works with a single reference model (offline approximation where a side is missing).
    """

    name: ClassVar[str] = "rmia"
    description: ClassVar[str] = (
        "Zarifzadeh et al. 2024 relative attack: Pr(x|theta)/Pr(x) compared with population z"
    )
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 1

    variant: Literal["online", "offline"] = "online"
    """``online``: Pr(x) from IN and OUT reference models; ``offline``: OUT models only."""
    offline_a: float = attrs.field(
        default=0.3, validator=[attrs.validators.gt(0.0), attrs.validators.le(1.0)]
    )
    """Slope ``a`` of the offline approximation Pr_in ~ a Pr_out + 1 - a (1: Pr(x) = Pr_out).
    The paper tunes it per dataset by attacking one reference model with the others; 0.3 is the
    official code's default."""
    gamma: float = attrs.field(default=1.0, validator=attrs.validators.gt(0.0))
    """Dominance threshold: x dominates z when LR(x) / LR(z) > gamma (1: LR(x) > LR(z))."""
    num_z: int = attrs.field(default=10_000, validator=attrs.validators.ge(2))
    """How many population samples serve as the reference points z (all of them, if fewer).
    Drawn with the context's seed; the score's resolution is 1 / num_z."""
    temperature: float = attrs.field(default=1.0, validator=attrs.validators.gt(0.0))
    """Softmax temperature for Pr(x | theta)."""
    augment: Literal["none", "hflip"] = "none"
    """Queries per sample: the image, or the image and its mirror (probabilities averaged)."""

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        return Signal.queries(self.augment == "hflip")

    def score(self, context: AttackContext) -> np.ndarray:
        labels = context.population.y

        def logp(view: ModelView) -> np.ndarray:
            return log_true_class_probability(view, labels, self.augment, self.temperature)

        log_ratio = log_likelihood_ratio(
            logp(context.target),
            np.stack([logp(view) for view in context.shadows]),
            context.shadow_keep,
            online=self.variant == "online",
            offline_a=self.offline_a,
        )
        n = len(log_ratio)
        rng = np.random.default_rng(context.seed)
        z_index = np.sort(rng.choice(n, size=min(self.num_z, n), replace=False))
        return pairwise_scores(log_ratio, z_index, self.gamma)


@hookimpl
def register_attacks(register):
    register(RMIA)
