"""What a dataset plugin's ``load`` returns, built from its two splits: the per-channel
normalisation statistics of the train split, which every model applies inside (the core's
``Model`` wrapper), computed once here; and the seeded subset a ``limit`` option keeps."""

from __future__ import annotations

import numpy as np
import torch

from privbench.plugins.interfaces import LoadedDataset, TensorData

STD_FLOOR = 1e-6
"""Smallest per-channel standard deviation: a constant channel must not divide by zero."""


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (at least :data:`STD_FLOOR`) of images
    ``N x C x H x W``, over images and pixels."""
    mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
    std = tuple(x.std(dim=(0, 2, 3)).clamp_min(STD_FLOOR).tolist())
    return mean, std


def limit_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """At most *limit* of the indices ``0..n-1``: a sorted random subset drawn with *seed* (all of
    them without a limit), taken before the pixels are converted so a small limit stays cheap."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def loaded_dataset(
    train: TensorData,
    test: TensorData,
    num_classes: int,
    *,
    hflip_preserves_label: bool = True,
    train_names: tuple[str, ...] | None = None,
) -> LoadedDataset:
    """A :class:`~privbench.LoadedDataset` of the two splits, normalised by the train split's
    :func:`channel_stats` (the test split never shapes the model); *train_names*: a stable name
    per train sample (a file path), where the data has one."""
    mean, std = channel_stats(train.x)
    return LoadedDataset(
        train=train,
        test=test,
        num_classes=num_classes,
        mean=mean,
        std=std,
        hflip_preserves_label=hflip_preserves_label,
        train_names=train_names,
    )
