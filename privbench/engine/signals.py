"""Per-sample signals of one model on the population: scorer plugins run in chunks."""

from __future__ import annotations

from typing import Any

import torch

from privbench.engine.store import digest
from privbench.errors import AccessDeniedError
from privbench.plugins import Registry
from privbench.plugins.interfaces import ModelView, TensorData
from privbench.plugins.options import config_dict


def scorer_for(registry: Registry, view: ModelView, name: str, options: dict[str, Any]) -> Any:
    """The configured scorer, refused if it needs more access than *view* grants."""
    scorer = registry.create("scorer", name, options)
    if scorer.access > view.access:
        raise AccessDeniedError(
            f"scorer '{name}' needs '{scorer.access.label}' access but this view has "
            f"'{view.access.label}'"
        )
    return scorer


def run_scorer(scorer: Any, view: ModelView, data: TensorData) -> torch.Tensor:
    """*scorer* on every sample of *data*, in chunks of at most ``view.batch_size``."""
    chunks = []
    for start in range(0, len(data), view.batch_size):
        part = TensorData(
            data.x[start : start + view.batch_size], data.y[start : start + view.batch_size]
        )
        chunks.append(torch.as_tensor(scorer.score(view, part.x, part.y)).detach().float().cpu())
    values = torch.cat(chunks)
    if values.shape[0] != len(data):
        raise ValueError(f"scorer '{scorer.name}' gave {values.shape[0]} values for {len(data)}")
    return values


def signal_name(scorer: Any, population_digest: str) -> str:
    """Cache name of a scorer's values: its name and a digest of its options and the data."""
    return f"scorer-{scorer.name}-{digest([config_dict(scorer), population_digest])[:20]}"
