"""Train K small models at once: one vmapped pass per step instead of K small ones.

A shadow pool of small models (the built-in CNNs, an MLP) is many tiny trainings, each too
small to fill the hardware. Here the K models' parameters are stacked
(``torch.func.stack_module_state``) and every step runs one ``vmap`` of ``functional_call``
over K batches, each model on its own data in its own order.

It trains exactly what K separate :class:`~privbench.engine.training.StandardTrainer` runs
train: each model draws its batches and augmentations from its own generator seeded like the
sequential trainer, and one optimizer over the stacked parameters is K optimizers, because SGD
with momentum and weight decay and AdamW update every element on its own. Only floating-point
summation order differs (vmapped kernels), so the weights agree to rounding, not bit for bit.

Not for: batch norm (running statistics cannot be updated inside vmap), training sets of
different sizes (the models would take different numbers of steps), or defenses that train
differently (DP-SGD, distillation): :func:`can_ensemble` says which.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from privbench.engine.training import StandardTrainer
from privbench.errors import TrainingDivergedError
from privbench.helpers.training import autocast
from privbench.plugins.interfaces import Model, TensorData


def can_ensemble(models: Sequence[Model], datasets: Sequence[TensorData]) -> str | None:
    """Why these models cannot train as one ensemble, or None when they can."""
    if len(models) < 2:
        return "fewer than two models"
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in models[0].modules()):
        return "batch norm updates running statistics, which vmap cannot"
    if len({len(d) for d in datasets}) > 1:
        return "training sets of different sizes"
    shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in models}
    if len(shapes) > 1:
        return "models of different shapes"
    return None


def fit_ensemble(
    models: Sequence[Model], datasets: Sequence[TensorData], trainers: Sequence[StandardTrainer]
) -> list[dict[str, Any]]:
    """Train ``models[k]`` on ``datasets[k]`` by ``trainers[k]`` (one recipe, one device, each
    its own seed), all K at once; the trained weights are copied back into *models*. Returns
    each model's metadata as :meth:`StandardTrainer.fit` does."""
    reason = can_ensemble(models, datasets)
    if reason is not None:
        raise ValueError(f"cannot train as an ensemble: {reason}")
    recipe, device = trainers[0].recipe, trainers[0].device
    for model in models:
        model.to(device).train()
    params, buffers = stack_module_state(list(models))
    template = copy.deepcopy(models[0]).to("meta")
    optimizer = trainers[0].optimizer_for(params.values())
    scheduler = trainers[0].make_scheduler(optimizer)
    generators = [torch.Generator().manual_seed(t.seed) for t in trainers]
    xs = [d.x.to(device) for d in datasets]
    ys = [d.y.to(device) for d in datasets]

    def loss_of(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x, y) -> torch.Tensor:
        return trainers[0].loss(functional_call(template, (p, b), (x,)), y)

    per_model_loss = vmap(loss_of, randomness="different")
    totals = torch.zeros(len(models))
    n = len(datasets[0])
    for epoch in range(recipe.epochs):
        totals.zero_()
        orders = [trainer.batches(n, g) for trainer, g in zip(trainers, generators, strict=True)]
        for step in range(len(orders[0])):
            index = [order[step].to(device) for order in orders]
            xb = torch.stack(
                [
                    trainer.augment(x[i], g)
                    for trainer, x, i, g in zip(trainers, xs, index, generators, strict=True)
                ]
            )
            yb = torch.stack([y[i] for y, i in zip(ys, index, strict=True)])
            with autocast(device):
                losses = per_model_loss(params, buffers, xb, yb)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # model k's slice gets the gradient of its own loss
            optimizer.step()
            totals += losses.detach().float().cpu() * len(index[0])
        scheduler.step()
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
        for k, model in enumerate(models):
            model.load_state_dict(
                {
                    **{name: p[k] for name, p in params.items()},
                    **{b: v[k] for b, v in buffers.items()},
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
