"""From what a user says to an :class:`~privbench.engine.spec.AuditSpec`: the run parameters of
``privbench run`` (as flags), of ``privbench.audit(...)`` (as keyword arguments of the same
names) and of suite files, with what they leave unset filled in by an attack's victim setting
and then by a preset, and every value converted and checked.

Plugins may be given by name (``"lira"``, ``"timm/resnet18"``), as ``(name, options)``, as a
``{"name": ..., "options": ...}`` table, as a :class:`PluginChoice`, or as an instance of a
plugin class built in Python; an instance of a class no installed plugin provides (one defined
in a notebook) is registered for this process under its ``name``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from privbench.engine.presets import get_preset
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.target import TargetSpec
from privbench.errors import OptionError, did_you_mean
from privbench.plugins import Kind, Registry
from privbench.plugins.interfaces import TrainingRecipe
from privbench.plugins.options import config_dict, configure, convert, option_fields

RECIPE_PARAMETERS = tuple(attrs.fields_dict(TrainingRecipe))
SPEC_PARAMETERS = (
    "shadows", "targets", "population", "paired", "memorization", "seed", "data_root", "device",
    "slices", "audit", "canaries", "canary_kind",
)  # fmt: skip
TARGET_PARAMETERS = ("target", "members")
"""A trained model the user brings: its weights file and the samples it trained on."""
_PLUGINS: dict[str, tuple[Kind, str]] = {
    "attacks": ("attack", "attack_options"),
    "defense": ("defense", "defense_options"),
    "model": ("model", "model_options"),
    "dataset": ("dataset", "dataset_options"),
    "scorers": ("scorer", "scorer_options"),
}
RUN_PARAMETERS = (
    *_PLUGINS,
    *(options for _, options in _PLUGINS.values()),
    *SPEC_PARAMETERS,
    *TARGET_PARAMETERS,
    *RECIPE_PARAMETERS,
)
"""Every parameter of an audit, named as ``privbench run``'s flags (``--batch-size`` ->
``batch_size``; ``--attack`` -> ``attacks``, ``--attack-opt`` -> ``attack_options``)."""

_OPTIONS_OF = {kind: options for kind, options in _PLUGINS.values()}
_FLAGS = {"attacks": "attack", "scorers": "scorer"} | {
    options: f"{kind}-opt" for kind, options in _PLUGINS.values()
}


def flag(parameter: str) -> str:
    """The command-line flag of a run parameter (what error messages and notes name)."""
    return "--" + _FLAGS.get(parameter, parameter).replace("_", "-")


def plugin_choice(kind: Kind, value: Any, registry: Registry) -> PluginChoice:
    """A plugin as any of the forms this module accepts, as a :class:`PluginChoice`."""
    if isinstance(value, PluginChoice):
        return value
    if isinstance(value, str):
        return PluginChoice(value)
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return PluginChoice(value["name"], dict(value.get("options") or {}))
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return PluginChoice(value[0], dict(value[1] or {}))
    if attrs.has(type(value)) and isinstance(getattr(type(value), "name", None), str):
        component = registry.add_class(kind, type(value))
        options = config_dict(value)
        if component.create(options) != value:
            raise OptionError(
                f"{kind} '{component.name}': this instance's options do not rebuild it "
                "(every option must be an attrs field that its value round-trips through)"
            )
        return PluginChoice(component.name, options)
    raise OptionError(
        f"{kind} must be a name, (name, options), a PluginChoice or a plugin instance; "
        f"got {type(value).__name__}"
    )


def _choices(kind: Kind, value: Any, registry: Registry) -> list[PluginChoice]:
    if value is None:
        return []
    if isinstance(value, str | PluginChoice | Mapping) or not isinstance(value, Iterable):
        return [plugin_choice(kind, value, registry)]
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping):
        return [plugin_choice(kind, value, registry)]
    return [plugin_choice(kind, item, registry) for item in value]


def distribute_options(
    kind: Kind, choices: Sequence[PluginChoice], options: Mapping[str, Any], registry: Registry
) -> list[PluginChoice]:
    """*options* spread over *choices*: ``name.key`` targets one plugin, a bare ``key`` every
    given plugin that has the option (an error, with a suggestion, if none has it)."""
    per_plugin: dict[str, dict[str, Any]] = {c.name: dict(c.options) for c in choices}
    where = flag(_OPTIONS_OF[kind])
    for key, value in options.items():
        prefix, dot, option = key.partition(".")
        if dot and prefix in per_plugin:
            per_plugin[prefix][option] = value
            continue
        if dot:
            raise OptionError(f"{where} {key}: '{prefix}' is not one of the {kind}s given")
        takers = [n for n in per_plugin if key in option_fields(registry.get(kind, n).cls)]
        if not takers:
            if not per_plugin:
                raise OptionError(f"{where} {key}: no {kind} given")
            takers = list(per_plugin)[:1]  # its validation gives the did-you-mean message
        for name in takers:
            per_plugin[name][key] = value
    return [PluginChoice(c.name, per_plugin[c.name]) for c in choices]


def attack_choices(
    attacks: Any, options: Mapping[str, Any] | None, registry: Registry
) -> list[PluginChoice]:
    """Attacks in any of the accepted forms, with ``attack_options`` spread over them."""
    choices = _choices("attack", attacks, registry)
    return distribute_options("attack", choices, options, registry) if options else choices


def _fill(
    given: dict[str, Any], registry: Registry, preset: str | None, victim_settings: bool
) -> list[str]:
    """Fill parameters left unset: first by each attack's ``victim_setting`` (the setting its
    paper attacks), then by *preset*; returns lines saying what was filled in and why."""
    filled: dict[str, tuple[Any, str]] = {}
    if victim_settings:
        for choice in given.get("attacks") or ():
            cls = registry.get("attack", choice.name).cls
            for key, value in getattr(cls, "victim_setting", {}).items():
                if key not in RUN_PARAMETERS:
                    raise OptionError(f"attack '{choice.name}' sets unknown run parameter '{key}'")
                if key in filled and filled[key][0] != value:
                    raise OptionError(
                        f"attacks '{filled[key][1]}' and '{choice.name}' need different "
                        f"{flag(key)} ({filled[key][0]} vs {value}): run them separately"
                    )
                filled[key] = (value, choice.name)
    if preset is not None:
        filled |= {key: (value, preset) for key, value in get_preset(preset).values.items()}
    by_source: dict[str, list[str]] = {}
    for key, (value, source) in filled.items():
        if given.get(key) is not None:
            continue
        given[key] = value
        shown = " ".join(map(str, value)) if isinstance(value, list | tuple) else value
        by_source.setdefault(source, []).append(f"{flag(key)} {shown}")
    notes = []
    for source, values in by_source.items():
        what = f"preset {source}" if source == preset else f"attack {source}'s victim setting"
        notes.append(f"{what}: {' '.join(values)} (flags given override it)")
    return notes


def _target(given: dict[str, Any], registry: Registry) -> tuple[TargetSpec | None, list[str]]:
    """The target the user brings, if any, and notes on it; with one and no attack that needs
    reference models, none are trained unless ``shadows`` says otherwise."""
    weights, members = given.get("target"), given.get("members")
    if weights is None and members is None:
        return None, []
    if weights is None:
        raise OptionError("--members says which samples a target trained on: give --target too")
    if members is None:
        raise OptionError("give the samples your target trained on: --members FILE")
    if isinstance(members, Path):
        members = str(members)
    if not isinstance(members, str):  # indices or a mask, as an array or a sequence
        members = tuple(np.asarray(members).reshape(-1).tolist())
    target = TargetSpec(str(Path(weights).expanduser()), members)
    attacks = given.get("attacks") or list(attrs.fields_dict(AuditSpec)["attacks"].default)
    needed = max(
        getattr(registry.create("attack", a.name, a.options), "min_shadows", 0) for a in attacks
    )
    if "shadows" not in given and needed == 0:
        given["shadows"] = 0
        return target, ["no attack given needs reference models: none are trained (--shadows 0)"]
    if given.get("shadows") == 0:
        return target, []
    return target, [
        "reference models are trained here by the recipe given (--epochs, --lr, ...): attacks "
        "that use them are only as good as its match to how your target was trained"
    ]


def build_spec(
    registry: Registry,
    *,
    preset: str | None = None,
    victim_settings: bool = True,
    **parameters: Any,
) -> tuple[AuditSpec, list[str]]:
    """An :class:`AuditSpec` from run parameters (None or absent: unset, so filled in or left
    at the default), and the notes that say what was filled in."""
    unknown = sorted(set(parameters) - set(RUN_PARAMETERS))
    if unknown:
        raise OptionError(
            f"unknown audit parameter '{unknown[0]}'{did_you_mean(unknown[0], RUN_PARAMETERS)}"
        )
    given = {k: v for k, v in parameters.items() if v is not None}
    if "attacks" in given:
        given["attacks"] = _choices("attack", given["attacks"], registry)
    target, notes = _target(given, registry)
    if given.get("audit") == "one-run" and "shadows" not in given:
        given["shadows"] = 0
        notes.append("--audit one-run trains one model, with canaries: --shadows 0")
    notes += _fill(given, registry, preset, victim_settings)
    fields: dict[str, Any] = {"target": target}
    defaults = attrs.fields_dict(AuditSpec)
    for parameter, (kind, options_parameter) in _PLUGINS.items():
        options = given.get(options_parameter) or {}
        if parameter not in given and not options:
            continue
        default = defaults[parameter].default
        if parameter in given:
            choices = _choices(kind, given[parameter], registry)
        else:
            choices = list(default) if isinstance(default, tuple) else [default]
        if options:
            choices = distribute_options(kind, choices, options, registry)
        if isinstance(default, tuple):
            fields[parameter] = tuple(choices)
        elif len(choices) == 1:
            fields[parameter] = choices[0]
        else:
            raise OptionError(f"give one {kind}, not {len(choices)}")
    recipe = {k: given[k] for k in RECIPE_PARAMETERS if k in given}
    fields["recipe"] = configure(TrainingRecipe, recipe, what="the training recipe")
    attrs.resolve_types(AuditSpec)
    types = attrs.fields_dict(AuditSpec)
    for name in SPEC_PARAMETERS:
        if name in given:
            try:
                fields[name] = convert(given[name], types[name].type)
            except (TypeError, ValueError) as err:
                raise OptionError(f"bad value for {flag(name)}: {given[name]!r} ({err})") from None
    try:
        return AuditSpec(**fields), notes
    except ValueError as err:  # attrs validators: "'population' must be >= 4: 2"
        message = str(err.args[0])
        # The spec's own validators name the flag already ("--seed -1: ...").
        raise OptionError(
            message if message.startswith("--") else f"bad value: {message}"
        ) from None
