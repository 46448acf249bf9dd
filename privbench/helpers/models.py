"""The timm-style classifier structure that model plugins share: a backbone, a global pool and a
linear head, with timm's API (``forward_features``, ``forward_head(x, pre_logits=...)``,
``get_classifier``, ``reset_classifier``) so that the core and the defenses read penultimate
features of a plugin's network exactly as they do from a timm model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

LinearFactory = Callable[[int, int], nn.Module]
"""``(fan_in, fan_out) -> layer``: ``nn.Linear``, or an NTK-parameterised linear layer."""


class TimmStyleNet(nn.Module):
    """``features`` (the backbone), then ``global_pool`` and the classifier ``head``.

    - ``forward_features(x)``: the backbone's output (a feature map, or already a vector);
    - ``forward_head(f, pre_logits=True)``: the pooled penultimate features (timm's pre-logits,
      what :meth:`privbench.Model.features` returns), ``pre_logits=False``: the logits;
    - ``get_classifier()``: the head, which maps pre-logits to logits;
    - ``reset_classifier(num_classes)``: a fresh head for another class count.

    ``num_features`` is the width of the pre-logits; ``pool`` turns the backbone's output into
    them (none: the backbone ends in a vector already). The head is
    ``make_head(num_features, num_classes)``, built after the backbone that the subclass passes
    in, so parameters are drawn from the global RNG in module order.
    """

    def __init__(
        self,
        features: nn.Module,
        num_features: int,
        num_classes: int,
        pool: nn.Module | None = None,
        make_head: LinearFactory = nn.Linear,
    ) -> None:
        super().__init__()
        self.features = features
        self.global_pool = pool if pool is not None else nn.Identity()
        self.num_features = num_features
        self.num_classes = num_classes
        self._make_head = make_head
        self.head = make_head(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = self._make_head(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def mlp_features(
    in_features: int, width: int, depth: int, linear: LinearFactory = nn.Linear
) -> nn.Sequential:
    """The backbone of a fully connected ReLU network: flatten, then ``depth`` times
    ``linear(fan_in, width)`` and ``nn.ReLU()`` (modules, never functional or in place, so that
    an attack can swap the activations and opacus can follow every layer). Its output has
    ``width`` features (``in_features`` for ``depth=0``)."""
    layers: list[nn.Module] = [nn.Flatten()]
    size = in_features
    for _ in range(depth):
        layers += [linear(size, width), nn.ReLU()]
        size = width
    return nn.Sequential(*layers)
