"""The pool of one audit, laid out before anything trains: the dataset, the population drawn from
its train split, one keep-mask per model (LiRA's game, :mod:`privbench.engine.splits`), each
model's seed and content address in the store, and which models take a turn as target.

A pool is pure planning: building it loads the data and hashes it, but writes nothing, so a
suite can plan every cell's jobs from pools (:mod:`privbench.bench.waves`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import cached_property

import attrs
import numpy as np
import torch

from privbench.engine import splits
from privbench.engine.canaries import Canaries, canary_count, draw_canaries
from privbench.engine.components import Components
from privbench.engine.preflight import available_memory, device_memory, gib
from privbench.engine.spec import AuditSpec, recipe_identity
from privbench.engine.store import STORE_FORMAT, Workspace, digest, tensor_digest
from privbench.engine.target import member_mask, read_members
from privbench.errors import OptionError, PrivbenchError
from privbench.plugins.interfaces import LoadedDataset, Model, TensorData


def load_data(
    components: Components,
) -> tuple[LoadedDataset, TensorData, np.ndarray, np.ndarray | None]:
    """The dataset, the population, its indices in the train split, and the train-split
    indices of a target's members when the user brought one (else None)."""
    spec = components.spec
    data_root = spec.data_root or os.environ.get("PRIVBENCH_DATA") or None
    dataset = components.dataset.instance.load(data_root)
    if "flip" in spec.recipe.augment and not dataset.hflip_preserves_label:
        raise OptionError(
            f"augment={spec.recipe.augment} mirrors images, which changes labels in "
            f"dataset '{spec.dataset.name}'; use --augment none or crop"
        )
    members = None
    if spec.target is not None:
        members = read_members(spec.target.members, len(dataset.train), dataset.train_names)
        indices = _population_around(spec, members, len(dataset.train))
    else:
        indices = splits.population_indices(len(dataset.train), spec.population, spec.seed)
    if len(indices) < 4:
        raise OptionError("the population needs at least 4 samples")
    return dataset, dataset.train.subset(indices), indices, members


def _population_around(spec: AuditSpec, members: np.ndarray, split_size: int) -> np.ndarray:
    """A target's population: all of the train split, or (``population``) its members and a
    seeded draw of non-members to make up the size, so that reference models, each trained on
    a half of it, see as many samples as the target did when the draw doubles its members."""
    if spec.population is None or spec.population >= split_size:
        return np.arange(split_size)
    if spec.population <= len(members):
        raise OptionError(
            f"--population {spec.population} leaves no room for non-members beside the "
            f"target's {len(members)} members: give more (twice as many is LiRA's game)"
        )
    others = np.setdiff1d(np.arange(split_size), members)
    rng = np.random.default_rng(np.random.SeedSequence((spec.seed, 0x6F7468)))
    drawn = rng.choice(others, size=spec.population - len(members), replace=False)
    return np.sort(np.concatenate([members, drawn]))


TRAINING_COPIES = 4
"""Copies of a model's parameters that training holds at once: its weights, their gradients and
two optimizer buffers (AdamW's moments; SGD with momentum keeps one). Activations come on top,
so a model refused by this count would surely not train."""


def _check_masks_fit(spec: AuditSpec, population: int) -> None:
    """Refuse a pool whose keep-masks (``models x population`` booleans, built row by row and
    then stacked: twice that at the peak) would not fit in the memory available."""
    available = available_memory()
    needed = 2 * spec.pool_size * population
    if available is None or needed <= available:
        return
    most = max(0, available // (2 * population) - 1)
    raise OptionError(
        f"--shadows {spec.shadows}: a pool of {spec.pool_size:,} models on a population of "
        f"{population:,} does not fit: its keep-masks alone need {gib(needed)} and this machine "
        f"has {gib(available)} available; give at most --shadows {most:,} with this population "
        "(or a smaller --population)"
    )


def _meta_parameters(create: Callable[[], torch.nn.Module]) -> tuple[int, int] | str | None:
    """The parameters of the network *create* builds and the bytes of its weights and buffers,
    counted on PyTorch's meta device, which allocates nothing; the error text when even the
    shapes overflow; None when the network cannot be built there (its code needs real
    tensors), so that it is checked only by building it."""
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loading a checkpoint into meta weights warns
            with torch.device("meta"):
                net = create()
    except Exception as err:  # any plugin's code, run where it was not written to run
        text = str(err)
        return text.splitlines()[0] if "overflow" in text.lower() else None
    if not isinstance(net, torch.nn.Module):
        return None
    parameters = sum(t.numel() for t in net.parameters())
    tensors = [*net.parameters(), *net.buffers()]
    return parameters, sum(t.numel() * t.element_size() for t in tensors)


@attrs.define(eq=False)
class Pool:
    """The models of one audit before they exist: data, masks, seeds and store keys."""

    components: Components
    dataset: LoadedDataset
    population: TensorData
    indices: np.ndarray
    """Each population sample's index in the dataset's train split (its sample id)."""
    masks: np.ndarray
    """``models x population`` booleans: which samples each model trains on."""
    canaries: Canaries | None = None
    """A one-run audit's canaries (model 0 trains on the others and on the included ones);
    None in LiRA's game."""

    @classmethod
    def plan(cls, components: Components) -> Pool:
        dataset, population, indices, members = load_data(components)
        spec = components.spec
        _check_masks_fit(spec, len(population))
        if spec.one_run:
            count = canary_count(spec.canaries, len(population))
            drawn, population = draw_canaries(
                population, dataset.num_classes, count, spec.canary_kind, spec.seed
            )
            masks = drawn.keep_mask(len(population))[None, :]
            return cls(components, dataset, population, indices, masks, drawn)
        masks = splits.keep_masks(len(population), spec.pool_size, spec.seed, paired=spec.paired)
        if members is not None:
            # Model 0 is the user's: its mask is its member split; models 1.. are the
            # reference models, on the same halves as in any other pool (so they are reused).
            masks[0] = member_mask(members, indices)
        return cls(components, dataset, population, indices, masks)

    @property
    def evaluated(self) -> np.ndarray | None:
        """The population positions whose membership the game randomises and attacks are
        measured on: a one-run audit's canaries; None for all of them (LiRA's game)."""
        return self.canaries.positions if self.canaries is not None else None

    @property
    def external(self) -> bool:
        """Model 0 is a target the user brought (never trained here)."""
        return self.spec.target is not None

    @property
    def spec(self) -> AuditSpec:
        return self.components.spec

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def targets(self) -> list[int]:
        """The models that take a turn as target, in order."""
        return list(range(self.spec.target_count))

    def shadows_of(self, target: int) -> list[int]:
        """The models that serve as *target*'s shadows (:func:`splits.shadow_indices`)."""
        return splits.shadow_indices(len(self), target, paired=self.spec.paired)

    def seed_of(self, index: int) -> int:
        return splits.model_seed(self.spec.seed, index)

    @cached_property
    def population_digest(self) -> str:
        """Content digest of the population (hashing CIFAR takes a second: computed once)."""
        return tensor_digest(self.population.x, self.population.y)

    @cached_property
    def target_digest(self) -> str | None:
        """SHA-256 of the weights of a target the user brought (read once: it keys the
        target's signals and is recorded with the run)."""
        return self.spec.target.weights_digest() if self.spec.target is not None else None

    @cached_property
    def test_digest(self) -> str:
        return tensor_digest(self.dataset.test.x, self.dataset.test.y)

    @cached_property
    def keys(self) -> list[str]:
        """Each model's content address: everything that determines its training (for a
        target the user brought: its weights, architecture and data, which its signals are
        cached by)."""
        identity = self.components.identity
        keys = [
            digest(
                {
                    "format": STORE_FORMAT,
                    "dataset": identity["dataset"],
                    "population": self.population_digest,
                    "model": identity["model"],
                    "defense": identity["defense"],
                    "recipe": recipe_identity(self.spec.recipe),
                    "keep": splits.mask_digest(keep),
                    "seed": self.seed_of(index),
                }
            )
            for index, keep in enumerate(self.masks)
        ]
        if self.external:
            keys[0] = digest(
                {
                    "format": STORE_FORMAT,
                    "external-target": self.target_digest,
                    "dataset": identity["dataset"],
                    "population": self.population_digest,
                    "model": identity["model"],
                    "defense": identity["defense"],
                }
            )
        return keys

    def missing(self, workspace: Workspace) -> list[int]:
        """The models to train: those not yet in *workspace*'s store (a target the user
        brought is never among them)."""
        first = 1 if self.external else 0
        return [i for i in range(first, len(self)) if not workspace.has_model(self.keys[i])]

    def members(self, index: int) -> TensorData:
        """Model *index*'s training set (its half of the population)."""
        return self.population.subset(np.flatnonzero(self.masks[index]))

    @cached_property
    def reference(self) -> TensorData | None:
        """The train split outside the population: public data for defenses that need it."""
        outside = np.setdiff1d(np.arange(len(self.dataset.train)), self.indices)
        return self.dataset.train.subset(outside) if outside.size else None

    def build_model(self, index: int | None = None) -> Model:
        """A fresh model of the pool (its initial weights depend on model *index*'s seed alone,
        not on the global RNG; seed 0 without an index), with the defense's changes."""
        seed = 0 if index is None else self.seed_of(index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dataset = self.dataset
            net = self.components.model.instance.create(dataset.input_shape, dataset.num_classes)
            model = Model(net, dataset.mean, dataset.std)
            return self.components.defense.instance.prepare_model(model)

    def check_model(self) -> None:
        """The model's size against the memory available (counted without allocating it),
        then one forward pass on two samples, so that a model too large for this machine or
        one that cannot take this data fails with one line before any training."""
        spec, dataset = self.spec, self.dataset
        c, h, w = dataset.input_shape
        least = int(getattr(self.components.model.instance, "min_input_size", 0))
        if min(h, w) < least:
            raise PrivbenchError(
                f"model '{spec.model.name}' needs images of at least {least}x{least} pixels; "
                f"dataset '{spec.dataset.name}' has {h}x{w} (choose a model for small images, "
                "such as small-cnn)"
            )
        self._check_model_fits()
        try:
            model = self.build_model().eval()
            with torch.no_grad():
                logits = model(dataset.train.x[:2])
        except PrivbenchError:
            raise
        except Exception as err:
            raise PrivbenchError(
                f"model '{spec.model.name}' cannot take dataset '{spec.dataset.name}' "
                f"inputs ({c}x{h}x{w}): {type(err).__name__}: {err}"
            ) from None
        if tuple(logits.shape) != (2, dataset.num_classes):
            raise PrivbenchError(
                f"model '{spec.model.name}' gives logits of shape {tuple(logits.shape)} "
                f"for {dataset.num_classes} classes"
            )

    def _check_model_fits(self) -> None:
        """Refuse a model whose training (:data:`TRAINING_COPIES` of its weights), or a pool
        whose weights (the attacks get every model at once, on the audit's device), would not
        fit in the device's memory available."""
        spec, dataset = self.spec, self.dataset
        instance = self.components.model.instance
        counted = _meta_parameters(
            lambda: instance.create(dataset.input_shape, dataset.num_classes)
        )
        options = ", ".join(f"{k}={v}" for k, v in spec.model.options.items())
        what = f"model '{spec.model.name}'" + (f" with {options}" if options else "")
        if isinstance(counted, str):
            raise OptionError(
                f"{what} is too large to build ({counted}); "
                + ("give smaller --model-opt values" if options else "choose a smaller model")
            )
        device = self.components.device
        free = device_memory(device)
        if counted is None or free is None:
            return
        parameters, size = counted
        where = "this machine" if device.type == "cpu" else f"device {device}"
        if TRAINING_COPIES * size > free:
            raise OptionError(
                f"{what} has {parameters:,} parameters: training one needs about "
                f"{gib(TRAINING_COPIES * size)} (weights, gradients, optimizer state) and "
                f"{where} has {gib(free)} available; "
                + ("give smaller --model-opt values" if options else "choose a smaller model")
            )
        if len(self) * size > free:
            most = max(0, free // max(size, 1) - 1)
            raise OptionError(
                f"--shadows {spec.shadows}: a pool of {len(self):,} models does not fit: their "
                f"weights ({what}, {parameters:,} parameters each) need "
                f"{gib(len(self) * size)} and {where} has {gib(free)} available; give at most "
                f"--shadows {most:,} or a smaller model"
            )
