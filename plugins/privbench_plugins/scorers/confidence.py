"""Output-based per-sample statistics, optionally under LiRA's query augmentations.

Carlini et al. (2022, Sec. 5.2 and their code) query each image under several augmentations (the
mirror image and one-pixel shifts) and fit one Gaussian per query; ``reduce=keep`` returns those
columns, ``reduce=mean`` their mean. Threat model: loss/score queries only (``logits`` access).
Mirroring is only meaningful where it keeps the label; the caller decides.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import attrs
import torch
from torch.nn import functional as F

from privbench import Access, ModelView, hookimpl

Augment = Literal["none", "hflip", "shift", "hflip+shift"]
SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def queries(x: torch.Tensor, augment: Augment) -> list[torch.Tensor]:
    """The image, its mirror and/or its four one-pixel shifts (reflect-padded, as LiRA's
    random-crop augmentation with padding does)."""
    bases = [x, x.flip(-1)] if "hflip" in augment else [x]
    if "shift" not in augment:
        return bases
    h, w = x.shape[-2:]
    out = []
    for base in bases:
        padded = F.pad(base, (1, 1, 1, 1), mode="reflect")
        out.append(base)
        out.extend(padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dx, dy in SHIFTS)
    return out


def logit_confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LiRA's ``log(p_y / (1 - p_y))``, computed from logits without forming ``1 - p_y``:
    ``z_y - logsumexp_{y' != y} z_y'``, finite even when ``p_y`` rounds to 1."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - torch.logsumexp(others, dim=1)


@attrs.frozen
class _OutputScorer:
    access: ClassVar[Access] = Access.LOGITS

    augment: Augment = "none"
    """Queries per sample: the image, its mirror and/or its four one-pixel shifts (LiRA's)."""
    reduce: Literal["mean", "keep"] = "mean"
    """How queries combine: ``mean`` one value per sample, ``keep`` one column per query.
    ``keep`` (``N x A``) serves per-query Gaussian fits."""

    def statistic(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, model: ModelView, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        columns = [self.statistic(model.logits(q).double(), y) for q in queries(x, self.augment)]
        values = torch.stack(columns, dim=1)
        return values.mean(1) if self.reduce == "mean" else values


@attrs.frozen
class LossScorer(_OutputScorer):
    name: ClassVar[str] = "loss"
    description: ClassVar[str] = "per-sample cross-entropy loss"

    def statistic(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, reduction="none")


@attrs.frozen
class ConfidenceScorer(_OutputScorer):
    name: ClassVar[str] = "confidence"
    description: ClassVar[str] = "softmax probability of the true class"

    def statistic(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)


@attrs.frozen
class LogitConfidenceScorer(_OutputScorer):
    name: ClassVar[str] = "logit-confidence"
    description: ClassVar[str] = "LiRA's logit-scaled confidence log(p / (1 - p))"

    def statistic(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return logit_confidence(logits, y)


@hookimpl
def register_scorers(register):
    register(LossScorer)
    register(ConfidenceScorer)
    register(LogitConfidenceScorer)
