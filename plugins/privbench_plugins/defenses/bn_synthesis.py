"""Synthetic training data from BatchNorm statistics: the released model never sees a private
image, only images synthesised from a teacher that did.

Soufleri, Saha and Roy ("Synthetic Dataset Generation for Privacy-Preserving Machine Learning",
arXiv 2210.03205) apply DeepInversion (Yin et al., "Dreaming to Distill: Data-free Knowledge
Transfer via DeepInversion", CVPR 2020) as a privacy defense:

1. a teacher (a deep copy of the untrained model, trained by ``trainer.fit`` on the private
   data) records each BatchNorm layer's running mean and variance;
2. synthetic images start as noise and Adam optimises them so that the teacher classifies them
   as balanced target labels (cross-entropy) while the batch mean and (biased) variance of every
   BatchNorm layer's input match its running statistics,
   ``sum_l ||mu_l(x) - running_mean_l||_2 + ||var_l(x) - running_var_l||_2``
   (DeepInversion's ``r_feature``), plus total-variation and L2 image priors;
3. the released model (the ``model`` argument) is trained by ``trainer.fit`` on the synthetic
   images alone, labelled with their targets (or the teacher's argmax, option ``labels``).

Choices: images are ``sigmoid(z)`` of an unconstrained ``z ~ N(0, 1)`` (always in [0, 1], the
model normalises them itself); DeepInversion's CIFAR-10 settings (Adam lr 0.1, BN weight 10, no
L2 prior) with 200 rather than 2000 iterations and no random jitter or flips, as the built-in
images are 8x8 to 32x32; the priors are per-pixel means (squared neighbour differences, squared
pixels) rather than DeepInversion's sums, so their weights do not grow with the image size.
The paper gives no weights of its own beyond DeepInversion's. The teacher is in eval mode
throughout, so the statistics it normalises with are the running ones being matched.

``fit`` returns, besides the accuracies, how close each synthetic image comes to the private
data: PSNR and SSIM to its nearest private image (pixel L2); the maxima are worst-case "copy"
indicators. SSIM uses an 11x11 Gaussian window (sigma 1.5, shrunk to the largest odd size that
fits smaller images), C1 = 0.01^2, C2 = 0.03^2, data range 1, averaged over valid positions.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Literal

import attrs
import torch
from torch import nn
from torch.nn import functional as F

from privbench import Defense, Model, PrivbenchError, TensorData, Trainer, hookimpl
from privbench.analysis.reconstruction import psnr, ssim
from privbench.helpers import accuracy, count_classes, predictions


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """BatchNorm layers with running statistics; raises if there are none."""
    layers = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]
    if not layers:
        raise PrivbenchError(
            "defense 'bn-synthesis' needs a model with BatchNorm layers (with running "
            "statistics); use --model small-cnn --model-opt batchnorm=true (mlp has none)"
        )
    return layers


class _BNMatch:
    """Forward hooks adding each BatchNorm layer's statistics mismatch to ``losses``."""

    def __init__(self, model: nn.Module) -> None:
        self.losses: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in bn_layers(model)]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], _: Any) -> None:
        flat = inputs[0].float().transpose(0, 1).flatten(1)  # channels x everything else
        mean, var = flat.mean(1), flat.var(1, unbiased=False)
        self.losses.append(
            torch.linalg.vector_norm(mean - module.running_mean)
            + torch.linalg.vector_norm(var - module.running_var)
        )

    def take(self) -> torch.Tensor:
        total, self.losses = torch.stack(self.losses).sum(), []
        return total

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def bn_statistics_loss(teacher: Model, x: torch.Tensor) -> float:
    """The BatchNorm matching loss of the batch ``x`` (images in [0, 1]), teacher in eval mode."""
    teacher.eval()
    hooks = _BNMatch(teacher)
    try:
        teacher(x.to(next(teacher.parameters()).device))
        return float(hooks.take())
    finally:
        hooks.close()


def synthesize(
    teacher: Model,
    labels: torch.Tensor,
    shape: tuple[int, ...],
    *,
    steps: int = 200,
    lr: float = 0.1,
    bn_weight: float = 10.0,
    tv_weight: float = 0.1,
    l2_weight: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
) -> torch.Tensor:
    """Images (on the CPU, in [0, 1]) that ``teacher`` classifies as ``labels`` and whose batches
    match its BatchNorm statistics; ``labels`` are split into near-equal batches in order.
    Puts ``teacher`` in eval mode and freezes its parameters."""
    device = next(teacher.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    teacher.eval()
    teacher.requires_grad_(False)
    hooks = _BNMatch(teacher)
    out = []
    try:
        for y in labels.tensor_split(math.ceil(len(labels) / batch_size)):
            z = torch.randn(len(y), *shape, generator=generator).to(device).requires_grad_(True)
            y = y.to(device)
            optimizer = torch.optim.Adam([z], lr=lr)
            for _ in range(steps):
                x = torch.sigmoid(z)
                ce = F.cross_entropy(teacher(x).float(), y)
                tv = (x[..., 1:, :] - x[..., :-1, :]).square().mean() + (
                    x[..., :, 1:] - x[..., :, :-1]
                ).square().mean()
                loss = ce + bn_weight * hooks.take() + tv_weight * tv
                loss = loss + l2_weight * x.square().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            out.append(torch.sigmoid(z.detach()).cpu())
    finally:
        hooks.close()
    return torch.cat(out) if out else torch.empty(0, *shape)


@torch.no_grad()
def nearest_similarity(
    synthetic: torch.Tensor, private: torch.Tensor, device: torch.device | str, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """PSNR and SSIM of each synthetic image to its nearest private image in pixel L2."""
    reference = private.to(device).float()
    flat = reference.flatten(1)
    psnrs, ssims = [], []
    for part in synthetic.split(chunk):
        part = part.to(device).float()
        nearest = reference[torch.cdist(part.flatten(1), flat).argmin(1)]
        psnrs.append(psnr(part, nearest).cpu())
        ssims.append(ssim(part, nearest).cpu())
    return torch.cat(psnrs), torch.cat(ssims)


@attrs.frozen
class BNSynthesis(Defense):
    """Release a model trained only on images synthesised from a teacher's BatchNorm statistics."""

    name: ClassVar[str] = "bn-synthesis"
    description: ClassVar[str] = (
        "Train on images synthesised from a teacher's BatchNorm statistics (DeepInversion)"
    )

    per_class: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    """Synthetic images per class; None: as many in all as private images (rounded up)."""
    steps: int = attrs.field(default=200, validator=attrs.validators.ge(1))
    """Adam iterations per synthetic batch (DeepInversion: 2000)."""
    lr: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    """Adam learning rate on the unconstrained images (DeepInversion CIFAR-10: 0.1)."""
    bn_weight: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    """Weight of the BatchNorm statistics loss (DeepInversion CIFAR-10: 10)."""
    tv_weight: float = attrs.field(default=0.1, validator=attrs.validators.ge(0))
    """Weight of the total-variation prior (mean squared neighbour difference)."""
    l2_weight: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    """Weight of the L2 prior (mean squared pixel; DeepInversion CIFAR-10: 0)."""
    batch_size: int = attrs.field(default=256, validator=attrs.validators.ge(2))
    """Images optimised together (their batch statistics are matched)."""
    labels: Literal["target", "teacher"] = attrs.field(
        default="target", validator=attrs.validators.in_(("target", "teacher"))
    )
    """Student labels: the synthesis targets, or the teacher's predictions on the images."""

    def prepare_model(self, model: Model) -> Model:
        bn_layers(model)  # fail before any training
        return model

    def fit(self, model: Model, data: TensorData, trainer: Trainer) -> dict[str, Any]:
        bn_layers(model)
        model.to(trainer.device)
        teacher = copy.deepcopy(model)
        trainer.fit(teacher, data)
        classes = count_classes(teacher, data.x)
        per_class = self.per_class or math.ceil(len(data) / classes)
        generator = torch.Generator().manual_seed(trainer.seed)
        targets = torch.arange(classes).repeat(per_class)
        targets = targets[torch.randperm(len(targets), generator=generator)]  # mixed batches
        x = synthesize(
            teacher,
            targets,
            tuple(data.x.shape[1:]),
            steps=self.steps,
            lr=self.lr,
            bn_weight=self.bn_weight,
            tv_weight=self.tv_weight,
            l2_weight=self.l2_weight,
            batch_size=self.batch_size,
            seed=trainer.seed,
        )
        predicted = predictions(teacher, x).cpu()
        y = targets if self.labels == "target" else predicted
        meta: dict[str, Any] = {
            "teacher_train_accuracy": accuracy(teacher, data.x, data.y),
            "synthetic_count": len(targets),
            "teacher_synthetic_accuracy": float((predicted == targets).float().mean()),
        }
        psnrs, ssims = nearest_similarity(x, data.x, trainer.device)
        meta.update(
            nearest_private_psnr_mean=float(psnrs.mean()),
            nearest_private_psnr_max=float(psnrs.max()),
            nearest_private_ssim_mean=float(ssims.mean()),
            nearest_private_ssim_max=float(ssims.max()),
        )
        del teacher
        trainer.declare_training_set(TensorData(x, y))
        meta.update(trainer.fit(model, TensorData(x, y)))
        meta["student_train_accuracy"] = accuracy(model, data.x, data.y)
        model.eval()
        return meta


@hookimpl
def register_defenses(register):
    register(BNSynthesis)
