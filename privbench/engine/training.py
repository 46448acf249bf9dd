"""The standard training loop: seeded, deterministic on the CPU, AMP (bfloat16) on CUDA."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from privbench.errors import OptionError
from privbench.helpers.training import train_epochs
from privbench.plugins.interfaces import Model, TensorData, TrainingRecipe

EpochCallback = Callable[[int, int], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``. On CUDA, cuDNN picks the
    fastest convolution algorithms for the shapes it sees (every batch but the last has one)."""
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError, ValueError):
            raise OptionError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        # torch knows more device types (meta, mps, xla, ...), but training and the signals
        # are written and tested for these two only.
        raise OptionError(f"device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"device '{name}' asked for, but CUDA is not available here; use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise OptionError(
                f"device '{name}' asked for, but this machine has {count} CUDA device(s); "
                f"use cuda:0 to cuda:{count - 1}"
            )
        torch.backends.cudnn.benchmark = True
    return device


def crop_at(x: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Zero-pad by *padding* and crop back, image i at offset ``(dy[i], dx[i])``, as one
    gather."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    rows = (dy.to(x.device)[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx.to(x.device)[:, None] + torch.arange(w, device=x.device))[:, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def crop_offsets(
    count: int, padding: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """*count* random crop offsets in ``[0, 2 * padding]``: the rows', then the columns'."""
    dy = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    return dy, dx


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by *padding* and crop back at a random offset per image, as one gather."""
    return crop_at(x, padding, *crop_offsets(x.shape[0], padding, generator))


def flip_where(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Images whose *flip* is true mirrored left to right."""
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


def flip_draws(count: int, generator: torch.Generator) -> torch.Tensor:
    """*count* fair coin flips: which images to mirror."""
    return torch.rand(count, generator=generator) < 0.5


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return flip_where(x, flip_draws(x.shape[0], generator))


def crop_padding(x: torch.Tensor) -> int:
    """The padding of the recipe's crop for images like *x*: an eighth of the width, at least 1."""
    return max(1, x.shape[-1] // 8)


def recipe_loss(recipe: TrainingRecipe, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The recipe's objective: cross-entropy, or Loo et al.'s squared error to centred one-hot
    targets (computed in float32 under autocast)."""
    if recipe.loss == "mse":
        classes = logits.shape[1]
        target = F.one_hot(y, classes).to(torch.float32) - 1.0 / classes
        return 0.5 * (logits.float() - target).square().sum(1).mean()
    return F.cross_entropy(logits, y)


class StandardTrainer:
    """Trains a :class:`~privbench.plugins.interfaces.Model` by the recipe (a ``Trainer``)."""

    def __init__(
        self,
        recipe: TrainingRecipe,
        *,
        seed: int,
        device: torch.device,
        on_epoch: EpochCallback | None = None,
        reference: TensorData | None = None,
    ) -> None:
        self.recipe = recipe
        self.seed = seed
        self.device = device
        self.on_epoch = on_epoch
        self.reference = reference
        self.declared_training_set: TensorData | None = None

    def declare_training_set(self, data: TensorData) -> None:
        self.declared_training_set = TensorData(data.x.detach().cpu(), data.y.detach().cpu())

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return self.optimizer_for(model.parameters())

    def optimizer_for(self, parameters: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        """The recipe's optimizer over *parameters* (those that require gradients)."""
        r = self.recipe
        params = [p for p in parameters if p.requires_grad]
        if r.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)
        return torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)

    def make_scheduler(
        self, optimizer: torch.optim.Optimizer
    ) -> torch.optim.lr_scheduler.LRScheduler:
        if self.recipe.schedule == "constant":
            return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.recipe.epochs)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return recipe_loss(self.recipe, logits, y)

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mode = self.recipe.augment
        if "flip" in mode:
            x = random_hflip(x, generator)
        if "crop" in mode:
            x = random_crop(x, crop_padding(x), generator)
        return x

    def batches(self, n: int, generator: torch.Generator) -> list[torch.Tensor]:
        """One epoch's shuffled index batches."""
        order = torch.randperm(n, generator=generator)
        return list(order.split(self.recipe.batch_size))

    def fit(self, model: Model, data: TensorData) -> dict[str, Any]:
        x_all, y_all = data.x.to(self.device), data.y.to(self.device)
        final = train_epochs(
            model,
            self,
            x_all,
            lambda xb, index: self.loss(model(xb), y_all[index]),
            batches=self.batches,
            on_epoch=self.on_epoch,
        )
        return {"final_train_loss": final}
