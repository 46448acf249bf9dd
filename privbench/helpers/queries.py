"""Population logits as a threshold or calibrated attack reads them: one query per sample, or the
image and its mirror averaged (LiRA-style query augmentation, Carlini et al. 2022)."""

from __future__ import annotations

import torch

from privbench.plugins.interfaces import ModelView


def mirror_averaged_logits(
    view: ModelView, hflip: bool, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The view's cached population logits (``N x C``), averaged with those of the mirrored
    images where ``hflip``; each is converted to ``dtype`` first (None: as cached, float32 from
    the engine; float64 keeps the tail precision of near-zero losses).

    Reads ``population_logits`` only, so it needs ``logits`` access; list what it reads as
    ``Signal.queries(hflip)``.
    """
    logits = _as(view.population_logits("none"), dtype)
    if hflip:
        logits = (logits + _as(view.population_logits("hflip"), dtype)) / 2
    return logits


def _as(logits: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return logits if dtype is None else logits.to(dtype)
