"""What flows between the core and plugins: images with labels (:class:`TensorData`), a loaded
dataset (:class:`LoadedDataset`), a classifier with its preprocessing (:class:`Model`) and the
training recipe (:class:`TrainingRecipe`).

The input convention everywhere: images are float32 ``N x C x H x W`` in ``[0, 1]``, labels
int64 class indices; a :class:`Model` normalises by the dataset's mean and std inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@attrs.frozen(eq=False)
class TensorData:
    """Images in ``[0, 1]`` (``N x C x H x W``, float32) with integer labels (``N``, int64)."""

    x: torch.Tensor
    y: torch.Tensor

    def __attrs_post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.x.shape[0]} images but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray | torch.Tensor | Sequence[int]) -> TensorData:
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return TensorData(self.x[index], self.y[index])


@attrs.frozen(eq=False)
class LoadedDataset:
    """What a :class:`DatasetSource` returns.

    ``train`` is the pool from which the membership population is drawn; ``test`` is held out of
    every model's training and measures utility.
    """

    train: TensorData
    test: TensorData
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip_preserves_label: bool = True
    """False where mirroring changes the class (digits): the trainer then never flips."""
    train_names: tuple[str, ...] | None = None
    """A stable name per train-split sample where the data has one (ImageFolder: the image's
    path under the data root): member files may list samples by it, and results keep it."""

    def __attrs_post_init__(self) -> None:
        if self.train_names is not None and len(self.train_names) != len(self.train):
            raise ValueError(
                f"{len(self.train_names)} train_names for {len(self.train)} train samples"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)


class Model(nn.Module):
    """A classifier with its preprocessing: inputs in ``[0, 1]``, normalised inside.

    ``net`` is the timm-style network; ``mean`` and ``std`` are buffers, so they travel with the
    weights in the store.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images in ``[0, 1]``."""
        return self.net(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (timm's pre-logits) of images in ``[0, 1]``."""
        return self.net.forward_head(self.net.forward_features(self.normalize(x)), pre_logits=True)

    def classify_features(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from penultimate features: the classifier head alone."""
        return self.net.get_classifier()(features)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample cross-entropy (never the batch mean)."""
        return F.cross_entropy(self(x), y, reduction="none")


FLOAT32_MAX = 3.4028234663852886e38


def _finite(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    """Models train in float32: inf, nan or a value beyond float32's range would only fail
    once the first model trained (or silently overflow to inf)."""
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise ValueError(f"'{attribute.name}' must be a finite float32 (below 3.4e38): {value}")


@attrs.frozen
class TrainingRecipe:
    """Everything about training that is not the data, the model or the defense."""

    epochs: int = attrs.field(default=30, validator=attrs.validators.ge(1))
    batch_size: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    optimizer: str = attrs.field(default="sgd", validator=attrs.validators.in_(("sgd", "adamw")))
    lr: float = attrs.field(default=0.05, validator=[attrs.validators.gt(0), _finite])
    momentum: float = attrs.field(default=0.9, validator=[attrs.validators.ge(0), _finite])
    weight_decay: float = attrs.field(default=5e-4, validator=[attrs.validators.ge(0), _finite])
    augment: str = attrs.field(
        default="none", validator=attrs.validators.in_(("none", "flip", "crop", "flip+crop"))
    )
    """Standard augmentation: random horizontal flip and/or random crop with 1/8 padding."""
    loss: str = attrs.field(
        default="cross-entropy", validator=attrs.validators.in_(("cross-entropy", "mse"))
    )
    """Training objective. ``mse``: half the squared error to one-hot targets minus ``1/C``,
    summed over classes and averaged over the batch: the kernel-regime setting of Loo et al.
    (ICLR 2024) in which reconstruction attacks are studied. Attacks still query cross-entropy."""
    schedule: str = attrs.field(
        default="cosine", validator=attrs.validators.in_(("cosine", "constant"))
    )
    """Learning-rate schedule over the epochs: cosine annealing to zero, or constant (full-batch
    gradient descent as in Loo et al. and Haim et al.: ``--batch-size`` at least the data size)."""
