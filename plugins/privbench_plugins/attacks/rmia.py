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

Tuning ``a`` (``offline_a="auto"``, the default). The paper tunes ``a`` per setting, and the
official code does so by default (``tune_offline_a`` in ``attacks.py``, called by ``audit.py``
for every target; ``modules/mia/attack.py`` whenever no ``offline_a`` is given): it attacks one
reference model as a stand-in target with the others, for ``a`` in 0, 0.1, ..., 1, and keeps the
``a`` with the highest AUC on that model's known membership. This plugin does the same with the
first reference model as the stand-in target and the remaining ones as its references, on a
finer grid (:data:`A_GRID`, 0 to 1 in steps of 0.05, which contains the official one), the first
best ``a`` winning ties; then it attacks the real target with all reference models and that
``a`` (:func:`tune_offline_a`; the chosen ``a`` is logged at INFO on this module's logger). It
costs no query beyond the reference models' population signals, which the attack reads anyway.
Online, the paper has no ``a``: this plugin uses it only for samples without an IN (or OUT)
reference model, and ``auto`` there stands for :data:`DEFAULT_A` without tuning.

Choice of z. The paper draws z from population data. privbench's context holds no samples known
to be outside the target's training set, so z is a seeded random subset of the population
itself (``num_z`` of them, from ``context.seed``), each with its ratio computed exactly as x's.
Because one z set serves every x, the score is the empirical CDF of LR(z) at LR(x) / gamma, a
monotone function of LR(x): z sets the resolution (1 / num_z) and the calibration across targets,
not the ranking within one target. It is computed by sorting and binary search, O(N log Z),
rather than an N x Z comparison matrix.
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar, Literal

import attrs
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from privbench import Access, AttackContext, ModelView, OptionError, Signal, hookimpl

_TINY = np.finfo(np.float64).tiny
log = logging.getLogger(__name__)

A_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))
"""The values of ``a`` that ``offline_a="auto"`` tries: 0, 0.05, ..., 1 (the official code
tries 0, 0.1, ..., 1)."""

DEFAULT_A = 0.3
"""The fixed ``a`` this plugin used before tuning (the official module's README example): what
``auto`` stands for online, where the paper has no ``a``."""


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
    # a = 0 makes Pr_in = 1 whatever Pr_out: take the limit a -> 0 of the inversion (0).
    out_from_in = np.maximum((mean_in - (1 - a)) / a, 0.0) if a > 0 else np.zeros_like(mean_in)
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


def tune_offline_a(
    shadows: np.ndarray,
    keep: np.ndarray,
    z_index: np.ndarray,
    gamma: float,
    grid: tuple[float, ...] = A_GRID,
) -> tuple[float, np.ndarray]:
    """The offline ``a`` of the paper's tuning, from the reference models' ``S x N``
    log-probabilities and keep-mask: reference model 0 is attacked (offline) with models 1..S-1
    for every ``a`` in *grid*; returns the first ``a`` with the highest AUC of those scores on
    model 0's keep-mask, and the AUC of every ``a``. Needs ``S >= 2`` and model 0 to have both
    members and non-members among the samples."""
    keep = np.asarray(keep, dtype=bool)
    if len(shadows) < 2:
        raise OptionError(
            "rmia offline_a=auto needs at least 2 reference models (one attacked, one as its "
            f"reference), {len(shadows)} given; set offline_a to a number"
        )
    member = keep[0]
    if member.all() or not member.any():
        raise OptionError(
            "rmia offline_a=auto needs the first reference model to have both members and "
            "non-members; set offline_a to a number"
        )
    aucs = np.array(
        [
            roc_auc_score(
                member,
                pairwise_scores(
                    log_likelihood_ratio(
                        shadows[0], shadows[1:], keep[1:], online=False, offline_a=a
                    ),
                    z_index,
                    gamma,
                ),
            )
            for a in grid
        ]
    )
    return float(grid[int(np.argmax(aucs))]), aucs


@attrs.frozen
class RMIA:
    """Zarifzadeh et al. (2024): pairwise likelihood ratios against population samples.

    Works with a single reference model (offline approximation where a side is missing), except
    ``variant=offline`` with ``offline_a=auto`` (the default), which tunes ``a`` on the reference
    models and needs at least 2 of them.
    """

    name: ClassVar[str] = "rmia"
    description: ClassVar[str] = (
        "Zarifzadeh et al. 2024 relative attack: Pr(x|theta)/Pr(x) compared with population z"
    )
    access: ClassVar[Access] = Access.LOGITS

    variant: Literal["online", "offline"] = "online"
    """``online``: Pr(x) from IN and OUT reference models; ``offline``: OUT models only."""
    offline_a: float | Literal["auto"] = attrs.field(default="auto")
    """Slope ``a`` of the offline approximation Pr_in ~ a Pr_out + 1 - a (1: Pr(x) = Pr_out).
    A number in (0, 1], or ``auto`` (the default, as in the official code): offline, the ``a``
    in 0, 0.05, ..., 1 with the best AUC when the first reference model is attacked with the
    others (the paper's tuning; needs 2 reference models); online, where the paper has no ``a``
    and this plugin uses it only for samples lacking an IN or OUT model, 0.3 untuned."""
    gamma: float = attrs.field(default=1.0, validator=attrs.validators.gt(0.0))
    """Dominance threshold: x dominates z when LR(x) / LR(z) > gamma (1: LR(x) > LR(z))."""
    num_z: int = attrs.field(default=10_000, validator=attrs.validators.ge(2))
    """How many population samples serve as the reference points z (all of them, if fewer).
    Drawn with the context's seed; the score's resolution is 1 / num_z."""
    temperature: float = attrs.field(default=1.0, validator=attrs.validators.gt(0.0))
    """Softmax temperature for Pr(x | theta)."""
    augment: Literal["none", "hflip"] = "none"
    """Queries per sample: the image, or the image and its mirror (probabilities averaged)."""

    @offline_a.validator
    def _check_offline_a(self, attribute: attrs.Attribute, value: float | str) -> None:
        if value == "auto" and isinstance(value, str):
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"'offline_a' must be a number in (0, 1] or 'auto': {value!r}")

    @property
    def tunes_a(self) -> bool:
        """Whether ``score`` tunes ``a`` on the reference models (offline with ``auto``)."""
        return self.variant == "offline" and self.offline_a == "auto"

    @property
    def min_shadows(self) -> int:
        return 2 if self.tunes_a else 1

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        return Signal.queries(self.augment == "hflip")

    def score(self, context: AttackContext) -> np.ndarray:
        labels = context.population.y

        def logp(view: ModelView) -> np.ndarray:
            return log_true_class_probability(view, labels, self.augment, self.temperature)

        if self.tunes_a and len(context.shadows) < 2:
            raise OptionError(
                "rmia offline_a=auto needs at least 2 reference models (one attacked, one as "
                f"its reference), {len(context.shadows)} given; set offline_a to a number"
            )
        n = len(labels)
        rng = np.random.default_rng(context.seed)
        z_index = np.sort(rng.choice(n, size=min(self.num_z, n), replace=False))
        shadows = np.stack([logp(view) for view in context.shadows])
        if self.tunes_a:
            a, aucs = tune_offline_a(shadows, context.shadow_keep, z_index, self.gamma)
            log.info("rmia offline_a=auto: a=%.2f (AUC %.4f on reference model 0)", a, aucs.max())
        else:
            a = DEFAULT_A if self.offline_a == "auto" else float(self.offline_a)
        log_ratio = log_likelihood_ratio(
            logp(context.target),
            shadows,
            context.shadow_keep,
            online=self.variant == "online",
            offline_a=a,
        )
        return pairwise_scores(log_ratio, z_index, self.gamma)


@hookimpl
def register_attacks(register):
    register(RMIA)
