"""The canaries of a one-run audit (Steinke, Nasr & Jagielski, NeurIPS 2023): which population
samples they are, the labels they carry, and which of them the one model trains on.

``canaries`` samples of the population are drawn at random; each is included with probability
1/2, independently, and every other sample is always included, as in the paper's Algorithm 1.
Mislabelled canaries (the default) carry a wrong label drawn uniformly from the other classes:
an example the model can only fit by memorising it, so its membership shows most, which makes
the audit tightest without access beyond the model's outputs (the paper's black-box audits use
such input-space canaries). Natural canaries keep their labels: the audit then measures what
typical training images leak. Everything depends on ``(seed, population)`` alone.

The bound itself is :mod:`privbench.analysis.one_run`.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch

from privbench.errors import OptionError
from privbench.plugins.interfaces import TensorData

DEFAULT_CANARIES = 1000
"""The paper's count for its input-space audits (1,000 of CIFAR-10's 50,000 images); capped at
half the population, so that most of the training set is ordinary data."""

CANARY_KINDS = ("mislabelled", "natural")


@attrs.frozen(eq=False)
class Canaries:
    """The canaries of a one-run audit, as positions in the population."""

    positions: np.ndarray
    """Sorted population positions of the canaries."""
    included: np.ndarray
    """Whether the model trains on each canary (the game's coin flips)."""
    kind: str

    def keep_mask(self, population_size: int) -> np.ndarray:
        """The model's training samples: every non-canary and the included canaries."""
        keep = np.ones(population_size, dtype=bool)
        keep[self.positions] = self.included
        return keep


def canary_count(requested: int | None, population_size: int) -> int:
    """How many canaries to draw: as requested, or the default, which fits the population."""
    if requested is None:
        return max(2, min(DEFAULT_CANARIES, population_size // 2))
    if not 2 <= requested <= population_size:
        raise OptionError(
            f"--canaries {requested}: give between 2 and the population's {population_size} "
            "samples (the paper's audits use 1,000; more canaries give a tighter bound)"
        )
    return requested


def draw_canaries(
    population: TensorData, num_classes: int, count: int, kind: str, seed: int
) -> tuple[Canaries, TensorData]:
    """*count* canaries of *kind* (one of :data:`CANARY_KINDS`, as the spec checks) in
    *population*, and the population as the model sees it (mislabelled canaries with their
    wrong labels)."""
    rng = np.random.default_rng(np.random.SeedSequence((seed, 0x63616E61)))
    positions = np.sort(rng.choice(len(population), size=count, replace=False))
    included = rng.random(count) < 0.5
    if kind == "natural":
        return Canaries(positions, included, kind), population
    if num_classes < 2:
        raise OptionError("mislabelled canaries need at least 2 classes; use --canary-kind natural")
    labels = population.y.clone()
    shift = torch.as_tensor(rng.integers(1, num_classes, size=count), dtype=labels.dtype)
    index = torch.as_tensor(positions, dtype=torch.long)
    labels[index] = (labels[index] + shift) % num_classes
    return Canaries(positions, included, kind), TensorData(population.x, labels)
