"""Fitting the pool: train every model the store lacks (by the defense, from its seed, on its
half of the population) and store it atomically under its key, or load it if it is there.

Where the defense trains by the recipe and the models allow it, missing models train together as
vmapped ensembles (:mod:`privbench.engine.ensemble`) where they pay: on CUDA, and on the CPU for
images of at most :data:`SMALL_IMAGE_PIXELS` pixels. On the CPU an ensemble does the same
arithmetic as its K trainings, in the grouped convolutions and K-fold tensors that vmap makes
of it: it measured 1.0-1.4x of their speed for networks on 8x8 digits (the default ``privbench
run``: 14.5 s against 16-24 s one by one) and 0.67-0.89x for every 28x28 network tried
(docs/results/ensemble_profile.md). ``PRIVBENCH_ENSEMBLE`` says otherwise: ``1`` everywhere,
``0`` nowhere, ``auto`` (or unset) as above.

Each model is stored as soon as it is trained, so an interrupted audit resumes with the rest. A
model whose training diverged (non-finite loss or weights) stops the audit with one line naming
it and the likely cause, and is not stored; the models stored before it are kept.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import attrs
import torch

from privbench.engine.ensemble import (
    EnsembleDivergedError,
    TrainedByEnsemble,
    can_ensemble,
    fit_ensemble,
)
from privbench.engine.pool import Pool
from privbench.engine.progress import Callback
from privbench.engine.spec import AuditSpec, spec_record
from privbench.engine.store import DamagedEntry, Workspace
from privbench.engine.target import load_target_weights
from privbench.engine.training import StandardTrainer
from privbench.errors import OptionError, TrainingDivergedError, one_line
from privbench.plugins.interfaces import Model
from privbench.version import __version__

ENSEMBLE_SIZE = 64
"""At most this many models train as one ensemble."""

DECLARED_TRAINING_SET = "declared-training-images"
"""Signal name of the images a defense says its released model learned from instead."""

_Trained = tuple[Model, dict[str, Any], float]
"""A model an ensemble trained by the recipe, its training metadata and its share of seconds."""


@attrs.frozen(eq=False)
class FittedPool:
    """Every model of a pool, released by the defense (what attacks query), in pool order."""

    models: list[Model]
    metas: list[dict[str, Any]]
    """What each model's training recorded (the defense's measurements among it)."""
    trained: int
    """How many were trained now (the others were loaded from the store)."""
    seconds: float


ENSEMBLE_SETTINGS = ("auto", "0", "1")
"""What ``PRIVBENCH_ENSEMBLE`` may say: ensembles where they pay (the default), nowhere,
anywhere."""

SMALL_IMAGE_PIXELS = 16 * 16
"""On the CPU, ``auto`` ensembles models of images up to this many pixels (per channel): 8x8
digits gained, every 28x28 network lost; sizes between were not measured."""


def ensembles_wanted(device: torch.device, input_shape: tuple[int, ...] = ()) -> bool:
    """Whether models on *device* for inputs of *input_shape* (C x H x W) should train as
    ensembles where they can, by ``PRIVBENCH_ENSEMBLE``: by default (``auto``) on CUDA, and on
    the CPU for images of at most :data:`SMALL_IMAGE_PIXELS` pixels; everywhere with ``1``,
    never with ``0``."""
    setting = os.environ.get("PRIVBENCH_ENSEMBLE", "").strip().lower() or "auto"
    if setting not in ENSEMBLE_SETTINGS:
        raise OptionError(
            f"PRIVBENCH_ENSEMBLE={one_line(setting)} is not understood; use auto (ensembles on "
            "CUDA, and on the CPU for small images: the default), 1 (always) or 0 (never)"
        )
    if setting == "auto":
        pixels = math.prod(input_shape[1:]) if len(input_shape) > 1 else math.inf
        return device.type == "cuda" or pixels <= SMALL_IMAGE_PIXELS
    return setting == "1"


def ensembles_allowed(pool: Pool) -> bool:
    """Whether the pool's missing models may train as ensembles: the defense trains by the
    recipe and :func:`ensembles_wanted` says so for the audit's device and images."""
    return pool.components.trains_by_recipe and ensembles_wanted(
        pool.components.device, tuple(pool.dataset.input_shape)
    )


def ensemble_size(pool: Pool) -> int:
    """How many of the pool's models one job should train together: up to
    :data:`ENSEMBLE_SIZE` where they can train as an ensemble, else 1."""
    if not ensembles_allowed(pool) or len(pool) < 2 or len({int(k.sum()) for k in pool.masks}) > 1:
        return 1
    models = [pool.build_model(index) for index in (0, 1)]
    data = [pool.members(index) for index in (0, 1)]
    return ENSEMBLE_SIZE if can_ensemble(models, data) is None else 1


def _trainer(
    pool: Pool, index: int, callback: Callback, trained: _Trained | None
) -> StandardTrainer:
    """Model *index*'s trainer: the recipe's, reporting its epochs; or, for a model an ensemble
    already trained, one whose ``fit`` reports that training instead of repeating it."""
    options: dict[str, Any] = dict(
        seed=pool.seed_of(index), device=pool.components.device, reference=pool.reference
    )
    if trained is None:
        options["on_epoch"] = lambda epoch, epochs: callback.on_training_epoch(
            [index], epoch, epochs
        )
        return StandardTrainer(pool.spec.recipe, **options)
    return TrainedByEnsemble(pool.spec.recipe, trained[1], **options)


def _train_ensembles(pool: Pool, indices: Sequence[int], callback: Callback) -> dict[int, _Trained]:
    """Train the pool's models *indices* by the recipe as ensembles where they can (else none);
    index -> (model, metadata, seconds)."""
    if len(indices) < 2 or not ensembles_allowed(pool):
        return {}
    done: dict[int, _Trained] = {}
    for first in range(0, len(indices), ENSEMBLE_SIZE):
        chunk = list(indices[first : first + ENSEMBLE_SIZE])
        models = [pool.build_model(index) for index in chunk]
        data = [pool.members(index) for index in chunk]
        if can_ensemble(models, data) is not None:
            return done
        options = dict(device=pool.components.device, reference=pool.reference)
        trainers = [
            StandardTrainer(pool.spec.recipe, seed=pool.seed_of(i), **options) for i in chunk
        ]
        # One progress report per ensemble, from its first member's trainer.
        trainers[0].on_epoch = lambda epoch, epochs, chunk=chunk: callback.on_training_epoch(
            chunk, epoch, epochs
        )
        callback.on_training_start(chunk, pool.spec.recipe.epochs)
        started = time.perf_counter()
        try:
            metas = fit_ensemble(models, data, trainers)
        except EnsembleDivergedError as err:
            raise TrainingDivergedError(_diverged(pool, chunk[err.member], str(err))) from None
        seconds = time.perf_counter() - started
        callback.on_training_end(chunk, seconds)
        for index, model, meta in zip(chunk, models, metas, strict=True):
            done[index] = (model, meta, seconds / len(chunk))
    return done


def _fit(
    pool: Pool, workspace: Workspace, index: int, callback: Callback, trained: _Trained | None
) -> tuple[Model, dict[str, Any]]:
    """Train model *index* by the defense and store it (atomically) under its key. *trained*:
    the model already trained by the recipe in an ensemble."""
    key = pool.keys[index]
    trainer = _trainer(pool, index, callback, trained)
    if trained is None:
        model, seconds = pool.build_model(index), 0.0
        callback.on_training_start([index], pool.spec.recipe.epochs)
    else:
        model, _, seconds = trained
    started = time.perf_counter()
    try:
        meta = dict(pool.components.defense.instance.fit(model, pool.members(index), trainer))
    except TrainingDivergedError as err:
        raise TrainingDivergedError(_diverged(pool, index, str(err))) from None
    took = time.perf_counter() - started
    problem = non_finite(model, meta)
    if problem:
        raise TrainingDivergedError(_diverged(pool, index, problem))
    if trained is None:
        callback.on_training_end([index], took)
    meta.update(
        index=index,
        members=int(pool.masks[index].sum()),
        train_seconds=seconds + took,
        device=str(pool.components.device),
        privbench=__version__,
    )
    declared = trainer.declared_training_set
    if declared is not None:
        # Before the model: a stored model implies its declared set is stored too.
        workspace.cached_tensor(key, DECLARED_TRAINING_SET, lambda: declared.x)
    origin = {"spec": spec_record(pool.spec), "index": index}
    workspace.save_model(key, model.cpu(), meta, origin=origin)
    return model, meta


def non_finite(model: Model, meta: dict[str, Any]) -> str | None:
    """What is not finite in a trained *model* (its weights and buffers) or in its recorded
    final training loss, or None."""
    loss = meta.get("final_train_loss")
    if isinstance(loss, float) and not math.isfinite(loss):
        return f"its final training loss is {loss}"
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"its weights are not finite ({name})"
    return None


def divergence_cause(spec: AuditSpec) -> str:
    """What to change when a model of *spec*'s pool trains to non-finite weights, loss or
    outputs: the learning rate, and the defense's options where there is a defense."""
    lower = f"lower the learning rate (--lr {spec.recipe.lr:g})"
    defense = spec.defense
    if defense.name == "none":
        return lower
    options = ", ".join(f"{k}={v}" for k, v in defense.options.items())
    shown = f" ({options})" if options else ""
    return f"check defense '{defense.name}'{shown} for a noise scale too large, or {lower}"


def _diverged(pool: Pool, index: int, problem: str) -> str:
    """The one line that stops an audit whose model *index* diverged, with the likely cause."""
    return (
        f"training model {index} of the pool diverged: {problem}; {divergence_cause(pool.spec)}."
        " Nothing of it was stored; models stored before it are kept"
    )


def train_models(
    pool: Pool, workspace: Workspace, indices: Sequence[int], callback: Callback | None = None
) -> int:
    """Train the pool's models *indices* into the store unless they are there already, as
    ensembles where they can (one job of a suite's first wave); returns how many trained."""
    callback = callback or Callback()
    missing = [index for index in indices if not workspace.has_model(pool.keys[index])]
    if not missing:
        return 0
    workspace.create()
    ensembled = _train_ensembles(pool, missing, callback)
    for index in missing:
        _fit(pool, workspace, index, callback, ensembled.get(index))
    return len(missing)


def load_model(pool: Pool, workspace: Workspace, index: int) -> tuple[Model, dict[str, Any]]:
    """Stored model *index*, with its training metadata (safetensors: no pickle).

    :raises DamagedEntry: when its entry fails its checks (it is then in quarantine).
    """
    model = pool.build_model(index)
    return model, workspace.load_model(pool.keys[index], model)


def load_or_train(pool: Pool, workspace: Workspace, index: int) -> tuple[Model, dict[str, Any]]:
    """Stored model *index*, trained (again) first if it is missing or its entry is damaged."""
    if not workspace.has_model(pool.keys[index]):
        train_models(pool, workspace, [index])
    try:
        return load_model(pool, workspace, index)
    except DamagedEntry:
        train_models(pool, workspace, [index])
        return load_model(pool, workspace, index)


def load_external(pool: Pool) -> tuple[Model, dict[str, Any]]:
    """The target the user brought, its weights loaded into the architecture it names (after
    the defense's architecture changes, as its reference models get them)."""
    model = pool.build_model(0)
    target, sha256 = pool.spec.target, pool.target_digest
    assert target is not None and sha256 is not None
    meta = load_target_weights(model, target, pool.dataset.num_classes, sha256)
    return model, meta | {"members": int(pool.masks[0].sum()), "index": 0}


def fit_pool(pool: Pool, workspace: Workspace, callback: Callback) -> FittedPool:
    """Train (or load) every model of the pool; each comes back released by the defense, on
    the audit's device, in eval mode."""
    started = time.perf_counter()
    missing = pool.missing(workspace)
    ensembled = _train_ensembles(pool, missing, callback)
    models, metas = [], []
    defense = pool.components.defense.instance
    for index in range(len(pool)):
        if index == 0 and pool.external:
            model, meta = load_external(pool)
        elif index in missing:
            model, meta = _fit(pool, workspace, index, callback, ensembled.get(index))
        else:
            try:
                model, meta = load_model(pool, workspace, index)
            except DamagedEntry:  # damaged since it was counted as stored: now in quarantine
                model, meta = _fit(pool, workspace, index, callback, None)
                missing.append(index)
        model.to(pool.components.device).eval()
        models.append(defense.release(model))
        metas.append(meta)
        callback.on_model_ready(index, index in missing)
    return FittedPool(models, metas, len(missing), time.perf_counter() - started)
