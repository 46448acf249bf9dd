"""A fully connected ReLU network in the NTK parameterisation: the network of the kernel-regime
reconstruction attacks (Loo et al., "Understanding Reconstruction Attacks with the Neural Tangent
Kernel and Dataset Distillation", ICLR 2024; their official code's ``models.MLP`` with
``ntk_param=True``).

In the NTK parameterisation (Jacot et al. 2018) every weight is drawn from N(0, 1) and the layer
multiplies its output by ``weight_std / sqrt(fan_in)`` (and its bias by ``bias_std``), so that
the network's tangent kernel stays O(1) as the width grows and wide networks train in the
kernel regime with width-independent learning rates. Biases start at zero, as in the official
code (flax's default). ``parameterization=standard`` builds ordinary ``nn.Linear`` layers with
PyTorch's default initialisation instead.

Activations are ``nn.ReLU`` modules (never functional), so an attack can swap them for a smooth
relaxation (the reconstruction attack's softplus).
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import attrs
import torch
from torch import nn
from torch.nn import functional as F

from privbench import hookimpl
from privbench.helpers import TimmStyleNet, mlp_features


class NTKLinear(nn.Module):
    """``y = weight_std / sqrt(fan_in) * x W^T + bias_std * b`` with ``W ~ N(0, 1)``, ``b = 0``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        weight_std: float = 1.0,
        bias_std: float = 1.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight_scale = weight_std / math.sqrt(in_features)
        self.bias_scale = bias_std
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_scale
        return F.linear(x, self.weight * self.weight_scale, bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"weight_scale={self.weight_scale:.4g}, bias_scale={self.bias_scale:.4g}, "
            f"bias={self.bias is not None}"
        )


def ntk_or_standard_linear(
    parameterization: str, weight_std: float, bias_std: float, bias: bool, fan_in: int, fan_out: int
) -> nn.Module:
    """An :class:`NTKLinear` (``parameterization="ntk"``) or PyTorch's ``nn.Linear``."""
    if parameterization == "ntk":
        return NTKLinear(fan_in, fan_out, weight_std, bias_std, bias)
    return nn.Linear(fan_in, fan_out, bias=bias)


class NTKMLPNet(TimmStyleNet):
    """Flatten, ``depth`` x (linear, ReLU), linear head, every linear layer in the chosen
    parameterisation; timm's feature / head split (:class:`privbench.helpers.TimmStyleNet`)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        width: int,
        depth: int,
        parameterization: str = "ntk",
        weight_std: float = 1.0,
        bias_std: float = 1.0,
        bias: bool = True,
    ) -> None:
        # A partial of a module-level function, so that the network still pickles.
        linear = functools.partial(
            ntk_or_standard_linear, parameterization, weight_std, bias_std, bias
        )
        features = mlp_features(in_features, width, depth, linear)
        super().__init__(features, width if depth else in_features, num_classes, make_head=linear)


@attrs.frozen
class NTKMLP:
    """Loo et al. attack two-hidden-layer networks of width 1000 to 4096; the default width is
    smaller so that CPU audits stay fast (wider is closer to the kernel regime)."""

    name: ClassVar[str] = "ntk-mlp"
    description: ClassVar[str] = (
        "fully connected ReLU network in the NTK parameterisation (kernel-regime reconstruction)"
    )

    width: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    """Units per hidden layer."""
    depth: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    """Number of hidden ReLU layers (0: a linear model of the pixels)."""
    parameterization: str = attrs.field(
        default="ntk", validator=attrs.validators.in_(("ntk", "standard"))
    )
    """Layer parameterisation: ``ntk`` (Jacot et al.) or ``standard`` (PyTorch's nn.Linear).
    ntk: N(0, 1) weights scaled by ``weight_std / sqrt(fan_in)`` in the forward pass."""
    weight_std: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    """NTK weight scale sigma_w (1 in Loo et al.'s code; sqrt(2) keeps ReLU activations' scale)."""
    bias_std: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    """NTK bias scale sigma_b (the bias's learning-rate factor; biases start at zero)."""
    bias: bool = True
    """Whether layers have biases (Loo et al.'s ``no_bias`` is ``bias=false``)."""

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        c, h, w = input_shape
        return NTKMLPNet(
            c * h * w,
            num_classes,
            self.width,
            self.depth,
            self.parameterization,
            self.weight_std,
            self.bias_std,
            self.bias,
        )


@hookimpl
def register_models(register):
    register(NTKMLP)
