"""The signal cache: per-model statistics on the population (logits under a query augmentation,
scorer plugins' values) and each target's test-split logits, computed once, stored beside the
model in the workspace, and read by attacks through :class:`~privbench.ModelView` s that enforce
each attack's declared access.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from privbench.engine.fitting import divergence_cause
from privbench.engine.pool import Pool
from privbench.engine.store import Workspace, digest
from privbench.errors import AccessDeniedError, OptionError, TrainingDivergedError
from privbench.plugins import Registry
from privbench.plugins.interfaces import Access, Model, ModelView, Signal, TensorData
from privbench.plugins.options import config_dict

AUGMENTATIONS = ("none", "hflip")


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


def listed_signals(attack: Any, hflip_preserves_label: bool) -> list[Signal] | None:
    """The signals *attack* lists (``Attack.signals``), or None when it lists none."""
    declared = getattr(attack, "signals", None)
    return list(declared(hflip_preserves_label)) if callable(declared) else None


class SignalCache:
    """One pool's signals in one workspace: views of its models that read through the cache."""

    def __init__(self, pool: Pool, workspace: Workspace) -> None:
        self.pool = pool
        self.workspace = workspace

    def cache_name(self, signal: Signal) -> str:
        """The name a model's *signal* on the population is cached under."""
        if signal.kind == "logits":
            return f"population-{signal.name}-{self.pool.population_digest[:16]}"
        scorer = self.pool.components.registry.create("scorer", signal.name, signal.options)
        return signal_name(scorer, self.pool.population_digest)

    def view(self, index: int, model: Model, access: Access) -> ModelView:
        """Pool model *index* (released as *model*) as a threat model of *access* sees it."""
        pool, workspace, key = self.pool, self.workspace, self.pool.keys[index]
        device = pool.components.device
        population = pool.population

        def population_logits(augmentation: str) -> torch.Tensor:
            if augmentation not in AUGMENTATIONS:
                raise ValueError(f"augmentation must be one of {AUGMENTATIONS}")
            if augmentation == "hflip" and not pool.dataset.hflip_preserves_label:
                raise OptionError(_mirrored(pool))
            x = population.x.flip(-1) if augmentation == "hflip" else population.x
            full = ModelView(model, Access.LOGITS, device=device)
            return workspace.cached_tensor(
                key,
                self.cache_name(Signal.logits(augmentation)),
                lambda: self.finite(index, "the population", full.logits(x)),
            )

        def population_signal(
            requester: ModelView, name: str, options: dict[str, Any]
        ) -> torch.Tensor:
            scorer = scorer_for(pool.components.registry, requester, name, options)
            return workspace.cached_tensor(
                key,
                signal_name(scorer, pool.population_digest),
                lambda: run_scorer(scorer, requester, population),
            )

        return ModelView(
            model,
            access,
            device=device,
            population_logits=population_logits,
            population_signal=population_signal,
        )

    def test_logits(self, index: int, view: ModelView) -> torch.Tensor:
        """The released model's logits on the test split (cached): its utility."""
        test = self.pool.dataset.test
        return self.workspace.cached_tensor(
            self.pool.keys[index],
            f"test-{self.pool.test_digest[:16]}",
            lambda: self.finite(index, "the test split", view.logits(test.x)),
        )

    def finite(self, index: int, where: str, logits: torch.Tensor) -> torch.Tensor:
        """*logits* of model *index*, refused (never cached) when any is NaN or infinite: every
        metric after them would be meaningless."""
        if bool(torch.isfinite(logits).all()):
            return logits
        raise TrainingDivergedError(
            f"model {index} of the pool gives non-finite logits (NaN or inf) on {where}: "
            + divergence_cause(self.pool.spec)
        )

    def compute(self, index: int, model: Model, wanted: Iterable[Signal], target: bool) -> None:
        """Compute *wanted* for model *index* into the cache, and a *target*'s test logits (a
        suite's scoring pass). Full access, as for a shadow: the cache is per model; each
        attack's view still checks its own access when it reads."""
        view = self.view(index, model, Access.PARAMETERS)
        for signal in wanted:
            signal.read(view)
        if target:
            self.test_logits(index, view)

    def seconds(self, attack: Any, indices: Sequence[int]) -> float | None:
        """Seconds it took to compute the signals *attack* lists on the models *indices*, or
        None when it lists none (its cost is then simply its wall time)."""
        wanted = listed_signals(attack, self.pool.dataset.hflip_preserves_label)
        if wanted is None:
            return None
        names = [self.cache_name(signal) for signal in wanted]
        keys = [self.pool.keys[index] for index in indices]
        return sum(self.workspace.tensor_seconds(k, n) or 0.0 for k in keys for n in names)


def _mirrored(pool: Pool, attack: str = "the attack") -> str:
    return (
        f"mirrored queries change labels in dataset '{pool.spec.dataset.name}'; turn "
        f"{attack}'s hflip/augment option off"
    )


def check_queries(pool: Pool) -> None:
    """Refuse, before any training, an attack that lists mirrored queries on data whose labels
    mirroring changes (found while it runs, it would fail that attack alone)."""
    if pool.dataset.hflip_preserves_label:
        return
    for attack in pool.components.attacks:
        listed = listed_signals(attack.instance, False) or ()
        if Signal.logits("hflip") in listed:
            raise OptionError(_mirrored(pool, f"attack '{attack.name}'"))


def wanted_signals(pool: Pool) -> list[Signal]:
    """What the audit's attacks will read from every model, as far as they say."""
    wanted: list[Signal] = []
    for attack in pool.components.attacks:
        listed = listed_signals(attack.instance, pool.dataset.hflip_preserves_label) or ()
        wanted += [signal for signal in listed if signal not in wanted]
    return wanted
