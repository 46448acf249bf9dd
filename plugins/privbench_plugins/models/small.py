"""Small built-in networks that train in seconds on a CPU, with timm's feature/head API.

ReLUs are not in-place and batch norm is off by default: opacus' per-sample gradient hooks fail
on in-place ops and refuse batch norm, and DP-SGD must be able to train these networks as they
are.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import nn

from privbench import hookimpl


class _TimmStyle(nn.Module):
    """timm's split into ``forward_features`` (backbone) and ``forward_head`` (pool, then the
    classifier), so that the core reads pre-logits exactly as it does from a timm model."""

    def __init__(self, features: nn.Module, pool: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.features = features
        self.global_pool = pool
        self.num_features = num_features
        self.num_classes = num_classes
        self.head = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ConvNet(_TimmStyle):
    """3x3 conv blocks doubling the width, 2x2 max pooling between blocks, global average pool.

    Pooling stops once the map is smaller than 4 pixels, so any depth works on 8x8 digits and
    the global pool makes the head independent of the input size.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int,
        depth: int,
        batchnorm: bool,
    ):
        channels, height, width_px = input_shape
        size = min(height, width_px)
        layers: list[nn.Module] = []
        for block in range(depth):
            out = width * 2**block
            layers.append(nn.Conv2d(channels, out, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            if block < depth - 1 and size >= 4:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                size = (size + 1) // 2
            channels = out
        pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        super().__init__(nn.Sequential(*layers), pool, channels, num_classes)


class MLPNet(_TimmStyle):
    def __init__(self, in_features: int, num_classes: int, width: int, depth: int):
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        super().__init__(nn.Sequential(*layers), nn.Identity(), size, num_classes)


@attrs.frozen
class SmallCNN:
    """Three blocks by default: on 600 digits it reaches 100% train accuracy in 30 epochs
    (about a second on two cores), which a membership benchmark needs to show any leakage."""

    name: ClassVar[str] = "small-cnn"
    description: ClassVar[str] = "conv blocks (width doubling), global average pool, linear head"

    width: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    """Channels of the first block; each further block doubles them."""
    depth: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    """Number of conv blocks."""
    batchnorm: bool = False
    """Batch norm after each conv (opacus refuses it, so DP-SGD needs it off)."""

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return ConvNet(input_shape, num_classes, self.width, self.depth, self.batchnorm)


@attrs.frozen
class MLP:
    name: ClassVar[str] = "mlp"
    description: ClassVar[str] = "fully connected ReLU network on the flattened image"

    width: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    """Units per hidden layer."""
    depth: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    """Number of hidden layers (0: logistic regression on the pixels)."""

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        c, h, w = input_shape
        return MLPNet(c * h * w, num_classes, self.width, self.depth)


@hookimpl
def register_models(register):
    register(SmallCNN)
    register(MLP)
