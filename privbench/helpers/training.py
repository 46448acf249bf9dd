"""The seeded epoch loop for a plugin that trains a model its own way (a distilled student, a
DP-SGD model) and the pieces of it: mixed precision, seeding, shuffled batches.

:func:`train_epochs` follows the engine's standard training, so that a defense's own training
is reproducible exactly as the engine's is: the recipe's epochs and batch size, the trainer's
optimizer and learning-rate schedule (stepped once per epoch), the trainer's augmentation drawn
from a seeded ``torch.Generator``, bfloat16 autocast on CUDA only; the caller supplies what is
its own, the loss of a batch, and may replace the batches, the optimizer or the inputs of every
epoch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from privbench.errors import TrainingDivergedError
from privbench.plugins.interfaces import Trainer

BatchLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(inputs, index) -> loss``: a batch's (augmented) inputs and its indices into the epoch's
inputs (on the trainer's device) to the scalar loss to minimise."""
Batches = Callable[[int, torch.Generator], Iterable[torch.Tensor]]
"""``(n, generator) -> index batches``: one epoch's batches of indices into ``n`` inputs."""
EpochInputs = Callable[[torch.Generator], torch.Tensor]
"""``generator -> inputs``: a fresh set of inputs for one epoch (mixup), drawn before the
epoch's batch order."""
EpochCallback = Callable[[int, int], None]
"""``(epochs done, epochs)``, called after every epoch."""


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on CUDA (no loss scaling needed); none on the CPU, where it is slower."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seeded_generator(seed: int) -> torch.Generator:
    """Seed torch's global RNG (dropout and any other global-RNG use inside a model) and return a
    CPU generator seeded alike, for batch order and augmentation."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches: a random permutation of ``range(n)`` cut into ``batch_size`` pieces
    (the last one smaller)."""
    return list(torch.randperm(n, generator=generator).split(batch_size))


def train_epochs(
    model: nn.Module,
    trainer: Trainer,
    inputs: torch.Tensor | EpochInputs,
    batch_loss: BatchLoss,
    *,
    batches: Batches | None = None,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    mixed_precision: bool = True,
    on_epoch: EpochCallback | None = None,
) -> float:
    """Train ``model`` in place for ``trainer.recipe.epochs`` epochs; returns the last epoch's
    mean batch loss (weighted by batch size; empty batches do not count). Ends in eval mode.

    Every epoch draws its batches (default: :func:`shuffled_batches` of the recipe's batch size)
    and, per batch in order: indexes ``inputs`` (a tensor on ``trainer.device``, or a function
    drawing each epoch's inputs before its batches), augments with ``trainer.augment``, calls
    ``zero_grad(set_to_none=True)``, computes ``batch_loss(inputs, index)`` under
    :func:`autocast` (unless ``mixed_precision=False``), then ``backward`` and ``step``. The
    scheduler steps after every
    epoch, then ``on_epoch(epoch + 1, epochs)`` is called. An epoch whose loss is not finite
    raises :class:`~privbench.errors.TrainingDivergedError` (the engine names the model and
    stores nothing of it).

    Random draws, in order: without ``generator``, :func:`seeded_generator` of ``trainer.seed``
    seeds the global RNG and makes the generator (pass one to seed earlier, as DP-SGD does before
    opacus wraps the model); the generator then draws each epoch's inputs, its batches and every
    batch's augmentation. ``optimizer`` and ``scheduler`` default to the trainer's
    ``make_optimizer(model)`` and ``make_scheduler(optimizer)``.
    """
    device, epochs = trainer.device, trainer.recipe.epochs
    if generator is None:
        generator = seeded_generator(trainer.seed)
    model.to(device).train()
    if optimizer is None:
        optimizer = trainer.make_optimizer(model)
    if scheduler is None:
        scheduler = trainer.make_scheduler(optimizer)
    if batches is None:
        batch_size = trainer.recipe.batch_size

        def batches(n: int, generator: torch.Generator) -> list[torch.Tensor]:
            return shuffled_batches(n, batch_size, generator)

    def precision() -> contextlib.AbstractContextManager[Any]:
        return autocast(device) if mixed_precision else contextlib.nullcontext()

    total, seen = 0.0, 0
    for epoch in range(epochs):
        total, seen = 0.0, 0
        x_epoch = inputs(generator) if callable(inputs) else inputs
        for index in batches(x_epoch.shape[0], generator):
            index = index.to(device)
            xb = trainer.augment(x_epoch[index], generator)
            # Cleared before the forward pass: opacus' ew mode refuses a forward pass while the
            # last step's per-sample gradients are attached.
            optimizer.zero_grad(set_to_none=True)
            with precision():
                loss = batch_loss(xb, index)
            loss.backward()
            optimizer.step()
            if len(index):
                total += float(loss.detach()) * len(index)
                seen += len(index)
        scheduler.step()
        if seen and not math.isfinite(total):  # stop now: later epochs cannot recover
            raise TrainingDivergedError(
                f"its training loss is {total / seen} at epoch {epoch + 1} of {epochs}"
            )
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs)
    model.eval()
    return total / max(seen, 1)
