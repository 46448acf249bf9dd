"""Threshold attacks on one query per sample: the baselines every other attack must beat.

Threat model: ``logits`` access to the target (the loss needs the true label, which the
attacker holds for its candidate samples); no shadow models.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np
import torch
from torch.nn import functional as F

from privbench import Access, AttackContext, Signal, hookimpl
from privbench.helpers import mirror_averaged_logits


@attrs.frozen
class LossAttack:
    """Yeom et al. (2018): training samples have lower loss, so the score is the negated loss.

    Yeom et al. fix the threshold at the mean training loss; privbench sweeps every threshold
    (the ROC), which contains theirs.
    """

    name: ClassVar[str] = "loss"
    description: ClassVar[str] = "Yeom et al. 2018: members have lower cross-entropy loss"
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 0

    hflip: bool = False
    """Average the logits of the image and its mirror (only where mirroring keeps the label)."""

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        return Signal.queries(self.hflip)

    def score(self, context: AttackContext) -> np.ndarray:
        logits = mirror_averaged_logits(context.target, self.hflip)
        loss = F.cross_entropy(logits, context.population.y, reduction="none")
        return (-loss).numpy()


@attrs.frozen
class ConfidenceAttack:
    """Members get higher confidence in their true class (Salem et al. 2019; Song & Mittal 2021).

    Ranks like the loss attack for one query with plain softmax; kept separate because with
    ``temperature`` or ``hflip`` averaging of probabilities the two differ.
    """

    name: ClassVar[str] = "confidence"
    description: ClassVar[str] = "members get higher softmax probability on their true class"
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 0

    temperature: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    """Softmax temperature applied to the logits before the true-class probability."""
    hflip: bool = False
    """Average the probabilities of the image and its mirror (where mirroring keeps labels)."""

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        return Signal.queries(self.hflip)

    def score(self, context: AttackContext) -> np.ndarray:
        probs = torch.softmax(context.target.population_logits("none") / self.temperature, dim=1)
        if self.hflip:
            flipped = context.target.population_logits("hflip") / self.temperature
            probs = (probs + torch.softmax(flipped, dim=1)) / 2
        return probs.gather(1, context.population.y[:, None]).squeeze(1).numpy()


@hookimpl
def register_attacks(register):
    register(LossAttack)
    register(ConfidenceAttack)
