"""Small built-in networks that train in seconds on a CPU, with timm's feature/head API
(:class:`privbench.helpers.TimmStyleNet`, so that the core reads pre-logits exactly as it does
from a timm model).

ReLUs are not in-place and batch norm is off by default: opacus' per-sample gradient hooks fail
on in-place ops and refuse batch norm, and DP-SGD must be able to train these networks as they
are.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
from torch import nn

from privbench import hookimpl
from privbench.helpers import TimmStyleNet, mlp_features


class ConvNet(TimmStyleNet):
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
    ) -> None:
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
        super().__init__(nn.Sequential(*layers), channels, num_classes, pool)


class MLPNet(TimmStyleNet):
    """Flatten, ``depth`` hidden ReLU layers of ``width`` units, linear head."""

    def __init__(self, in_features: int, num_classes: int, width: int, depth: int) -> None:
        features = mlp_features(in_features, width, depth)
        super().__init__(features, width if depth else in_features, num_classes)


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
