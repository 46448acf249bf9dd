"""The target a user brings: a model trained elsewhere (its weights in a safetensors file, its
architecture a model plugin) and the samples it trained on. Its weights are loaded strictly (the
first tensor that does not fit is named) and its member split is read and checked; privbench
then trains only the reference models, never the target.

Member files name samples of the dataset's train split: indices (one per line in .txt or .csv,
or an integer .npy array), a boolean mask over the whole split (a boolean .npy array, or a
.txt / .csv of 0/1 or true/false with one line per sample), or, for data whose samples have
names (ImageFolder: each image's path under the data root), one name per line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from privbench.errors import OptionError
from privbench.plugins.data import Model

MEMBER_FORMATS = (".npy", ".csv", ".txt")


@attrs.frozen
class TargetSpec:
    """A trained target: its weights file and which train-split samples it trained on (a
    member file, or the indices themselves)."""

    weights: str
    members: str | tuple[int, ...]

    def weights_digest(self) -> str:
        path = Path(self.weights).expanduser()
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as err:
            raise OptionError(f"cannot read target weights {path}: {err.strerror or err}") from None


def _text_values(path: Path, named: bool = False) -> list[str]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise OptionError(f"cannot read member file {path}: {err}") from None
    values = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",") if c.strip()]
        values += cells
    first = values[0] if values else ""
    # A sample's name has a folder or an extension; anything else that is no value is a header.
    is_value = first.lstrip("-").isdigit() or first.lower() in ("true", "false")
    if values and not is_value and not (named and ("/" in first or "." in first)):
        values = values[1:]
    return values


def _from_file(path: Path, split_size: int, names: Sequence[str] | None) -> np.ndarray:
    if path.suffix not in MEMBER_FORMATS:
        raise OptionError(
            f"member file {path}: unknown format '{path.suffix}' (use {', '.join(MEMBER_FORMATS)})"
        )
    if not path.is_file():
        raise OptionError(f"member file {path} does not exist")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise OptionError(f"member file {path} is not a readable .npy array: {err}") from None
        return _as_indices(array, split_size, str(path))
    values = _text_values(path, named=names is not None)
    if names is not None and values and not values[0].lstrip("-").isdigit():
        index = {name: k for k, name in enumerate(names)}
        unknown = next((v for v in values if v not in index), None)
        if unknown is not None:
            raise OptionError(f"member file {path}: '{unknown}' is not a sample of the train split")
        return _as_indices(np.array([index[v] for v in values]), split_size, str(path))
    lowered = [v.lower() for v in values]
    if values and set(lowered) <= {"true", "false"}:
        return _as_indices(np.array([v == "true" for v in lowered]), split_size, str(path))
    try:
        numbers = np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        bad = next(v for v in values if not v.lstrip("-").isdigit())
        raise OptionError(
            f"member file {path}: '{bad}' is neither a sample index nor true/false"
        ) from None
    if len(numbers) == split_size and set(np.unique(numbers).tolist()) <= {0, 1}:
        numbers = numbers.astype(bool)  # one 0/1 per sample: a mask
    return _as_indices(numbers, split_size, str(path))


def _as_indices(array: np.ndarray, split_size: int, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 1:
        raise OptionError(f"{what}: members must be one index per sample or a 1-D mask")
    if array.dtype == np.bool_:
        if len(array) != split_size:
            raise OptionError(
                f"{what}: a member mask needs one entry per sample of the train split "
                f"({split_size}), not {len(array)}"
            )
        return np.flatnonzero(array)
    if not np.issubdtype(array.dtype, np.integer):
        raise OptionError(f"{what}: member indices must be integers, not {array.dtype}")
    if len(array) and (array.min() < 0 or array.max() >= split_size):
        bad = int(array[(array < 0) | (array >= split_size)][0])
        raise OptionError(
            f"{what}: member index {bad} is outside the train split (0 to {split_size - 1})"
        )
    unique, counts = np.unique(array, return_counts=True)
    if (counts > 1).any():
        raise OptionError(f"{what}: member index {int(unique[counts > 1][0])} is given twice")
    return unique.astype(np.int64)


def read_members(
    members: str | Sequence[int], split_size: int, names: Sequence[str] | None = None
) -> np.ndarray:
    """The sorted train-split indices of the target's members, checked (*names*: the train
    samples' names, where the dataset has them)."""
    if isinstance(members, str):
        return _from_file(Path(members).expanduser(), split_size, names)
    return _as_indices(np.asarray(members), split_size, "members")


def member_mask(members: np.ndarray, population_indices: np.ndarray) -> np.ndarray:
    """Which population samples the target trained on; refused when that is none or all."""
    mask = np.isin(population_indices, members)
    if not mask.any():
        raise OptionError(
            "none of the target's members is in the population: give a population that holds "
            "them (--population, or all of the train split by default)"
        )
    if mask.all():
        raise OptionError(
            "every population sample is a member of the target: membership cannot be measured "
            "without non-members; give a member file that leaves some of the train split out"
        )
    return mask


def _classifier_keys(model: Model) -> set[str]:
    head = model.net.get_classifier()
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for p in head.parameters() if id(p) in names}


def load_target_weights(
    model: Model, target: TargetSpec, num_classes: int, sha256: str
) -> dict[str, Any]:
    """Load the target's weights into *model* strictly; returns what the run records of them
    (*sha256*: the file's digest, computed once by the pool).

    The file may hold a privbench model's whole state (``net.*``, ``mean``, ``std``) or the
    network's own state dict (what ``torch`` code saves with ``net.state_dict()``)."""
    path = Path(target.weights).expanduser()
    if path.suffix != ".safetensors":
        raise OptionError(f"target weights {path} must be a .safetensors file (never a pickle)")
    try:
        stored = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise OptionError(f"cannot read target weights {path}: {err}") from None
    own = model.state_dict()
    if not any(key.startswith("net.") for key in stored):
        stored = {f"net.{key}": value for key, value in stored.items()}
    for key in ("mean", "std"):  # the dataset's preprocessing, unless the file brings its own
        stored.setdefault(key, own[key])
    classifier = _classifier_keys(model)
    for key, value in own.items():
        if key not in stored:
            raise OptionError(f"target weights {path} lack tensor '{key}' of the model")
        if tuple(stored[key].shape) != tuple(value.shape):
            if key in classifier and stored[key].shape[:1] != value.shape[:1]:
                raise OptionError(
                    f"target weights {path} give {stored[key].shape[0]} classes, but the "
                    f"dataset has {num_classes}"
                )
            raise OptionError(
                f"target weights {path} do not fit the model: tensor '{key}' is "
                f"{list(stored[key].shape)} in the file but {list(value.shape)} in the model"
            )
    extra = sorted(set(stored) - set(own))
    if extra:
        raise OptionError(
            f"target weights {path} hold tensor '{extra[0]}', which the model does not have: "
            "is the architecture (--model, --model-opt) the one it was trained as?"
        )
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in stored.items()})
    return {"external": True, "weights": str(path), "sha256": sha256}
