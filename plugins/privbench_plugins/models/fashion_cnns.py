"""CNNs for 28x28 grey images (Fashion-MNIST, MNIST) whose convolutions feed a fully connected
hidden layer, the shape the datasets' published baselines use, unlike ``small-cnn``'s global
average pool, which throws away where a feature is and stays below 0.75 test accuracy on
Fashion-MNIST.

- ``conv-fc``: two 3x3 conv + 2x2 max-pool blocks, a hidden ReLU layer, the head: the standard
  small CNN of the Fashion-MNIST benchmark ("2 Conv+pooling", 0.916 test accuracy, in the table
  of the dataset's README, Xiao et al. 2017).
- ``tanh-cnn``: the end-to-end DP-SGD CNN of Papernot et al. ("Tempered Sigmoid Activations for
  Deep Learning with Differential Privacy", AAAI 2021), which Tramèr & Boneh (ICLR 2021) train as
  their CNN baseline on MNIST and Fashion-MNIST: 8x8 and 4x4 strided convs with tanh, 2x2
  max-pools of stride 1, a 32-unit tanh layer, no normalisation. Bounded activations keep
  per-sample gradients small, which is what DP-SGD's clipping wants.

Both follow :class:`privbench.helpers.TimmStyleNet`: the hidden layer's output is the
pre-logits (what feature noise perturbs and feature inversion reads). Activations are modules,
never in-place, and there is no batch norm (``norm="group"`` adds GroupNorm instead), so opacus
trains them as they are.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import attrs
import torch
from torch import nn

from privbench import hookimpl
from privbench.helpers import TimmStyleNet


def _flat_size(features: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """How many values *features* gives for one image of *input_shape*."""
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).numel())


class FlattenNet(TimmStyleNet):
    """``features``, then flatten, a hidden fully connected layer and its activation (the
    pre-logits), then the linear head."""

    def __init__(
        self,
        features: nn.Module,
        input_shape: tuple[int, int, int],
        hidden: int,
        activation: type[nn.Module],
        num_classes: int,
    ) -> None:
        flat = _flat_size(features, input_shape)
        pool = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), activation())
        super().__init__(features, hidden, num_classes, pool)


def _norm(kind: str, channels: int) -> nn.Module:
    # Groups of 8 channels at most, as Wu & He (2018) default to 32 groups on wider layers.
    return nn.GroupNorm(max(1, channels // 8), channels) if kind == "group" else nn.Identity()


@attrs.frozen
class ConvFC:
    """On the full Fashion-MNIST (60,000 images) the ``fashion-mnist`` preset's recipe (15
    epochs of SGD, horizontal flips) reaches about 0.92 test accuracy (docs/results/)."""

    name: ClassVar[str] = "conv-fc"
    description: ClassVar[str] = (
        "two conv + max-pool blocks, a hidden fully connected layer, linear head (28x28 images)"
    )

    width: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    """Channels of the first conv (the second has twice as many)."""
    hidden: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    """Units of the hidden fully connected layer (the pre-logits)."""
    norm: Literal["none", "group"] = "none"
    """Normalisation after each conv: none, or GroupNorm (per sample, so DP-SGD can use it)."""

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for out in (self.width, 2 * self.width):
            layers += [
                nn.Conv2d(channels, out, 3, padding=1),
                _norm(self.norm, out),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            channels = out
        return FlattenNet(nn.Sequential(*layers), input_shape, self.hidden, nn.ReLU, num_classes)


@attrs.frozen
class TanhCNN:
    """Papernot et al.'s layers for 28x28 inputs: conv 16 x 8x8 stride 2 padding 2, max-pool 2
    stride 1, conv 32 x 4x4 stride 2, max-pool 2 stride 1, tanh after each conv, then 32 tanh
    units (26,010 parameters on Fashion-MNIST)."""

    name: ClassVar[str] = "tanh-cnn"
    description: ClassVar[str] = (
        "the end-to-end DP-SGD CNN of Papernot et al. 2021 / Tramer & Boneh 2021 (tanh, 28x28)"
    )
    min_input_size: ClassVar[int] = 16
    """Two stride-2 convs (8x8, 4x4) and two 2x2 pools leave 1 pixel of a 16x16 image."""

    width: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    """Channels of the first conv (the second has twice as many); 16 in the papers."""
    hidden: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    """Units of the hidden tanh layer (the pre-logits); 32 in the papers."""

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        features = nn.Sequential(
            nn.Conv2d(input_shape[0], self.width, 8, stride=2, padding=2),
            nn.Tanh(),
            nn.MaxPool2d(2, stride=1),
            nn.Conv2d(self.width, 2 * self.width, 4, stride=2),
            nn.Tanh(),
            nn.MaxPool2d(2, stride=1),
        )
        return FlattenNet(features, input_shape, self.hidden, nn.Tanh, num_classes)


@hookimpl
def register_models(register):
    register(ConvFC)
    register(TanhCNN)
