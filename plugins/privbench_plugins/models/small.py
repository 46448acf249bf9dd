"""Small built-in networks that train in seconds on a CPU, with timm's feature/head API.

ReLUs are not in-place: opacus' per-sample gradient hooks fail on in-place ops.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import nn

from privbench import hookimpl


class _TimmStyle(nn.Module):
    """``forward_features`` -> pooled features -> ``head``, as timm's models split them."""

    features: nn.Module
    head: nn.Linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ConvNet(_TimmStyle):
    def __init__(self, in_chans: int, num_classes: int, width: int, depth: int, batchnorm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for block in range(depth):
            out = width * 2**block
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=not batchnorm)]
            layers += [nn.BatchNorm2d(out)] if batchnorm else []
            layers += [nn.ReLU()]
            # Pool between blocks only while the map is big enough: digits are 8x8.
            if block < depth - 1:
                layers += [nn.MaxPool2d(2, ceil_mode=True)]
            channels = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)


class MLPNet(_TimmStyle):
    def __init__(self, in_features: int, num_classes: int, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(size, num_classes)


@attrs.frozen
class SmallCNN:
    name: ClassVar[str] = "small-cnn"
    description: ClassVar[str] = "conv blocks (width doubling), global average pool, linear head"

    width: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    depth: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    batchnorm: bool = False

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return ConvNet(input_shape[0], num_classes, self.width, self.depth, self.batchnorm)


@attrs.frozen
class MLP:
    name: ClassVar[str] = "mlp"
    description: ClassVar[str] = "fully connected ReLU network on the flattened image"

    width: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    depth: int = attrs.field(default=2, validator=attrs.validators.ge(1))

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        c, h, w = input_shape
        return MLPNet(c * h * w, num_classes, self.width, self.depth)


@hookimpl
def register_models(register):
    register(SmallCNN)
    register(MLP)
