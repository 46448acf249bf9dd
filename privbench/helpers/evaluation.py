"""Batched inference on a model the plugin holds itself (a teacher, a student, a released model):
outputs, predicted labels, accuracy and the number of classes, in eval mode and without
gradients, on whatever device the model's parameters are on."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Transform = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def model_outputs(
    model: nn.Module,
    x: torch.Tensor,
    transform: Transform | None = None,
    *,
    batch_size: int = 512,
) -> torch.Tensor:
    """``transform(model(batch))`` for consecutive batches of ``x`` (on any device), concatenated
    on the model's device. Puts ``model`` in eval mode. An empty ``x`` gives an empty tensor."""
    model.eval()
    device = _device(model)
    outputs = []
    for start in range(0, x.shape[0], batch_size):
        out = model(x[start : start + batch_size].to(device))
        outputs.append(out if transform is None else transform(out))
    return torch.cat(outputs) if outputs else torch.empty(0, device=device)


def predictions(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Predicted class (argmax of the logits) of every image of ``x``, on the model's device."""
    return model_outputs(model, x, lambda logits: logits.argmax(1), batch_size=batch_size)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512) -> float:
    """Fraction of ``x`` whose predicted class is its label ``y`` (0 for no images)."""
    hits = int((predictions(model, x, batch_size=batch_size).cpu() == y.cpu()).sum())
    return hits / max(len(y), 1)


def count_classes(model: nn.Module, x: torch.Tensor) -> int:
    """How many logits ``model`` outputs, from one forward pass on the first image of ``x``."""
    return int(model_outputs(model, x[:1]).shape[1])


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
