"""A spec's plugins resolved: every name looked up, every option validated, every attack checked
against the pool it will get, before any data is loaded or any model trained (a typo costs
nothing). Also what identifies each configured plugin in store keys and results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch

from privbench.engine import splits
from privbench.engine.slicing import check_slices
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import file_digest
from privbench.engine.training import resolve_device
from privbench.errors import OptionError
from privbench.plugins import Component, Registry
from privbench.plugins.options import config_dict


def component_identity(component: Component, instance: Any) -> dict[str, Any]:
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


@attrs.frozen(eq=False)
class Configured:
    """One configured plugin: the component it came from and its instance."""

    component: Component
    instance: Any

    @property
    def name(self) -> str:
        return self.component.name

    @property
    def access_label(self) -> str:
        return self.instance.access.label


@attrs.frozen(eq=False)
class Components:
    """Every plugin of one audit, configured and validated, and the device it runs on."""

    spec: AuditSpec
    registry: Registry
    dataset: Configured
    model: Configured
    defense: Configured
    attacks: tuple[Configured, ...]
    """Membership attacks (they define ``score``)."""
    reconstructions: tuple[Configured, ...]
    """Reconstruction attacks (they define ``reconstruct``)."""
    scorers: tuple[Configured, ...]
    device: torch.device
    identity: dict[str, dict[str, Any]]
    """``dataset``, ``model`` and ``defense`` as :func:`component_identity` gives them."""

    @property
    def trains_by_recipe(self) -> bool:
        return bool(getattr(self.defense.instance, "trains_by_recipe", False))


def _configure(registry: Registry, kind: Any, choice: PluginChoice) -> Configured:
    component = registry.get(kind, choice.name)
    return Configured(component, registry.create(kind, choice.name, choice.options))


def _refuse_duplicates(kind: str, choices: tuple[PluginChoice, ...]) -> None:
    names = [choice.name for choice in choices]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise OptionError(f"{kind} '{duplicated[0]}' is given twice")


def _check_target(spec: AuditSpec, reconstructions: list[Configured]) -> None:
    """What a target the user brings needs, and what it rules out."""
    assert spec.target is not None
    weights = Path(spec.target.weights).expanduser()
    if weights.suffix != ".safetensors":
        raise OptionError(f"target weights {weights} must be a .safetensors file (never a pickle)")
    if not weights.is_file():
        raise OptionError(f"target weights {weights} do not exist")
    if reconstructions:
        raise OptionError(
            f"attack '{reconstructions[0].name}' needs the target's initial weights, which a "
            "model brought from elsewhere does not come with"
        )
    if spec.paired:
        raise OptionError("--paired pairs each model with another of the pool; a target you "
                          "bring has no partner: leave --paired out")  # fmt: skip
    if spec.targets not in (None, 1):
        raise OptionError("the model you bring is the one target: leave --targets out")


def _check_one_run(spec: AuditSpec, reconstructions: list[Configured]) -> None:
    """One line for what a one-run audit, one model trained with canaries, cannot do."""
    if spec.target is not None:
        raise OptionError("--audit one-run trains its own model with canaries: it cannot audit a "
                          "--target you bring (audit that with the membership game)")  # fmt: skip
    if spec.shadows:
        raise OptionError(f"--audit one-run trains one model: leave --shadows {spec.shadows} out")
    if spec.paired or spec.targets not in (None, 1):
        raise OptionError("--audit one-run trains one model: leave --paired and --targets out")
    if spec.memorization:
        raise OptionError("--memorization needs a pool of models; a one-run audit trains one")
    if reconstructions:
        raise OptionError(
            f"attack '{reconstructions[0].name}' reconstructs training images; a one-run "
            "audit measures membership: run it without --audit"
        )


def resolve(spec: AuditSpec, registry: Registry) -> Components:
    """*spec*'s plugins configured from *registry*; raises a one-line
    :class:`~privbench.errors.PrivbenchError` for anything the audit could not run with."""
    if not spec.attacks:
        raise OptionError("give at least one --attack")
    _refuse_duplicates("attack", spec.attacks)
    _refuse_duplicates("scorer", spec.scorers)
    dataset = _configure(registry, "dataset", spec.dataset)
    model = _configure(registry, "model", spec.model)
    defense = _configure(registry, "defense", spec.defense)
    attacks, reconstructions = [], []
    available = splits.shadow_count(spec.pool_size, paired=spec.paired)
    for choice in spec.attacks:
        attack = _configure(registry, "attack", choice)
        if callable(getattr(attack.instance, "reconstruct", None)):
            reconstructions.append(attack)
            continue
        needed = attack.instance.min_shadows
        if needed and spec.one_run:
            raise OptionError(
                f"attack '{choice.name}' needs {needed} shadow models and a one-run audit "
                "trains none: use attacks that need none (loss, confidence, quantile, gap, ...)"
            )
        if needed > available:
            # With paired masks a target's partner is not its shadow: one more is needed.
            why = " (with --paired a target's partner is not its shadow)" if spec.paired else ""
            raise OptionError(
                f"attack '{choice.name}' needs at least {needed} shadow models; "
                f"use --shadows {needed + spec.shadows - available} or more{why}"
            )
        attacks.append(attack)
    scorers = tuple(_configure(registry, "scorer", choice) for choice in spec.scorers)
    check_slices(spec.slices)
    if spec.target is not None:
        _check_target(spec, reconstructions)
    if spec.one_run:
        _check_one_run(spec, reconstructions)
    elif spec.canaries is not None or spec.canary_kind != "mislabelled":
        raise OptionError("--canaries and --canary-kind go with --audit one-run")
    if spec.targets is not None and not 1 <= spec.targets <= spec.pool_size:
        raise OptionError(f"--targets must be between 1 and {spec.pool_size} (shadows + 1)")
    return Components(
        spec=spec,
        registry=registry,
        dataset=dataset,
        model=model,
        defense=defense,
        attacks=tuple(attacks),
        reconstructions=tuple(reconstructions),
        scorers=scorers,
        device=resolve_device(spec.device),
        identity={
            "dataset": component_identity(dataset.component, dataset.instance),
            "model": component_identity(model.component, model.instance),
            "defense": component_identity(defense.component, defense.instance),
        },
    )
