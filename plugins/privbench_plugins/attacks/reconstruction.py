"""Dataset reconstruction from a trained network's parameters (white box).

``method=ntk`` (default) is the attack of Loo et al., "Understanding Reconstruction Attacks with
the Neural Tangent Kernel and Dataset Distillation" (ICLR 2024; official code
github.com/yolky/understanding_reconstruction, ``make_reconstruction.py`` and
``training_utils.get_recon_loss``). In the kernel regime, training moves the parameters along
the span of the training images' tangent features: ``theta_final - theta_init = sum_i alpha_i^T
grad_theta f(x_i)``. The attacker, who knows both parameter vectors, optimises ``K = 2 N``
candidate images ``x_j`` and coefficient vectors ``a_j`` (one per class) so that
``sum_j a_j^T grad_theta f(x_j)`` matches the parameter change; the candidates that carry the
weight land on the training images.

``sum_j a_j^T grad_theta f(x_j)`` is one vector-Jacobian product of ``f`` over the candidate
batch with cotangent ``a`` (``torch.func.vjp``), so every step costs a forward pass, a backward
pass and the backward of that backward, whatever ``K`` is.

Following the official code:

- candidates start as ``0.2 * N(0, 1)`` in the network's input space (the Model's normalised
  space; the official code's mean-subtracted pixels), coefficients as ``U(-0.5, 0.5)``;
- loss = ``||delta_theta - g||^2`` (squared norm, not cosine; ``objective=cosine`` is offered
  as ``1 - cos(delta_theta, g)``) with ``g`` the gradient of ``sum_jc a_jc f_c(x_j)``, plus the
  box penalty ``0.1 K mean(relu(x - hi)^2 + relu(lo - x)^2)`` keeping candidates inside the
  valid pixel range (``[0, 1]`` mapped through the Model's mean and std);
- ReLUs are relaxed to ``softplus(beta x) / beta`` with ``beta = min(10 + 10^(i / 20000), 200)``
  over the official 80000 Adam steps (lr 0.02); for ``steps`` other than 80000 the exponent is
  rescaled, ``beta = min(beta_start - 1 + 10^(4 i / steps), beta_max)``, so that the schedule
  keeps its shape;
- ``both_kernels`` adds a second set of coefficients whose gradient is taken at the initial
  parameters (the official ``--both_kernels``; the two gradients are summed).

Differences: the coefficients enter unscaled, where the official ``get_g_value`` takes the
gradient of the *mean* ``mean_jc a_jc f_c(x_j)`` (coefficients scaled by ``1 / (K C)``):
with Adam's fixed step size that scaling only slows the coefficients down by ``K C`` (10
digits, width-1024 ntk-mlp: 2000 steps recover 7 of 10 at mean SSIM 0.49 with it, 1000 steps
recover 10 of 10 at mean SSIM 0.94 without; ``official_scaling=true`` restores it).
Plain Adam (the official ``sparse_adam`` only differs on exactly-zero gradients);
the official code's optional high-frequency and sparsity penalties (off for MLPs) are left out.
Candidates are mapped back to ``[0, 1]`` pixels through the Model's mean and std and clamped.

``method=kkt`` is Haim et al., "Reconstructing Training Data from Trained Neural Networks"
(NeurIPS 2022), as generalised to several classes by Buzaglo et al. ("Deconstructing Data
Reconstruction", NeurIPS 2023): for a homogeneous network trained to a KKT point of the
max-margin problem, ``theta = sum_i lambda_i grad_theta margin_i(x_i)`` with ``lambda_i >= 0``
and ``margin_i = f_{y_i}(x_i) - max_{c != y_i} f_c(x_i)``. Candidates get labels round-robin
over the classes; the loss is ``||theta_final - g||^2`` plus the dual-feasibility penalty
``sum_j relu(lambda_min - lambda_j)`` and the same box penalty. It needs no initial parameters.
The softplus relaxation is shared with ``ntk``. EXPERIMENTAL: not validated against Haim et
al.'s results. On 10 digits (odd/even, bias-free width-512 MLP trained to cross-entropy 1e-5)
2000 steps recovered 2 of 10 above SSIM 0.4 (mean SSIM 0.23); Haim et al.'s own schedule
(their lambda and image initialisation scales, much longer training) is not reproduced here.

Threat model: ``parameters`` access to the target, and the initial parameters (which the
engine hands over as ``context.initial``; the paper's attacker knows the initialisation).
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar, Literal

import attrs
import torch
from torch import nn
from torch.func import functional_call, vjp
from torch.nn import functional as F

from privbench import Access, Model, PrivbenchError, ReconstructionContext, hookimpl


class _SoftReLU(nn.Module):
    """``softplus(beta x) / beta``, with ``beta`` read from a shared, mutable holder."""

    def __init__(self, beta: list[float]) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x, beta=self.beta[0], threshold=20.0)


def _soften(net: nn.Module, beta: list[float]) -> int:
    """Replace every ``nn.ReLU`` submodule of ``net`` in place; returns how many there were."""
    count = 0
    for name, child in list(net.named_children()):
        if isinstance(child, nn.ReLU):
            setattr(net, name, _SoftReLU(beta))
            count += 1
        else:
            count += _soften(child, beta)
    return count


def beta_schedule(step: int, steps: int, beta_start: float, beta_max: float) -> float:
    """Loo et al.'s softplus sharpness, ``min(beta_start - 1 + 10^(4 step / steps), beta_max)``
    (with ``steps = 80000`` exactly the official ``min(10 + 10^(i / 20000), 200)``)."""
    return min(beta_start - 1 + 10 ** (4 * step / max(steps, 1)), beta_max)


def _params(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in net.named_parameters()}


def reconstruct(
    final: Model,
    initial: Model | None,
    num_candidates: int,
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    method: str = "ntk",
    steps: int = 5000,
    lr: float = 0.02,
    init_scale: float = 0.2,
    objective: str = "squared",
    both_kernels: bool = False,
    softplus: bool = True,
    beta_start: float = 11.0,
    beta_max: float = 200.0,
    box_weight: float = 0.1,
    lambda_min: float = 0.05,
    official_scaling: bool = False,
    seed: int = 0,
) -> torch.Tensor:
    """Run the attack on ``final`` (trained) given ``initial`` (its initialisation; unused by
    ``kkt``) and return ``num_candidates`` images of ``input_shape`` in ``[0, 1]``
    (``K x C x H x W``, on the CPU). Options as :class:`Reconstruction`'s."""
    if method == "ntk" and initial is None:
        raise PrivbenchError("the 'ntk' reconstruction needs the initial parameters")
    device = final.mean.device
    beta = [beta_start]
    net = copy.deepcopy(final.net).eval()
    if softplus:
        _soften(net, beta)
    for p in net.parameters():
        p.requires_grad_(False)
    theta_final = _params(final.net)
    buffers = {name: b.detach() for name, b in net.named_buffers()}
    if initial is not None:
        theta_init = _params(initial.net)
        if theta_init.keys() != theta_final.keys() or any(
            theta_init[k].shape != theta_final[k].shape for k in theta_final
        ):
            raise PrivbenchError("the initial and trained networks have different parameters")
        theta_init = {k: v.to(device) for k, v in theta_init.items()}
    target = (
        {k: theta_final[k] - theta_init[k] for k in theta_final}
        if method == "ntk"
        else dict(theta_final)
    )
    target_norm = math.sqrt(sum(float(t.double().square().sum()) for t in target.values()))

    mean, std = final.mean.detach(), final.std.detach()
    generator = torch.Generator().manual_seed(seed)
    x = (init_scale * torch.randn(num_candidates, *input_shape, generator=generator)).to(device)
    x.requires_grad_(True)
    lo, hi = (0 - mean) / std, (1 - mean) / std
    if method == "ntk":
        coeffs = [torch.rand(num_candidates, num_classes, generator=generator) - 0.5]
        if both_kernels:
            coeffs.append(torch.rand(num_candidates, num_classes, generator=generator) - 0.5)
        labels = None
    else:
        coeffs = [torch.rand(num_candidates, generator=generator) + lambda_min]
        labels = torch.arange(num_candidates, device=device) % num_classes
    coeffs = [c.to(device).requires_grad_(True) for c in coeffs]
    optimizer = torch.optim.Adam([x, *coeffs], lr=lr)
    coefficient_scale = 1 / (num_candidates * num_classes) if official_scaling else 1.0

    def outputs(params: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        return functional_call(net, (params, buffers), (images,))

    def weighted_gradient(params: dict[str, torch.Tensor], cotangent: torch.Tensor):
        out, pullback = vjp(lambda p: outputs(p, x), params)
        if labels is None:
            (grad,) = pullback(cotangent.to(out.dtype) * coefficient_scale)
            return grad
        # KKT: cotangent lambda_j on the margin f_y - max_{c != y} f_c.
        runner_up = out.detach().scatter(1, labels[:, None], -torch.inf).argmax(1)
        direction = F.one_hot(labels, out.shape[1]) - F.one_hot(runner_up, out.shape[1])
        (grad,) = pullback(cotangent[:, None].to(out.dtype) * direction.to(out.dtype))
        return grad

    for step in range(steps):
        beta[0] = beta_schedule(step, steps, beta_start, beta_max)
        grad = weighted_gradient(theta_final, coeffs[0])
        if method == "ntk" and both_kernels:
            grad_init = weighted_gradient(theta_init, coeffs[1])
            grad = {k: grad[k] + grad_init[k] for k in grad}
        if objective == "squared":
            loss = sum((target[k] - grad[k]).square().sum() for k in target)
        else:
            dot = sum((target[k] * grad[k]).sum() for k in target)
            norm = torch.sqrt(sum(grad[k].square().sum() for k in grad) + 1e-30)
            loss = 1 - dot / (norm * max(target_norm, 1e-30))
        box = (F.relu(x - hi).square() + F.relu(lo - x).square()).mean() * num_candidates
        loss = loss + box_weight * box
        if method == "kkt":
            loss = loss + F.relu(lambda_min - coeffs[0]).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (x * std + mean).clamp(0, 1).detach().cpu()


@attrs.frozen
class Reconstruction:
    """Recovers training images from the parameter change (Loo et al.) or the KKT conditions
    (Haim et al.); returns ``candidates_per_sample * N`` candidate images."""

    name: ClassVar[str] = "reconstruction"
    description: ClassVar[str] = (
        "Loo et al. 2024 / Haim et al. 2022: training images from the trained parameters"
    )
    access: ClassVar[Access] = Access.PARAMETERS
    min_shadows: ClassVar[int] = 0
    victim_setting: ClassVar[dict[str, object]] = {
        "model": "ntk-mlp",
        "loss": "mse",
        "schedule": "constant",
        "batch_size": 64,
        "lr": 0.5,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "epochs": 500,
        "population": 20,
        "shadows": 0,
    }
    """Loo et al.'s victim, what ``privbench run -a reconstruction`` trains unless told
    otherwise: a wide two-hidden-layer MLP in the NTK parameterisation, trained on 10 images
    (a half of 20) to zero MSE by full-batch gradient descent with momentum 0.9 and no weight
    decay (the paper trains 10^5-10^6 steps at small lr; 500 steps at lr 0.5 reach a train MSE
    below 1e-6 here, the kernel regime's fixed point)."""

    method: Literal["ntk", "kkt"] = attrs.field(
        default="ntk", validator=attrs.validators.in_(("ntk", "kkt"))
    )
    """The attack: ``ntk`` (Loo et al.: parameter change) or ``kkt`` (Haim et al.: KKT point).
    ``ntk`` matches theta_final - theta_init; ``kkt`` matches theta_final with non-negative
    margin gradients (multiclass as Buzaglo et al.)."""
    candidates_per_sample: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    """Candidates per training image (Loo et al.'s ``amp_factor``, 2)."""
    steps: int = attrs.field(default=5000, validator=attrs.validators.ge(1))
    """Adam steps (the official code runs 80000; the beta schedule is rescaled to them)."""
    lr: float = attrs.field(default=0.02, validator=attrs.validators.gt(0))
    """Adam learning rate for images and coefficients (official 0.02)."""
    init_scale: float = attrs.field(default=0.2, validator=attrs.validators.gt(0))
    """Candidates start as ``init_scale * N(0, 1)`` in the normalised input space."""
    objective: Literal["squared", "cosine"] = attrs.field(
        default="squared", validator=attrs.validators.in_(("squared", "cosine"))
    )
    """``squared``: ``||delta - g||^2`` (official); ``cosine``: ``1 - cos(delta, g)``."""
    both_kernels: bool = False
    """Also match with gradients at the initial parameters (official ``--both_kernels``)."""
    softplus: bool = True
    """Relax ReLU to ``softplus(beta x) / beta`` with annealed ``beta`` (official)."""
    beta_start: float = attrs.field(default=11.0, validator=attrs.validators.gt(0))
    """Softplus sharpness at step 0 (official 11)."""
    beta_max: float = attrs.field(default=200.0, validator=attrs.validators.gt(0))
    """Largest softplus sharpness (official 200)."""
    box_weight: float = attrs.field(default=0.1, validator=attrs.validators.ge(0))
    """Weight of the penalty on pixels outside ``[0, 1]`` (official 0.1)."""
    lambda_min: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    """``kkt`` only: dual feasibility pushes every lambda above this (Haim et al.)."""
    official_scaling: bool = False
    """Scale the coefficients by ``1 / (K C)`` as the official code's mean does (slow)."""

    def __attrs_post_init__(self) -> None:
        if self.beta_max < self.beta_start:
            raise ValueError(f"beta_max ({self.beta_max}) < beta_start ({self.beta_start})")

    def reconstruct(self, context: ReconstructionContext) -> torch.Tensor:
        final = context.target.model  # raises AccessDeniedError below 'parameters'
        candidates = reconstruct(
            final,
            context.initial if self.method == "ntk" else None,
            self.candidates_per_sample * context.train_size,
            context.num_classes,
            tuple(context.input_shape),
            method=self.method,
            steps=self.steps,
            lr=self.lr,
            init_scale=self.init_scale,
            objective=self.objective,
            both_kernels=self.both_kernels,
            softplus=self.softplus,
            beta_start=self.beta_start,
            beta_max=self.beta_max,
            box_weight=self.box_weight,
            lambda_min=self.lambda_min,
            official_scaling=self.official_scaling,
            seed=context.seed,
        )
        return candidates


@hookimpl
def register_attacks(register):
    register(Reconstruction)
