"""One audit, end to end: spec -> population and keep-masks -> models -> signals -> attacks ->
metrics -> results.

Everything the user named is resolved and validated (:meth:`Audit.prepare`) before any data is
loaded or any model trained, so a typo costs nothing. Results are written only when every attack
has finished: files atomically, then one database transaction.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from rich.progress import Progress

from privbench.analysis import reconstruction
from privbench.analysis.memorization import memorization, rank_correlation
from privbench.analysis.metrics import compute_metrics, roc, roc_points
from privbench.analysis.theory import theoretical_maximum
from privbench.engine import signals, splits
from privbench.engine.ensemble import TrainedByEnsemble, can_ensemble, fit_ensemble
from privbench.engine.store import STORE_FORMAT, Workspace, digest, file_digest, tensor_digest
from privbench.engine.training import StandardTrainer, resolve_device
from privbench.errors import OptionError, PrivbenchError
from privbench.plugins import Component, Registry, get_registry
from privbench.plugins.interfaces import (
    Access,
    AttackContext,
    LoadedDataset,
    Model,
    ModelView,
    ReconstructionContext,
    Signal,
    TensorData,
    TrainingRecipe,
)
from privbench.plugins.options import config_dict
from privbench.results.db import ResultsDB
from privbench.results.files import plot_roc, write_json_atomic
from privbench.version import __version__

AUGMENTATIONS = ("none", "hflip")


@attrs.frozen
class PluginChoice:
    """A plugin by name (``base/argument`` allowed) with its options as given."""

    name: str
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)


@attrs.frozen
class AuditSpec:
    """Everything that defines one audit; CLI flags and suite cells both become one of these."""

    dataset: PluginChoice = PluginChoice("digits")
    model: PluginChoice = PluginChoice("small-cnn")
    defense: PluginChoice = PluginChoice("none")
    attacks: tuple[PluginChoice, ...] = (PluginChoice("loss"),)
    recipe: TrainingRecipe = attrs.field(factory=TrainingRecipe)
    shadows: int = attrs.field(default=7, validator=attrs.validators.ge(0))
    """Shadow models beside the target: the pool holds ``shadows + 1`` models."""
    targets: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    """How many models of the pool take a turn as target (the others are its shadows); all of
    them by default, giving ``(shadows + 1) x population`` evaluation points."""
    population: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(4))
    )
    """Population size drawn from the dataset's train split (all of it by default)."""
    memorization: bool = False
    """Also estimate each sample's memorization from the pool (``memorization.csv``)."""
    scorers: tuple[PluginChoice, ...] = ()
    """Scorer plugins to report on the target models: summaries for members and non-members,
    and every value in ``scores-<name>.csv``."""
    paired: bool = False
    """Curvature Clues' masks: Bernoulli(0.5) keep-masks in complementary pairs (each sample is
    in exactly half the models) instead of exact random halves."""
    seed: int = 0
    data_root: str | None = None
    device: str = "auto"

    @property
    def pool_size(self) -> int:
        return self.shadows + 1


@attrs.frozen
class AttackResult:
    name: str
    access: str
    options: dict[str, Any]
    metrics: dict[str, Any]
    """Over the pooled scores of every target turn."""
    per_target: dict[str, dict[str, float]]
    """``{"mean": ..., "std": ...}`` of each metric over the targets (Curvature Clues reports
    mean +- std over target models)."""
    seconds: float
    """Its cost: its own work plus computing the signals it lists (``signal_seconds``)."""
    fpr: np.ndarray = attrs.field(repr=False)
    tpr: np.ndarray = attrs.field(repr=False)
    signal_seconds: float = 0.0
    """Of ``seconds``, the compute time of the signals it lists, on every model it used."""


@attrs.frozen
class RunResult:
    run_id: str
    path: Path
    record: dict[str, Any]
    attacks: list[AttackResult]


# Recipe fields added after the store format was fixed: left out of a model's key while at
# their defaults, so models stored before they existed keep their keys and are reused.
_RECIPE_FIELDS_SINCE_FORMAT = {"loss": "cross-entropy", "schedule": "cosine"}


def recipe_identity(recipe: TrainingRecipe) -> dict[str, Any]:
    """The recipe as it enters a model's content address."""
    fields = attrs.asdict(recipe)
    for name, default in _RECIPE_FIELDS_SINCE_FORMAT.items():
        if fields.get(name) == default:
            del fields[name]
    return fields


def summarize(per_target: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation of each metric over target models."""
    keys = per_target[0].keys()
    values = {k: np.array([float(m[k]) for m in per_target]) for k in keys}
    return {
        "mean": {k: float(v.mean()) for k, v in values.items()},
        "std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()},
    }


def _component_id(component: Component, instance: Any) -> dict[str, Any]:
    """What identifies a configured plugin in store keys and results. Options naming a file (a
    checkpoint) add the file's digest, so new weights at an old path are not mistaken for it."""
    options = config_dict(instance)
    files = {
        key: file_digest(value)
        for key, value in options.items()
        if isinstance(value, str) and value and Path(value).expanduser().is_file()
    }
    return {
        "name": component.name,
        "options": options,
        "files": files,
        "plugin": component.plugin.name,
        "version": component.plugin.version,
    }


DECLARED_TRAINING_SET = "declared-training-images"
"""Signal name of the images a defense says its released model learned from instead."""


class Audit:
    """A validated audit: resolved plugin instances, ready to :meth:`run`."""

    def __init__(self, spec: AuditSpec, registry: Registry) -> None:
        self.spec = spec
        self.registry = registry
        self.dataset_component = registry.get("dataset", spec.dataset.name)
        self.dataset = registry.create("dataset", spec.dataset.name, spec.dataset.options)
        self.model_component = registry.get("model", spec.model.name)
        self.model_factory = registry.create("model", spec.model.name, spec.model.options)
        self.defense_component = registry.get("defense", spec.defense.name)
        self.defense = registry.create("defense", spec.defense.name, spec.defense.options)
        names = [choice.name for choice in spec.attacks]
        if not names:
            raise OptionError("give at least one --attack")
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise OptionError(f"attack '{duplicated[0]}' is given twice")
        self.attacks = []
        self.reconstructions = []
        for choice in spec.attacks:
            component = registry.get("attack", choice.name)
            attack = registry.create("attack", choice.name, choice.options)
            if callable(getattr(attack, "reconstruct", None)):
                self.reconstructions.append((component, attack))
                continue
            available = splits.shadow_count(spec.pool_size, paired=spec.paired)
            if attack.min_shadows > available:
                # With paired masks a target's partner is not its shadow: one more is needed.
                needed = attack.min_shadows + spec.shadows - available
                why = " (with --paired a target's partner is not its shadow)" if spec.paired else ""
                raise OptionError(
                    f"attack '{choice.name}' needs at least {attack.min_shadows} shadow models; "
                    f"use --shadows {needed} or more{why}"
                )
            self.attacks.append((component, attack))
        names = [choice.name for choice in spec.scorers]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise OptionError(f"scorer '{duplicated[0]}' is given twice")
        self.scorers = [
            registry.create("scorer", choice.name, choice.options) for choice in spec.scorers
        ]
        if spec.targets is not None and not 1 <= spec.targets <= spec.pool_size:
            raise OptionError(f"--targets must be between 1 and {spec.pool_size} (shadows + 1)")
        self.device = resolve_device(spec.device)
        self._digests: dict[int, tuple[TensorData, str]] = {}
        self._plan: tuple[LoadedDataset, TensorData, np.ndarray, np.ndarray] | None = None
        self.hflip_preserves_label = True
        self.identity = {
            "dataset": _component_id(self.dataset_component, self.dataset),
            "model": _component_id(self.model_component, self.model_factory),
            "defense": _component_id(self.defense_component, self.defense),
        }

    @classmethod
    def prepare(cls, spec: AuditSpec, registry: Registry | None = None) -> Audit:
        return cls(spec, registry or get_registry())

    # -- stages ---------------------------------------------------------------------------------

    def load_data(self) -> tuple[LoadedDataset, TensorData, np.ndarray]:
        data_root = self.spec.data_root or os.environ.get("PRIVBENCH_DATA") or None
        dataset = self.dataset.load(data_root)
        self.hflip_preserves_label = dataset.hflip_preserves_label
        if "flip" in self.spec.recipe.augment and not dataset.hflip_preserves_label:
            raise OptionError(
                f"augment={self.spec.recipe.augment} mirrors images, which changes labels in "
                f"dataset '{self.spec.dataset.name}'; use --augment none or crop"
            )
        indices = splits.population_indices(
            len(dataset.train), self.spec.population, self.spec.seed
        )
        if len(indices) < 4:
            raise OptionError("the population needs at least 4 samples")
        return dataset, dataset.train.subset(indices), indices

    def build_model(self, dataset: LoadedDataset, seed: int = 0) -> Model:
        """A fresh model whose initial weights depend on *seed* alone, not on the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self.model_factory.create(dataset.input_shape, dataset.num_classes)
            return self.defense.prepare_model(Model(net, dataset.mean, dataset.std))

    def check_model(self, dataset: LoadedDataset) -> None:
        """One forward pass on two samples, so that a model that cannot take this data fails
        with one line before any training."""
        c, h, w = dataset.input_shape
        try:
            model = self.build_model(dataset).eval()
            with torch.no_grad():
                logits = model(dataset.train.x[:2])
        except PrivbenchError:
            raise
        except Exception as err:
            raise PrivbenchError(
                f"model '{self.spec.model.name}' cannot take dataset '{self.spec.dataset.name}' "
                f"inputs ({c}x{h}x{w}): {type(err).__name__}: {err}"
            ) from None
        if tuple(logits.shape) != (2, dataset.num_classes):
            raise PrivbenchError(
                f"model '{self.spec.model.name}' gives logits of shape {tuple(logits.shape)} "
                f"for {dataset.num_classes} classes"
            )

    def data_digest(self, data: TensorData) -> str:
        """Content digest of *data*, computed once per object (hashing CIFAR takes a second)."""
        cached = self._digests.get(id(data))
        if cached is None or cached[0] is not data:
            cached = (data, tensor_digest(data.x, data.y))
            self._digests[id(data)] = cached
        return cached[1]

    def model_key(self, population: TensorData, keep: np.ndarray, index: int) -> str:
        spec = self.spec
        return digest(
            {
                "format": STORE_FORMAT,
                "dataset": self.identity["dataset"],
                "population": self.data_digest(population),
                "model": self.identity["model"],
                "defense": self.identity["defense"],
                "recipe": recipe_identity(spec.recipe),
                "keep": splits.mask_digest(keep),
                "seed": splits.model_seed(spec.seed, index),
            }
        )

    def pool_plan(self) -> tuple[LoadedDataset, TensorData, np.ndarray, np.ndarray]:
        """The data, population, its indices and the pool's keep-masks (one row per model),
        loaded once per audit (a suite's planning asks for them more than once)."""
        if self._plan is None:
            dataset, population, indices = self.load_data()
            spec = self.spec
            masks = splits.keep_masks(
                len(population), spec.pool_size, spec.seed, paired=spec.paired
            )
            self._plan = dataset, population, indices, masks
        return self._plan

    def model_keys(self) -> list[str]:
        """The store keys of the pool's models, in pool order (what a suite plans jobs by)."""
        _, population, _, masks = self.pool_plan()
        return [self.model_key(population, keep, index) for index, keep in enumerate(masks)]

    @staticmethod
    def reference_data(dataset: LoadedDataset, indices: np.ndarray) -> TensorData | None:
        """The train split outside the population (handed to defenses that need public data)."""
        outside = np.setdiff1d(np.arange(len(dataset.train)), indices)
        return dataset.train.subset(outside) if outside.size else None

    def train_models(self, workspace: Workspace, indices: Sequence[int]) -> int:
        """Train the pool's models *indices* into the store unless they are there already (one
        job of a suite's first wave), as ensembles where they can; returns how many trained."""
        dataset, population, indices_in_data, masks = self.pool_plan()
        keys = {index: self.model_key(population, masks[index], index) for index in indices}
        missing = [index for index in indices if not workspace.has_model(keys[index])]
        if not missing:
            return 0
        workspace.create()
        reference = self.reference_data(dataset, indices_in_data)
        ensembled = self.train_ensemble(dataset, population, masks, missing, reference)
        for index in missing:
            self._fit(
                workspace, dataset, population, masks[index], index, keys[index], reference,
                None, ensembled.get(index),
            )  # fmt: skip
        return len(missing)

    def ensemble_size(self) -> int:
        """How many of this pool's models one job should train together: up to
        :attr:`ENSEMBLE_SIZE` where :meth:`train_ensemble` would ensemble them, else 1."""
        dataset, population, _, masks = self.pool_plan()
        if not self._ensembles() or len(masks) < 2 or len({int(k.sum()) for k in masks}) > 1:
            return 1
        _, models, data = self._ensemble_members(dataset, population, masks, [0, 1])
        return self.ENSEMBLE_SIZE if can_ensemble(models, data) is None else 1

    def _ensemble_members(
        self, dataset: LoadedDataset, population: TensorData, masks: np.ndarray, indices: list[int]
    ) -> tuple[list[int], list[Model], list[TensorData]]:
        """Seeds, fresh models and training sets of the pool's models *indices*."""
        seeds = [splits.model_seed(self.spec.seed, index) for index in indices]
        models = [self.build_model(dataset, seed) for seed in seeds]
        data = [population.subset(np.flatnonzero(masks[index])) for index in indices]
        return seeds, models, data

    def _ensembles(self) -> bool:
        return bool(getattr(self.defense, "trains_by_recipe", False)) and (
            os.environ.get("PRIVBENCH_ENSEMBLE", "1") != "0"
        )

    ENSEMBLE_SIZE = 64
    """At most this many models train as one ensemble."""

    def train_ensemble(
        self,
        dataset: LoadedDataset,
        population: TensorData,
        masks: np.ndarray,
        indices: Sequence[int],
        reference: TensorData | None,
        on_epoch: Callable[[int, int], None] | None = None,
    ) -> dict[int, tuple[Model, dict[str, Any], float]]:
        """Train the pool's models *indices* by the recipe as ensembles, where the defense
        trains by the recipe and the models allow it (:func:`can_ensemble`); else nothing.
        ``PRIVBENCH_ENSEMBLE=0`` turns it off. Returns index -> (model, metadata, seconds)."""
        if len(indices) < 2 or not self._ensembles():
            return {}
        done: dict[int, tuple[Model, dict[str, Any], float]] = {}
        for first in range(0, len(indices), self.ENSEMBLE_SIZE):
            chunk = list(indices[first : first + self.ENSEMBLE_SIZE])
            seeds, models, data = self._ensemble_members(dataset, population, masks, chunk)
            if can_ensemble(models, data) is not None:
                return done
            options = dict(device=self.device, reference=reference)
            trainers = [StandardTrainer(self.spec.recipe, seed=s, **options) for s in seeds]
            trainers[0].on_epoch = on_epoch  # one progress report per ensemble
            started = time.perf_counter()
            metas = fit_ensemble(models, data, trainers)
            seconds = (time.perf_counter() - started) / len(chunk)
            for index, model, meta in zip(chunk, models, metas, strict=True):
                done[index] = (model, meta, seconds)
        return done

    def signals(self) -> list[Signal]:
        """What this audit's attacks will read from every model, as far as they say
        (:class:`~privbench.plugins.interfaces.Signal`); call after :meth:`load_data`."""
        wanted: list[Signal] = []
        for _, attack in self.attacks:
            wanted += [s for s in self._listed_signals(attack) or () if s not in wanted]
        return wanted

    def _listed_signals(self, attack: Any) -> list[Signal] | None:
        """The signals *attack* lists (``Attack.signals``), or None when it lists none."""
        declared = getattr(attack, "signals", None)
        return list(declared(self.hflip_preserves_label)) if callable(declared) else None

    def score_model(
        self, workspace: Workspace, index: int, wanted: Sequence[Signal], target: bool
    ) -> None:
        """One scoring pass (a job of a suite's second wave): compute *wanted* for stored model
        *index* into the signal cache, and a *target*'s test-split logits, so that the cell's
        audit finds them there."""
        dataset, population, _, masks = self.pool_plan()
        key = self.model_key(population, masks[index], index)
        model = self.build_model(dataset, splits.model_seed(self.spec.seed, index))
        workspace.load_model(key, model)
        released = self.defense.release(model.to(self.device).eval())
        # Full access, as for a shadow: the cache is per model; each attack's view still
        # checks its own access when it reads.
        view = self.view(workspace, released, key, population, Access.PARAMETERS)
        for signal in wanted:
            signal.read(view)
        if target:
            self.test_logits(workspace, view, key, dataset)

    def signal_seconds(
        self, workspace: Workspace, attack: Any, keys: Sequence[str], population: TensorData
    ) -> float | None:
        """Seconds it took to compute the signals *attack* lists on the models *keys*, or None
        when it lists none (its cost is then simply its wall time)."""
        wanted = self._listed_signals(attack)
        if wanted is None:
            return None
        names = [self.signal_cache_name(signal, population) for signal in wanted]
        return sum(workspace.tensor_seconds(key, name) or 0.0 for key in keys for name in names)

    def signal_cache_name(self, signal: Signal, population: TensorData) -> str:
        """The name a model's *signal* on *population* is cached under."""
        if signal.kind == "logits":
            return f"population-{signal.name}-{self.data_digest(population)[:16]}"
        scorer = self.registry.create("scorer", signal.name, signal.options)
        return signals.signal_name(scorer, self.data_digest(population))

    def test_logits(
        self, workspace: Workspace, view: ModelView, key: str, dataset: LoadedDataset
    ) -> torch.Tensor:
        """The released model's logits on the test split (cached): its utility."""
        return workspace.cached_tensor(
            key,
            f"test-{self.data_digest(dataset.test)[:16]}",
            lambda: view.logits(dataset.test.x),
        )

    def _fit(
        self,
        workspace: Workspace,
        dataset: LoadedDataset,
        population: TensorData,
        keep: np.ndarray,
        index: int,
        key: str,
        reference: TensorData | None,
        on_epoch: Callable[[int, int], None] | None,
        trained: tuple[Model, dict[str, Any], float] | None = None,
    ) -> tuple[Model, dict[str, Any]]:
        """Train one model by the defense and store it (atomically) under *key*. *trained*:
        the model already trained by the recipe in an ensemble, its metadata and seconds."""
        seed = splits.model_seed(self.spec.seed, index)
        options = dict(seed=seed, device=self.device, on_epoch=on_epoch, reference=reference)
        trainer: StandardTrainer
        if trained is None:
            model, seconds = self.build_model(dataset, seed), 0.0
            trainer = StandardTrainer(self.spec.recipe, **options)
        else:
            model, meta, seconds = trained
            trainer = TrainedByEnsemble(self.spec.recipe, meta, **options)
        started = time.perf_counter()
        meta = dict(self.defense.fit(model, population.subset(np.flatnonzero(keep)), trainer))
        meta.update(
            index=index,
            members=int(keep.sum()),
            train_seconds=seconds + time.perf_counter() - started,
            device=str(self.device),
            privbench=__version__,
        )
        if trainer.declared_training_set is not None:
            # Before the model: a stored model implies its declared set is stored too.
            workspace.cached_tensor(
                key, DECLARED_TRAINING_SET, lambda t=trainer: t.declared_training_set.x
            )
        workspace.save_model(key, model.cpu(), meta)
        return model, meta

    def train_pool(
        self,
        workspace: Workspace,
        dataset: LoadedDataset,
        population: TensorData,
        masks: np.ndarray,
        progress: Progress | None,
        *,
        reference: TensorData | None = None,
    ) -> tuple[list[Model], list[str], list[dict[str, Any]], int]:
        """Train (or load) every model of the pool; returns models, keys, metadata, #trained.
        *reference* (the train split outside the population) is handed to the defense."""
        models, keys, metas, trained = [], [], [], 0
        pool_task = progress.add_task("models", total=len(masks)) if progress else None
        all_keys = [self.model_key(population, keep, index) for index, keep in enumerate(masks)]
        missing = [index for index, key in enumerate(all_keys) if not workspace.has_model(key)]
        ensemble_task = (
            progress.add_task(f"  training {len(missing)} models together", total=None)
            if progress is not None and len(missing) > 1 and self._ensembles()
            else None
        )

        def on_ensemble_epoch(done: int, total: int) -> None:
            if progress is not None and ensemble_task is not None:
                progress.update(ensemble_task, completed=done, total=total)

        ensembled = self.train_ensemble(
            dataset, population, masks, missing, reference, on_ensemble_epoch
        )
        if progress is not None and ensemble_task is not None:
            progress.remove_task(ensemble_task)
        for index, (keep, key) in enumerate(zip(masks, all_keys, strict=True)):
            if index not in missing:
                model = self.build_model(dataset, splits.model_seed(self.spec.seed, index))
                meta = workspace.load_model(key, model)
            else:
                epoch_task = (
                    progress.add_task(f"  training model {index}", total=self.spec.recipe.epochs)
                    if progress
                    else None
                )

                def on_epoch(done: int, total: int, task: Any = epoch_task) -> None:
                    if progress is not None and task is not None:
                        progress.update(task, completed=done)

                model, meta = self._fit(
                    workspace, dataset, population, keep, index, key, reference, on_epoch,
                    ensembled.get(index),
                )  # fmt: skip
                trained += 1
                if progress is not None and epoch_task is not None:
                    progress.remove_task(epoch_task)
            model.to(self.device).eval()
            models.append(self.defense.release(model))
            keys.append(key)
            metas.append(meta)
            if progress is not None and pool_task is not None:
                progress.advance(pool_task)
        return models, keys, metas, trained

    def view(
        self, workspace: Workspace, model: Model, key: str, population: TensorData, access: Access
    ) -> ModelView:
        def population_logits(augmentation: str) -> torch.Tensor:
            if augmentation not in AUGMENTATIONS:
                raise ValueError(f"augmentation must be one of {AUGMENTATIONS}")
            if augmentation == "hflip" and not self.hflip_preserves_label:
                raise OptionError(
                    f"mirrored queries change labels in dataset '{self.spec.dataset.name}'; "
                    "turn the attack's hflip/augment option off"
                )
            x = population.x.flip(-1) if augmentation == "hflip" else population.x
            full = ModelView(model, Access.LOGITS, device=self.device)
            return workspace.cached_tensor(
                key,
                self.signal_cache_name(Signal.logits(augmentation), population),
                lambda: full.logits(x),
            )

        population_digest = self.data_digest(population)

        def population_signal(
            requester: ModelView, name: str, options: dict[str, Any]
        ) -> torch.Tensor:
            scorer = signals.scorer_for(self.registry, requester, name, options)
            return workspace.cached_tensor(
                key,
                signals.signal_name(scorer, population_digest),
                lambda: signals.run_scorer(scorer, requester, population),
            )

        return ModelView(
            model,
            access,
            device=self.device,
            population_logits=population_logits,
            population_signal=population_signal,
        )

    # -- the whole audit ------------------------------------------------------------------------

    def run(
        self, workspace: Workspace, *, progress: Progress | None = None, insert: bool = True
    ) -> RunResult:
        """The whole audit. With ``insert=False`` the run folder is written but the database is
        left to the caller (a suite's driver inserts what its workers return)."""
        spec = self.spec
        started = time.perf_counter()
        dataset, population, indices, masks = self.pool_plan()
        self.check_model(dataset)
        workspace.create()  # only once the audit can start: bad input leaves no folders behind
        models, keys, metas, trained = self.train_pool(
            workspace,
            dataset,
            population,
            masks,
            progress,
            reference=self.reference_data(dataset, indices),
        )
        training_seconds = time.perf_counter() - started

        targets = list(range(spec.targets if spec.targets is not None else spec.pool_size))
        utility = self.utility(workspace, models, keys, dataset, population, masks, targets)
        analyses: dict[str, Any] = {}
        tables: dict[str, str] = {}
        if spec.memorization:
            analyses["memorization"], tables["memorization.csv"] = self.memorization(
                workspace, models, keys, population, masks, indices
            )

        for choice, scorer in zip(spec.scorers, self.scorers, strict=True):
            summary, table = self.scores(
                workspace, models, keys, population, masks, indices, targets, choice, scorer
            )
            analyses.setdefault("scorers", {})[choice.name] = summary
            tables[f"scores-{choice.name}.csv"] = table

        results = []
        attack_task = (
            progress.add_task("attacks", total=len(self.attacks) * len(targets))
            if progress
            else None
        )
        for component, attack in self.attacks:
            attack_started = time.perf_counter()
            computed_before = workspace.compute_seconds
            scores, truth, used = [], [], set()
            for t in targets:
                others = splits.shadow_indices(spec.pool_size, t, paired=spec.paired)
                used.update([t, *others])
                context = AttackContext(
                    target=self.view(workspace, models[t], keys[t], population, attack.access),
                    shadows=[
                        self.view(workspace, models[k], keys[k], population, Access.PARAMETERS)
                        for k in others
                    ],
                    shadow_keep=masks[others],
                    population=population,
                    num_classes=dataset.num_classes,
                    seed=splits.model_seed(spec.seed, 10_000 + t),
                    hflip_preserves_label=dataset.hflip_preserves_label,
                )
                target_scores = np.asarray(attack.score(context), dtype=np.float64).reshape(-1)
                if target_scores.shape[0] != len(population):
                    raise PrivbenchError(
                        f"attack '{component.name}' returned {target_scores.shape[0]} scores for "
                        f"{len(population)} samples"
                    )
                scores.append(target_scores)
                truth.append(masks[t])
                if progress is not None and attack_task is not None:
                    progress.advance(attack_task)
            all_scores, all_truth = np.concatenate(scores), np.concatenate(truth)
            metrics = compute_metrics(all_scores, all_truth)
            per_target = [
                compute_metrics(s, m).as_dict() for s, m in zip(scores, truth, strict=True)
            ]
            fpr, tpr, _ = roc(all_scores, all_truth)
            seconds = time.perf_counter() - attack_started
            signal_seconds = self.signal_seconds(
                workspace, attack, [keys[m] for m in used], population
            )
            if signal_seconds is not None:
                # Its cost from scratch, wherever its signals were computed (here, in a suite's
                # scoring pass, by another attack): its own work plus every signal it reads.
                seconds += signal_seconds - (workspace.compute_seconds - computed_before)
            else:
                signal_seconds = 0.0
            results.append(
                AttackResult(
                    name=component.name,
                    access=attack.access.label,
                    options=config_dict(attack),
                    metrics=metrics.as_dict(),
                    per_target=summarize(per_target),
                    seconds=seconds,
                    signal_seconds=signal_seconds,
                    fpr=fpr,
                    tpr=tpr,
                )
            )
        artifacts: dict[str, Callable[[Path], object]] = {}
        if self.reconstructions:
            analyses["reconstructions"] = self.reconstruct(
                workspace, models, keys, dataset, population, masks, targets[0], artifacts
            )
        return self.record(
            workspace,
            results,
            utility,
            metas,
            trained,
            training_seconds,
            started,
            indices,
            analyses,
            tables,
            artifacts,
            insert=insert,
        )

    REFERENCE_IMAGES = 20_000
    """Non-member images a reconstruction is checked against (bounded: CIFAR has 60k)."""

    def reconstruct(
        self,
        workspace: Workspace,
        models: list[Model],
        keys: list[str],
        dataset: LoadedDataset,
        population: TensorData,
        masks: np.ndarray,
        target: int,
        artifacts: dict[str, Callable[[Path], object]],
    ) -> list[dict[str, Any]]:
        """Every reconstruction attack against one target (they are costly: the first target
        only), matched one-to-one to that target's training images."""
        members = population.x[torch.as_tensor(masks[target])]
        # Non-members of the same distribution: a match must be nearer to its training image
        # than to any of them (SSIM alone credits typical images on small inputs).
        reference = torch.cat([dataset.test.x, dataset.train.x])[: self.REFERENCE_IMAGES]
        initial = self.build_model(dataset, splits.model_seed(self.spec.seed, target))
        initial_digest = tensor_digest(*initial.state_dict().values())
        declared = workspace.stored_tensor(keys[target], DECLARED_TRAINING_SET)
        summaries = []
        for component, attack in self.reconstructions:
            attack_started = time.perf_counter()
            context = ReconstructionContext(
                target=self.view(
                    workspace, models[target], keys[target], population, attack.access
                ),
                initial=initial,
                train_size=len(members),
                num_classes=dataset.num_classes,
                input_shape=dataset.input_shape,
                seed=splits.model_seed(self.spec.seed, 20_000 + target),
            )
            identity = digest([config_dict(attack), context.seed, len(members), initial_digest])
            name = f"reconstruction-{component.name}-{identity[:20]}"

            def run_attack(component=component, attack=attack, context=context) -> torch.Tensor:
                candidates = torch.as_tensor(attack.reconstruct(context)).detach().float()
                if candidates.ndim != 4 or candidates.shape[1:] != members.shape[1:]:
                    expected = " x ".join(map(str, members.shape[1:]))
                    raise PrivbenchError(
                        f"attack '{component.name}' returned candidates of shape "
                        f"{tuple(candidates.shape)}; expected K x {expected}"
                    )
                return candidates

            # Costly (minutes of optimisation): stored beside the target and reused.
            candidates = workspace.cached_tensor(keys[target], name, run_attack)
            match = reconstruction.match_reconstructions(candidates, members, reference)
            grid = f"reconstruction-{component.name}.png"
            artifacts[grid] = lambda path, match=match, candidates=candidates: (
                reconstruction.save_grid(members, candidates[match.candidate], path)
            )
            summary = {
                "name": component.name,
                "access": attack.access.label,
                "options": config_dict(attack),
                "target": target,
                "train_size": len(members),
                "candidates": int(candidates.shape[0]),
                "metrics": match.summary(),
                "grid": grid,
                "seconds": time.perf_counter() - attack_started,
            }
            if declared is not None and len(declared) <= len(candidates):
                # What the released model learned from (distilled or synthetic images): did
                # the attack find those, while missing the private images?
                seen = reconstruction.match_reconstructions(candidates, declared, reference)
                summary["declared_training_set"] = {
                    "size": len(declared),
                    "metrics": seen.summary(),
                    "grid": f"reconstruction-{component.name}-declared.png",
                }
                artifacts[summary["declared_training_set"]["grid"]] = (
                    lambda path, seen=seen, candidates=candidates: reconstruction.save_grid(
                        declared, candidates[seen.candidate], path
                    )
                )
            summaries.append(summary)
        return summaries

    def memorization(
        self,
        workspace: Workspace,
        models: Sequence[Model],
        keys: Sequence[str],
        population: TensorData,
        masks: np.ndarray,
        indices: np.ndarray,
    ) -> tuple[dict[str, Any], str]:
        """Feldman-Zhang memorization of every population sample from the pool itself (no extra
        training) and, where a ``curvature`` scorer is installed, its rank correlation with the
        mean input-loss curvature over the models that trained on the sample (the empirical link
        of Ravikumar et al., ICML 2024, Sec. 6.3)."""
        views = [
            self.view(workspace, m, k, population, Access.PARAMETERS)
            for m, k in zip(models, keys, strict=True)
        ]
        correct = np.stack(
            [(v.population_logits("none").argmax(1) == population.y).numpy() for v in views]
        )
        estimate = memorization(correct, masks)
        summary: dict[str, Any] = {
            "models": len(models),
            "mean": float(np.nanmean(estimate.score)),
            "above_0_5": int(np.nansum(estimate.score > 0.5)),
        }
        curvature = np.full(len(population), np.nan)
        if "curvature" in self.registry.names("scorer"):
            values = np.stack(
                [
                    v.population_scores("curvature", method="finite-difference").numpy()
                    for v in views
                ]
            )
            with np.errstate(invalid="ignore"):
                curvature = np.where(masks, values, 0.0).sum(0) / masks.sum(0)
            rho, p_value = rank_correlation(estimate.score, curvature)
            summary.update(spearman_curvature=rho, spearman_p_value=p_value)
        lines = [
            "index,label,memorization,standard_error,accuracy_in,accuracy_out,n_in,n_out,curvature_in"
        ]
        for i in range(len(population)):
            lines.append(
                f"{indices[i]},{int(population.y[i])},{estimate.score[i]:.6g},"
                f"{estimate.standard_error[i]:.6g},{estimate.accuracy_in[i]:.6g},"
                f"{estimate.accuracy_out[i]:.6g},{estimate.n_in[i]},{estimate.n_out[i]},"
                f"{curvature[i]:.6g}"
            )
        return summary, "\n".join(lines) + "\n"

    def scores(
        self,
        workspace: Workspace,
        models: Sequence[Model],
        keys: Sequence[str],
        population: TensorData,
        masks: np.ndarray,
        indices: np.ndarray,
        targets: Sequence[int],
        choice: PluginChoice,
        scorer: Any,
    ) -> tuple[dict[str, Any], str]:
        """A scorer on every target model: its values (mean over query augmentations) summarised
        for members and non-members, with the AUC of the value as a membership score (0.5: the
        statistic does not separate them; below 0.5: members score lower)."""
        from sklearn.metrics import roc_auc_score

        values, member = [], []
        lines = ["index,label,target,member,value"]
        for t in targets:
            view = self.view(workspace, models[t], keys[t], population, scorer.access)
            raw = view.population_scores(choice.name, **dict(choice.options)).double()
            value = (raw.mean(1) if raw.ndim == 2 else raw).numpy()
            values.append(value)
            member.append(masks[t])
            lines.extend(
                f"{indices[i]},{int(population.y[i])},{t},{int(masks[t][i])},{value[i]:.6g}"
                for i in range(len(population))
            )
        value, member = np.concatenate(values), np.concatenate(member)

        def stats(part: np.ndarray) -> dict[str, float]:
            finite = part[np.isfinite(part)]
            if finite.size == 0:
                return {"mean": float("nan"), "median": float("nan")}
            return {"mean": float(finite.mean()), "median": float(np.median(finite))}

        finite = np.isfinite(value)
        separable = finite.any() and 0 < member[finite].sum() < finite.sum()
        summary = {
            "options": config_dict(scorer),
            "access": scorer.access.label,
            "members": stats(value[member]),
            "non_members": stats(value[~member]),
            "membership_auc": (
                float(roc_auc_score(member[finite], value[finite])) if separable else float("nan")
            ),
        }
        return summary, "\n".join(lines) + "\n"

    def utility(
        self,
        workspace: Workspace,
        models: Sequence[Model],
        keys: Sequence[str],
        dataset: LoadedDataset,
        population: TensorData,
        masks: np.ndarray,
        targets: Sequence[int],
    ) -> dict[str, float]:
        """Accuracy of the released target models on their own members and on the test split."""
        train_acc, test_acc = [], []
        for t in targets:
            view = self.view(workspace, models[t], keys[t], population, Access.LOGITS)
            predictions = view.population_logits("none").argmax(1)
            train_acc.append(
                float((predictions == population.y)[torch.from_numpy(masks[t])].float().mean())
            )
            test_logits = self.test_logits(workspace, view, keys[t], dataset)
            test_acc.append(float((test_logits.argmax(1) == dataset.test.y).float().mean()))
        return {
            "train_accuracy": float(np.mean(train_acc)),
            "test_accuracy": float(np.mean(test_acc)),
            "generalization_gap": float(np.mean(train_acc) - np.mean(test_acc)),
        }

    def record(
        self,
        workspace: Workspace,
        results: list[AttackResult],
        utility: dict[str, float],
        metas: list[dict[str, Any]],
        trained: int,
        training_seconds: float,
        started: float,
        indices: np.ndarray,
        analyses: dict[str, Any],
        tables: dict[str, str],
        artifacts: Mapping[str, Callable[[Path], object]] | None = None,
        *,
        insert: bool = True,
    ) -> RunResult:
        spec = self.spec
        created = dt.datetime.now(dt.timezone.utc)
        run_id = created.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        defense_meta = {k: v for k, v in metas[0].items() if k not in {"index", "members"}}
        if "epsilon" in defense_meta:
            # A DP defense records its accountant's guarantee: show what it allows at most.
            bound = theoretical_maximum(
                float(defense_meta["epsilon"]), float(defense_meta.get("delta", 0.0))
            )
            analyses = {**analyses, "dp_bound": bound.as_dict()}
        record = {
            "run_id": run_id,
            "created_at": created.isoformat(timespec="seconds"),
            "spec": {
                "dataset": self.identity["dataset"],
                "model": self.identity["model"],
                "defense": self.identity["defense"],
                "recipe": attrs.asdict(spec.recipe),
                "shadows": spec.shadows,
                "paired": spec.paired,
                "targets": spec.targets if spec.targets is not None else spec.pool_size,
                "population": len(indices),
                "seed": spec.seed,
                "device": str(self.device),
            },
            "utility": utility,
            **analyses,
            "training": {
                "models": len(metas),
                "trained": trained,
                "reused": len(metas) - trained,
                "seconds": training_seconds,
                "target_meta": defense_meta,
            },
            "attacks": [
                {
                    "name": r.name,
                    "access": r.access,
                    "options": r.options,
                    "metrics": r.metrics,
                    "per_target": r.per_target,
                    "seconds": r.seconds,
                    "signal_seconds": r.signal_seconds,
                    "roc": roc_points(r.fpr, r.tpr),
                }
                for r in results
            ],
            "environment": {
                "privbench": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "plugins": {
                    info.name: {"distribution": info.distribution, "version": info.version}
                    for info in self.registry.plugins.values()
                    if info.status == "loaded"
                },
            },
            "seconds": time.perf_counter() - started,
        }
        run_dir = workspace.runs / run_id
        staging = Path(tempfile.mkdtemp(prefix=f".{run_id}-", dir=workspace.runs))
        try:
            if results:
                plot_roc(
                    {r.name: (r.fpr, r.tpr, r.metrics["auc"]) for r in results},
                    staging / "roc.png",
                    title=f"{spec.dataset.name} / {spec.model.name} / defense {spec.defense.name}",
                )
            write_json_atomic(staging / "results.json", record)
            for name, text in tables.items():
                (staging / name).write_text(text)
            for name, write in (artifacts or {}).items():
                write(staging / name)
            os.replace(staging, run_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result = RunResult(run_id=run_id, path=run_dir, record=record, attacks=results)
        if insert:
            insert_run(workspace, result)
        return result


def insert_run(
    workspace: Workspace, result: RunResult, then: Callable[[ResultsDB], object] = id
) -> None:
    """Insert a written run into the database (and do *then* in the same transaction); a run
    whose insert fails loses its folder: a run is in the database or nowhere."""
    try:
        with ResultsDB(workspace.database) as db:
            db.insert_run(result.record, result.path)
            then(db)
    except BaseException:
        shutil.rmtree(result.path, ignore_errors=True)
        raise
