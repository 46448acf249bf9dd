"""Train K small models at once: one vmapped pass per step instead of K small ones.

A shadow pool of small models (the built-in CNNs, an MLP) is many tiny trainings, each too
small to fill a GPU. Here the K models' parameters and buffers are stacked
(``torch.func.stack_module_state``) and every step runs one ``vmap`` of ``functional_call``
over K batches, each model on its own data in its own order.

It trains exactly what K separate :class:`~privbench.engine.training.StandardTrainer` runs
train: each model draws its batches and augmentations from its own generator seeded like the
sequential trainer (:func:`augment_members` draws them member by member and applies them to all
K batches at once), and one optimizer over the stacked parameters is K optimizers, because SGD
with momentum and weight decay and AdamW update every element on its own. Batch norm keeps each
member's running statistics: the stacked buffers go into ``vmap`` batched, so its in-place
update of ``running_mean``, ``running_var`` and ``num_batches_tracked`` writes member k's slice
from member k's batch, as its own training would. Only floating-point summation order differs
(vmapped kernels), so the weights agree to rounding, not bit for bit (in float64, to 1e-15).

Where it pays: on CUDA, where one small model leaves most of the device idle. On the CPU the
ensemble does the same arithmetic as the K trainings, in grouped convolutions and K-fold
tensors that run no faster: 0.67x to 1.4x of sequential training's speed on two cores
(docs/results/ensemble_profile.md), the gains only on 8x8 digits, which is why the engine uses
it on the CPU only for small images (:mod:`privbench.engine.fitting`, ``PRIVBENCH_ENSEMBLE``).

Not for: batch norm with ``momentum=None`` (its cumulative average reads the step count as a
Python number), models above :data:`SMALL_MODEL_PARAMETERS`, training sets of different sizes
(the models would take different numbers of steps), or defenses that train differently (DP-SGD,
distillation, which :mod:`privbench.engine.fitting` keeps apart): :func:`can_ensemble` says which.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from privbench.engine.training import (
    StandardTrainer,
    crop_at,
    crop_offsets,
    crop_padding,
    flip_draws,
    flip_where,
)
from privbench.errors import TrainingDivergedError
from privbench.helpers.training import autocast
from privbench.plugins.interfaces import Model, TensorData

SMALL_MODEL_PARAMETERS = 2_000_000
"""Models with more parameters than this train one by one: ensembles are for small models.

K larger networks (a ResNet-18 has 11 million) keep K sets of activations at once, which at
K = 64 would not fit in a GPU's memory, and one of them already fills the hardware. The built-in
small models are far below it (``small-cnn`` 94k, ``conv-fc`` 422k, ``mlp`` 855k on 32x32 RGB).
"""

STACKED_BYTES = 1 << 30
"""Training sets of an ensemble taking at most this many bytes together are copied into one
tensor, from which one gather takes all K batches of a step."""

AUGMENTATIONS = ("none", "flip", "crop", "flip+crop")
"""The recipe's augmentations that :func:`augment_members` applies to all members at once."""


def can_ensemble(models: Sequence[Model], datasets: Sequence[TensorData]) -> str | None:
    """Why these models cannot train as one ensemble, or None when they can."""
    if len(models) < 2:
        return "fewer than two models"
    if any(_cumulative_batch_norm(m) for m in models[0].modules()):
        return "batch norm with momentum=None reads its step count as a Python number"
    size = sum(p.numel() for p in models[0].parameters())
    if size > SMALL_MODEL_PARAMETERS:
        return f"{size:,} parameters a model, above the {SMALL_MODEL_PARAMETERS:,} of a small one"
    if len({len(d) for d in datasets}) > 1:
        return "training sets of different sizes"
    shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in models}
    if len(shapes) > 1:
        return "models of different shapes"
    return None


def _cumulative_batch_norm(module: nn.Module) -> bool:
    """Batch norm averaging its running statistics cumulatively (``momentum=None``): its forward
    turns ``num_batches_tracked`` into a Python float, which a vmapped member's cannot be."""
    return (
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.track_running_stats
        and module.momentum is None
    )


def augment_members(
    x: torch.Tensor, mode: str, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """:meth:`StandardTrainer.augment` of every member's batch (``x``: K x B x C x H x W), the
    same images bit for bit: member k's flips and crop offsets are drawn from ``generators[k]``
    in the order the trainer draws them, then applied to all K batches at once (one gather
    instead of K)."""
    k, b = x.shape[:2]
    flat = x.reshape(k * b, *x.shape[2:])
    if "flip" in mode:
        flat = flip_where(flat, torch.cat([flip_draws(b, g) for g in generators]))
    if "crop" in mode:
        padding = crop_padding(flat)
        drawn = [crop_offsets(b, padding, g) for g in generators]  # each member's, in its order
        dy, dx = (torch.cat(offsets) for offsets in zip(*drawn, strict=True))
        flat = crop_at(flat, padding, dy, dx)
    return flat.reshape(x.shape)


class _Data:
    """The K training sets, from which a step takes every member's batch.

    Stacked into one K x n tensor when they fit in :data:`STACKED_BYTES` (one gather a step);
    else each member's set where it is (on the CPU, no copy) and K gathers a step."""

    def __init__(self, tensors: Sequence[torch.Tensor], device: torch.device) -> None:
        first = tensors[0]
        self.stacked: torch.Tensor | None = None
        self.apart: list[torch.Tensor] = []
        if len(tensors) * first.numel() * first.element_size() <= STACKED_BYTES:
            self.stacked = torch.empty(
                (len(tensors), *first.shape), dtype=first.dtype, device=device
            )
            for slot, tensor in zip(self.stacked, tensors, strict=True):
                slot.copy_(tensor)  # member by member: no K-fold temporary on the way
            self.members = torch.arange(len(tensors), device=device)[:, None]
        else:
            self.apart = [tensor.to(device) for tensor in tensors]

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """Member k's rows ``index[k]`` for every k (``index``: K x B)."""
        if self.stacked is not None:
            return self.stacked[self.members, index]
        return torch.stack([tensor[i] for tensor, i in zip(self.apart, index, strict=True)])


def fit_ensemble(
    models: Sequence[Model], datasets: Sequence[TensorData], trainers: Sequence[StandardTrainer]
) -> list[dict[str, Any]]:
    """Train ``models[k]`` on ``datasets[k]`` by ``trainers[k]`` (one recipe, one device, each
    its own seed), all K at once; the trained weights and buffers (batch norm's running
    statistics) are copied back into *models*. Returns each model's metadata as
    :meth:`StandardTrainer.fit` does."""
    reason = can_ensemble(models, datasets)
    if reason is not None:
        raise ValueError(f"cannot train as an ensemble: {reason}")
    recipe, device = trainers[0].recipe, trainers[0].device
    if any(t.recipe != recipe or t.device != device for t in trainers):
        raise ValueError("cannot train as an ensemble: the trainers differ in recipe or device")
    k, n = len(models), len(datasets[0])
    for model in models:
        model.to(device).train()
    # Buffers go into vmap stacked like the parameters: batch norm's in-place updates of its
    # running statistics then land in each member's own slice, from its own batch.
    params, buffers = stack_module_state(list(models))
    template = copy.deepcopy(models[0]).to("meta")
    optimizer = trainers[0].optimizer_for(params.values())
    scheduler = trainers[0].make_scheduler(optimizer)
    generators = [torch.Generator().manual_seed(t.seed) for t in trainers]
    x, y = _Data([d.x for d in datasets], device), _Data([d.y for d in datasets], device)
    together = recipe.augment in AUGMENTATIONS and all(
        type(t).augment is StandardTrainer.augment for t in trainers
    )

    def loss_of(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x, y) -> torch.Tensor:
        return trainers[0].loss(functional_call(template, (p, b), (x,)), y)

    # The images go in as B x K x ...: vmap then hands each convolution its K members as
    # channel groups of one contiguous B x (K*C) x H x W tensor. Fed K x B x ..., the first
    # convolution gets a strided view, whose weight gradient took 1 to 12 s a step instead of
    # 0.2 s on two CPU threads (conv-fc, K = 8; docs/results/ensemble_profile.md).
    per_model_loss = vmap(loss_of, in_dims=(0, 0, 1, 0), randomness="different")
    totals = torch.zeros(k)
    for epoch in range(recipe.epochs):
        orders = [trainer.batches(n, g) for trainer, g in zip(trainers, generators, strict=True)]
        sizes = [len(batch) for batch in orders[0]]
        if any([len(batch) for batch in order] != sizes for order in orders):
            raise ValueError("cannot train as an ensemble: the members' batches differ in size")
        # Every member's epoch order in one tensor, moved to the device once an epoch.
        order = torch.stack([torch.cat(batches) for batches in orders]).to(device)
        summed = torch.zeros(k, device=device)  # summed on the device: no sync per step
        start = 0
        for size in sizes:
            index = order[:, start : start + size]
            start += size
            xb, yb = x[index], y[index]
            if together:
                xb = augment_members(xb, recipe.augment, generators)
            else:
                xb = torch.stack(
                    [t.augment(xk, g) for t, xk, g in zip(trainers, xb, generators, strict=True)]
                )
            with autocast(device):
                losses = per_model_loss(params, buffers, xb.transpose(0, 1).contiguous(), yb)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # model k's slice gets the gradient of its own loss
            optimizer.step()
            summed += losses.detach().float() * size
        scheduler.step()
        totals = summed.cpu()
        diverged = torch.nonzero(~torch.isfinite(totals)).flatten().tolist()
        if diverged:  # the others' epochs would be wasted: the audit stops on the first one
            raise EnsembleDivergedError(
                diverged[0],
                f"its training loss is {float(totals[diverged[0]]) / n} at epoch "
                f"{epoch + 1} of {recipe.epochs}",
            )
        for trainer in trainers:
            if trainer.on_epoch is not None:
                trainer.on_epoch(epoch + 1, recipe.epochs)
    with torch.no_grad():
        for member, model in enumerate(models):
            model.load_state_dict(
                {
                    **{name: p[member] for name, p in params.items()},
                    **{b: v[member] for b, v in buffers.items()},
                }
            )
            model.eval()
    return [{"final_train_loss": float(total) / n, "ensemble": len(models)} for total in totals]


class EnsembleDivergedError(TrainingDivergedError):
    """Member *member* of an ensemble diverged (the caller names it by its pool index)."""

    def __init__(self, member: int, problem: str) -> None:
        super().__init__(problem)
        self.member = member


class TrainedByEnsemble(StandardTrainer):
    """The trainer a defense's ``fit`` gets for a model an ensemble already trained by the
    recipe (``Defense.trains_by_recipe``): its ``fit`` reports that training instead of
    repeating it."""

    def __init__(self, recipe: Any, meta: dict[str, Any], **options: Any) -> None:
        super().__init__(recipe, **options)
        self.meta = meta

    def fit(self, model: Model, data: TensorData) -> dict[str, Any]:
        model.to(self.device).eval()
        return dict(self.meta)
