"""The membership game of LiRA (Carlini et al. 2022): a population and per-model random halves.

Model ``k`` of a pool trains on its own seeded random half of the population. A mask depends only
on ``(seed, k)``, so growing the pool from 8 to 64 models keeps the first 8 (and their stored
weights) as they were; any model can serve as the target while the others act as its shadows.
"""

from __future__ import annotations

import hashlib

import numpy as np


def model_seed(seed: int, index: int) -> int:
    """The training seed of model *index* of a pool: independent streams per model."""
    return int(np.random.SeedSequence((seed, index)).generate_state(1)[0])


def keep_mask(population_size: int, index: int, seed: int) -> np.ndarray:
    """Which population samples model *index* trains on: exactly half of them, at random."""
    rng = np.random.default_rng(np.random.SeedSequence((seed, index, 0x6B656570)))
    keep = np.zeros(population_size, dtype=bool)
    keep[rng.permutation(population_size)[: population_size // 2]] = True
    return keep


def paired_mask(population_size: int, index: int, seed: int) -> np.ndarray:
    """Curvature Clues' scheme: model ``2j`` keeps each sample with probability 1/2 and model
    ``2j + 1`` keeps exactly the others, so every pair covers the population once."""
    rng = np.random.default_rng(np.random.SeedSequence((seed, index // 2, 0x70616972)))
    keep = rng.random(population_size) < 0.5
    return keep if index % 2 == 0 else ~keep


def keep_masks(
    population_size: int, num_models: int, seed: int, *, paired: bool = False
) -> np.ndarray:
    """``num_models x population_size`` booleans, one row per model of the pool."""
    make = paired_mask if paired else keep_mask
    return np.stack([make(population_size, k, seed) for k in range(num_models)])


def shadow_indices(pool_size: int, target: int, *, paired: bool = False) -> list[int]:
    """The models that serve as *target*'s shadows: every other model of the pool, except, with
    paired masks, the target's partner. Its mask is the complement of the target's, so keeping it
    would hand the attacker the target's membership through ``shadow_keep`` (and, more subtly,
    make the number of IN shadows of a sample depend on the target's membership). Without the
    partner, the remaining pairs are independent of the target's mask."""
    partner = target ^ 1 if paired else -1
    return [k for k in range(pool_size) if k not in (target, partner)]


def shadow_count(pool_size: int, *, paired: bool = False) -> int:
    """The fewest shadows any target of the pool gets (see :func:`shadow_indices`): every
    other model, less target 0's partner (model 1) when masks are paired. In closed form, as
    counting each target's list takes minutes for a pool of 100,000 models."""
    return max(0, pool_size - 1 - (1 if paired and pool_size >= 2 else 0))


def population_indices(available: int, size: int | None, seed: int) -> np.ndarray:
    """Indices of the population within a dataset's train split: all of it, or a seeded subset."""
    if size is None or size >= available:
        return np.arange(available)
    rng = np.random.default_rng(np.random.SeedSequence((seed, 0x706F70)))
    return np.sort(rng.choice(available, size=size, replace=False))


def mask_digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask.astype(bool)).tobytes()).hexdigest()
