"""Shadow-calibrated baselines that Curvature Clues (Ravikumar et al., NeurIPS 2024) compares
against: Sablayrolles et al. 2019, Watson et al. 2022, Ye et al. 2022 (Attack R) and Song &
Mittal 2021.

Threat model: ``logits`` access to the target; the shadow models (the attacker trained them, each
on a random half of the population recorded in ``shadow_keep``) serve as reference models. For a
sample *x*, its IN shadows trained on it and its OUT shadows did not.

All four calibrate a one-query statistic (cross-entropy loss, or modified entropy) with the shadow
models: a loss that is low *for this sample* (or *for this class*) signals membership, where the
uncalibrated ``loss`` attack can only say it is low in absolute terms, so hard non-members and
easy members no longer mix. With ``hflip`` the target and the shadows are all queried on the image
and its mirror (logits averaged), so that calibration compares like with like.

A sample whose shadows hold no OUT (or no IN) model falls back to the statistic pooled over all
samples' OUT (IN) shadow values: with ``S`` shadows that happens to a fraction ``2**-S`` of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import attrs
import numpy as np
import torch
from torch.nn import functional as F

from privbench import Access, AttackContext, ModelView, Signal, hookimpl
from privbench.helpers import mirror_averaged_logits

Statistic = Callable[[torch.Tensor, torch.Tensor], np.ndarray]
"""A per-sample statistic of ``(logits, labels)``."""


def _logits(view: ModelView, hflip: bool) -> torch.Tensor:
    """Population logits in float64 (tail precision for near-zero losses), hflip-averaged."""
    return mirror_averaged_logits(view, hflip, torch.float64)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-sample cross-entropy through ``log_softmax`` (finite for any finite logits)."""
    return (-F.log_softmax(logits.double(), dim=1).gather(1, y[:, None]).squeeze(1)).numpy()


def modified_entropy(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Song & Mittal (2021), modified prediction entropy:
    ``Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``; low for members.

    ``log(1 - p_i)`` is exact even where ``p_i`` rounds to 1: for the top class it is
    ``logsumexp`` of the other logits minus ``logsumexp`` of all (``p_i <= 1/2`` for the others,
    where ``log1p(-p_i)`` is exact), so confident members keep distinct, finite values instead of
    the ``log(1 - p + 1e-9)`` clipping of common implementations.
    """
    logits = logits.double()
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    top = logits.argmax(1, keepdim=True)
    others = logits.scatter(1, top, float("-inf"))
    log_rest_top = torch.logsumexp(others, 1, keepdim=True) - torch.logsumexp(logits, 1, True)
    log_1mp = torch.log1p(-p.clamp(max=0.5)).scatter(1, top, log_rest_top)
    true = y[:, None]
    own = -log_1mp.gather(1, true).exp() * log_p.gather(1, true)
    rest = -(p * log_1mp).scatter(1, true, 0.0).sum(1, keepdim=True)
    return (own + rest).squeeze(1).numpy()


def _shadow_values(
    context: AttackContext, statistic: Statistic, hflip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The statistic of every shadow on every sample (``S x N``) and the IN mask (``S x N``)."""
    keep = np.asarray(context.shadow_keep, dtype=bool)
    n = len(context.population)
    if not context.shadows or keep.shape != (len(context.shadows), n):
        raise ValueError(
            f"need shadow models with an S x N keep mask; got {len(context.shadows)} shadows and "
            f"a mask of shape {keep.shape} for {n} samples"
        )
    y = context.population.y
    values = np.stack([statistic(_logits(view, hflip), y) for view in context.shadows])
    return values, keep


def _masked_mean(values: np.ndarray, mask: np.ndarray, what: str) -> np.ndarray:
    """Per-sample mean over the shadows in *mask*; samples with none get the pooled mean."""
    if not mask.any():
        raise ValueError(f"no {what} shadow value for any sample: train more shadow models")
    count = mask.sum(0)
    total = np.where(mask, values, 0.0).sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), values[mask].mean())


@attrs.frozen
class SablayrollesAttack:
    """Sablayrolles et al. (2019): the Bayes-optimal attack thresholds the loss at a
    sample-dependent ``tau(x)`` (their MAST approximation); score ``= -(loss(x) - tau(x))``.

    ``tau(x)`` is estimated from shadow models as the midpoint of x's mean loss over its IN
    shadows and over its OUT shadows, the estimate the Curvature Clues code uses for this row of
    its table: the threshold halfway between "x was trained on" and "x was not".
    """

    name: ClassVar[str] = "sablayrolles"
    description: ClassVar[str] = (
        "Sablayrolles et al. 2019: loss minus a per-sample threshold from IN/OUT shadow losses"
    )
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 2

    hflip: bool = False
    """Average the logits of the image and its mirror (only where mirroring keeps the label)."""

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        return Signal.queries(self.hflip)

    def score(self, context: AttackContext) -> np.ndarray:
        values, keep = _shadow_values(context, cross_entropy, self.hflip)
        tau = (_masked_mean(values, keep, "IN") + _masked_mean(values, ~keep, "OUT")) / 2
        return tau - cross_entropy(_logits(context.target, self.hflip), context.population.y)


@attrs.frozen
class WatsonAttack:
    """Watson et al. (2022), offline difficulty calibration of the loss: score
    ``= -(loss_target(x) - mean loss of x over OUT reference models)``.

    Only the OUT shadows are used, as in the paper's offline setting where reference models never
    train on the candidates (the variant in the Curvature Clues table).
    """

    name: ClassVar[str] = "watson"
    description: ClassVar[str] = (
        "Watson et al. 2022: loss calibrated by the sample's mean loss on OUT shadow models"
    )
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 1

    hflip: bool = False
    """Average the logits of the image and its mirror (only where mirroring keeps the label)."""

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        return Signal.queries(self.hflip)

    def score(self, context: AttackContext) -> np.ndarray:
        values, keep = _shadow_values(context, cross_entropy, self.hflip)
        reference = _masked_mean(values, ~keep, "OUT")
        return reference - cross_entropy(_logits(context.target, self.hflip), context.population.y)


def _percentile(loss: np.ndarray, values: np.ndarray, out: np.ndarray, method: str) -> np.ndarray:
    """Where each target loss falls in its sample's OUT-shadow losses, in ``[0, 1]``.

    ``weak``: the fraction of OUT losses ``<= loss``. ``linear``: the inverse of numpy's default
    (linearly interpolated) percentile, so that ``loss < np.percentile(outs, 100 a)`` exactly
    when the result is ``< a``: sweeping the ROC over this score sweeps Ye et al.'s alpha.
    Samples without OUT shadows use every sample's OUT losses pooled.
    """
    count = out.sum(0)
    pooled = np.sort(values[out])
    ordered = np.sort(np.where(out, values, np.inf), axis=0)  # OUT losses first, per sample
    below = (ordered <= loss).sum(0)
    if method == "weak":
        result = below / np.maximum(count, 1)
        fallback = np.searchsorted(pooled, loss, side="right") / len(pooled)
        return np.where(count > 0, result, fallback)
    cols = np.arange(loss.shape[0])
    lo = ordered[np.clip(below - 1, 0, None), cols]
    hi = ordered[np.clip(below, None, ordered.shape[0] - 1), cols]
    inside = (below > 0) & (below < count)  # then lo <= loss < hi, both finite
    lo, hi = np.where(inside, lo, 0.0), np.where(inside, hi, 1.0)
    frac = np.where(inside, loss - lo, 0.0) / (hi - lo)
    result = np.where(
        below >= count, 1.0, np.where(inside, (below - 1 + frac) / np.maximum(count - 1, 1), 0.0)
    )
    positions = np.linspace(0.0, 1.0, len(pooled))
    fallback = np.interp(loss, pooled, positions) if len(pooled) > 1 else (loss >= pooled[0]) * 1.0
    return np.where(count > 0, result, fallback)


@attrs.frozen
class YeAttackR:
    """Ye et al. (2022), Attack R (reference models): x is a member when the target's loss falls
    below the alpha-percentile of x's loss distribution over reference (OUT) models. One score
    for every alpha: ``1 - percentile`` of the target's loss within x's OUT-shadow losses.

    (The Curvature Clues code instead fixes ``alpha = 1e-4`` and sweeps an offset added to that
    per-sample threshold; sweeping alpha itself is the attack as Ye et al. define it.)

    ``percentile``: ``linear`` (numpy's default interpolation, which the Curvature Clues code
    uses) or ``weak`` (the empirical CDF, a step function) rank losses among the few OUT values;
    with few shadows many scores tie at 0 or 1 (a loss beyond every OUT loss).
    ``gaussian`` fits a normal to x's OUT losses (per-sample standard deviation with ``ddof=1``,
    the mean variance of the others where a sample has fewer than two OUT shadows) and scores the
    z-score ``(mean - loss) / std``, which ranks exactly like ``1 - Phi(z)`` without its tail
    saturation.
    """

    name: ClassVar[str] = "attack-r"
    description: ClassVar[str] = (
        "Ye et al. 2022 Attack R: percentile of the target loss among its OUT shadow losses"
    )
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 1

    percentile: Literal["linear", "weak", "gaussian"] = attrs.field(
        default="linear", validator=attrs.validators.in_(("linear", "weak", "gaussian"))
    )
    """How the target's loss is placed among its OUT losses: ``linear``, ``weak``, ``gaussian``.
    ``linear``: numpy's interpolated percentile; ``weak``: the empirical CDF; ``gaussian``: the
    z-score against a normal fit (see the class docstring)."""
    hflip: bool = False
    """Average the logits of the image and its mirror (only where mirroring keeps the label)."""

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        return Signal.queries(self.hflip)

    def score(self, context: AttackContext) -> np.ndarray:
        values, keep = _shadow_values(context, cross_entropy, self.hflip)
        out = ~keep
        loss = cross_entropy(_logits(context.target, self.hflip), context.population.y)
        if self.percentile != "gaussian":
            if not out.any():
                raise ValueError("no OUT shadow value for any sample: train more shadow models")
            return 1.0 - _percentile(loss, values, out, self.percentile)
        mean = _masked_mean(values, out, "OUT")
        count = out.sum(0)
        squares = np.where(out, (values - mean) ** 2, 0.0).sum(0)
        enough = count >= 2
        var = squares / np.maximum(count - 1, 1)
        fallback = var[enough].mean() if enough.any() else values[out].var()
        std = np.sqrt(np.maximum(np.where(enough, var, fallback), 1e-24))
        return (mean - loss) / std


@attrs.frozen
class SongMittalAttack:
    """Song & Mittal (2021): threshold the modified entropy ``Mentr`` (low for members), with
    one threshold per class learned on shadow models (their metric-based attack, class-dependent
    thresholds).

    Each class's threshold is the value maximising the balanced accuracy
    ``(TPR + TNR) / 2`` of "member if ``-Mentr >= t``" over the shadows' IN/OUT examples of that
    class, as in the paper's code. To give one score comparable across classes, the score is the
    margin ``-Mentr(x) - t_{y(x)}``: it is positive exactly where the paper's class-wise rule says
    member, and the ROC sweeps a common offset to all class thresholds. A class without both IN
    and OUT shadow examples uses the threshold learned on all classes together.
    ``class_thresholds=False`` gives one global threshold, i.e. the score ``-Mentr``. (The
    Curvature Clues evaluation averages over classes an AUC computed on all samples, which is
    the AUC of ``class_thresholds=False``.)
    """

    name: ClassVar[str] = "song-mittal"
    description: ClassVar[str] = (
        "Song & Mittal 2021: modified entropy with class-wise thresholds from shadow models"
    )
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 1

    class_thresholds: bool = True
    """One threshold per class (the paper's attack) instead of one for all classes."""
    hflip: bool = False
    """Average the logits of the image and its mirror (only where mirroring keeps the label)."""

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        return Signal.queries(self.hflip)

    def score(self, context: AttackContext) -> np.ndarray:
        y = context.population.y
        signal = -modified_entropy(_logits(context.target, self.hflip), y)
        if not self.class_thresholds:
            return signal
        values, keep = _shadow_values(context, modified_entropy, self.hflip)
        values = -values
        labels = np.broadcast_to(y.numpy(), values.shape)
        overall = best_threshold(values[keep], values[~keep])
        thresholds = np.full(context.num_classes, overall)
        for c in np.unique(labels):
            members, others = values[keep & (labels == c)], values[~keep & (labels == c)]
            if len(members) and len(others):
                thresholds[c] = best_threshold(members, others)
        return signal - thresholds[y.numpy()]


def best_threshold(members: np.ndarray, non_members: np.ndarray) -> float:
    """The threshold ``t`` among the observed values maximising the balanced accuracy of
    "member if value >= t" (Song & Mittal's threshold search, vectorised)."""
    if not len(members) or not len(non_members):
        raise ValueError("a threshold needs both member and non-member shadow values")
    candidates = np.unique(np.concatenate([members, non_members]))
    tpr = 1.0 - np.searchsorted(np.sort(members), candidates, side="left") / len(members)
    tnr = np.searchsorted(np.sort(non_members), candidates, side="left") / len(non_members)
    return float(candidates[np.argmax(tpr + tnr)])


@hookimpl
def register_attacks(register):
    register(SablayrollesAttack)
    register(WatsonAttack)
    register(YeAttackR)
    register(SongMittalAttack)
