"""The groups an audit slices its samples by, one value per (target turn, sample) entry of an
attack's pooled scores: the sample's class, whether the target classified it correctly, or a
column of the user's CSV (``FILE.csv:COLUMN``, rows keyed by ``sample``: the sample's index in
the dataset's train split). Metrics per group: :mod:`privbench.analysis.slices`."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privbench.analysis.slices import SLICES
from privbench.errors import OptionError
from privbench.plugins.views import Access


def check_slices(slices: Sequence[str]) -> None:
    """One line for a slice that is neither built in nor ``FILE.csv:COLUMN``."""
    for name in slices:
        if name in SLICES:
            continue
        path, colon, column = name.rpartition(":")
        if not colon or not path.endswith(".csv") or not column:
            raise OptionError(f"unknown slice '{name}': use {', '.join(SLICES)} or FILE.csv:COLUMN")
        if not Path(path).expanduser().is_file():
            raise OptionError(f"slice file {path} does not exist")


def _column(path: str, column: str, samples: np.ndarray) -> np.ndarray:
    file = Path(path).expanduser()
    try:
        with file.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise OptionError(f"cannot read slice file {file}: {err}") from None
    if not rows or "sample" not in rows[0] or column not in rows[0]:
        raise OptionError(f"slice file {file} needs the columns 'sample' and '{column}'")
    try:
        value_of = {int(row["sample"]): row[column] for row in rows}
    except ValueError:
        raise OptionError(f"slice file {file}: a 'sample' is not an integer index") from None
    missing = [int(s) for s in samples if int(s) not in value_of]
    if missing:
        raise OptionError(f"slice file {file} has no '{column}' for sample {missing[0]}")
    return np.array([value_of[int(s)] for s in samples])


def slice_groups(
    slices: Sequence[str], pool: Any, models: Sequence[Any], cache: Any
) -> dict[str, np.ndarray]:
    """Each slice's group of every entry of an attack's pooled scores (targets in turn)."""
    targets = pool.targets
    position = np.tile(np.arange(len(pool.population)), len(targets))
    labels = pool.population.y.numpy()
    groups: dict[str, np.ndarray] = {}
    for name in slices:
        if name == "class":
            groups[name] = labels[position]
        elif name == "correct":
            groups[name] = np.concatenate(
                [
                    cache.view(t, models[t], Access.LOGITS).population_logits("none").argmax(1)
                    .numpy() == labels
                    for t in targets
                ]
            )  # fmt: skip
        else:
            path, _, column = name.rpartition(":")
            groups[column] = _column(path, column, pool.indices)[position]
    return groups
