"""Benchmark suites: a TOML file that expands into a matrix of audits, run with resume.

A suite holds data only (no executable content)::

    [suite]
    name = "smoke"
    seeds = [0]            # one cell per seed
    shadows = 3            # run parameters shared by every cell (as privbench run's flags)
    targets = 2
    population = 200
    preset = "quick"       # optional: a preset fills what the suite leaves unset

    [recipe]               # TrainingRecipe fields
    epochs = 5

    [[datasets]]
    name = "digits"

    [[models]]
    name = "small-cnn"
    options = { width = 8 }

    [[defenses]]
    name = "none"

    [[attacks]]
    name = "loss"
    [[attacks]]
    name = "lira"
    options = { variant = "offline" }

Cells are datasets x models x defenses x seeds; each cell runs every attack on one shared pool
of models (an attack named twice, e.g. LiRA online and offline, gets an audit of its own on the
same stored models). Every cell is validated (plugin names, options, data, model/data fit)
before anything trains; an error names the file and the line of the offending entry.

Values are taken as TOML types them, exactly: ``epochs = 2.0`` is not an integer, ``paired = 1``
and ``memorization = "yes"`` are not booleans (an integer does pass for a float).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from privbench.bench.suite_checks import (
    SPEC_FIELDS,
    SuiteError,
    check_options,
    check_types,
    entry_line,
    line_of,
    read_suite_text,
    suite_types,
    table_line,
    toml_text,
)
from privbench.engine.audit import prepare
from privbench.engine.pool import Pool
from privbench.engine.presets import PRESETS
from privbench.engine.settings import RECIPE_PARAMETERS, build_spec
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import digest
from privbench.errors import PrivbenchError, one_line
from privbench.plugins import Registry, get_registry
from privbench.plugins.interfaces import TrainingRecipe
from privbench.plugins.options import kind_of, option_fields
from privbench.results.db import METRIC_COLUMNS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_LISTS = ("datasets", "models", "defenses", "attacks")


@attrs.frozen
class Cell:
    """One audit of the matrix and the suite entries it came from."""

    key: str
    """Content address of the spec: a cell already recorded under it is not run again."""
    label: str
    spec: AuditSpec


@attrs.frozen
class Suite:
    name: str
    path: Path
    cells: tuple[Cell, ...]
    rank_by: str = "tpr_at_0_1_fpr"
    """The metric leaderboards rank by (TPR at 0.1% FPR, as the field now reports)."""


def _choice(entry: Any, what: str, where: Callable[[str], str]) -> PluginChoice:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise SuiteError(f'{where(what)} each [[{what}]] entry needs name = "..."')
    unknown = set(entry) - {"name", "options"}
    if unknown:
        raise SuiteError(
            f"{where(sorted(unknown)[0])} [[{what}]] takes only 'name' and 'options', "
            f"not {', '.join(sorted(unknown))}"
        )
    options = entry.get("options", {})
    if not isinstance(options, dict):
        raise SuiteError(f"{where(entry['name'])} options of '{entry['name']}' must be a table")
    return PluginChoice(entry["name"], options)


def _describe(choice: PluginChoice) -> str:
    if not choice.options:
        return choice.name
    return f"{choice.name}(" + ", ".join(f"{k}={v}" for k, v in choice.options.items()) + ")"


def _attack_groups(attacks: list[PluginChoice]) -> list[tuple[PluginChoice, ...]]:
    """Attacks split so that no audit holds one name twice (first come, first grouped)."""
    groups: list[list[PluginChoice]] = []
    for attack in attacks:
        for group in groups:
            if all(a.name != attack.name for a in group):
                group.append(attack)
                break
        else:
            groups.append([attack])
    return [tuple(g) for g in groups]


def suite_header(path: str | Path) -> tuple[str, str]:
    """A suite's name and ranking metric, read without validating its cells."""
    path = Path(path)
    try:
        header = tomllib.loads(read_suite_text(path)).get("suite", {})
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from None
    if not isinstance(header, dict):
        raise SuiteError(f"{path}: [suite] must be a table, got {kind_of(header)}")
    name, rank_by = header.get("name", path.stem), header.get("rank_by", "tpr_at_0_1_fpr")
    for key, value in (("name", name), ("rank_by", rank_by)):
        if not isinstance(value, str):
            raise SuiteError(
                f"{path}: bad [suite] value '{key}' = {toml_text(value)}: expected a string, "
                f"got {kind_of(value)}"
            )
    return name, rank_by


def load_suite(
    path: str | Path,
    registry: Registry | None = None,
    *,
    data_root: str | None = None,
    check_data: bool = True,
) -> Suite:
    """Parse and validate *path*: every cell resolves its plugins and options, loads its data
    (unless ``check_data=False``) and checks that the model takes it. Raises
    :class:`SuiteError` naming file and line.

    The data folder is *data_root*, else the suite's ``data_root``, else ``PRIVBENCH_DATA``,
    resolved here so that jobs on other machines get the same absolute path. It does not enter
    a cell's key: moving the data does not make finished cells run again."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: no such suite file")
    text = read_suite_text(path)

    def where(needle: str) -> str:
        line = line_of(text, needle)
        return f"{path}:{line}:" if line else f"{path}:"

    def place(table: str, key: str, index: int = 1) -> str:
        line = table_line(text, table, key, index)
        return f"{path}:{line}:" if line else where(key)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from None
    registry = registry or get_registry()
    unknown = set(data) - {"suite", "recipe", *_LISTS}
    if unknown:
        raise SuiteError(f"{where(sorted(unknown)[0])} unknown section '{sorted(unknown)[0]}'")
    for section in ("suite", "recipe"):
        if not isinstance(data.get(section, {}), dict):
            raise SuiteError(
                f"{where(section)} [{section}] must be one table, got {kind_of(data[section])}"
            )
    check_types(data.get("suite", {}), suite_types(), "[suite]", lambda k: place("suite", k))
    recipe_types = {k: f.type for k, f in option_fields(TrainingRecipe).items()}
    check_types(data.get("recipe", {}), recipe_types, "[recipe]", lambda k: place("recipe", k))
    header = dict(data.get("suite", {}))
    name = header.pop("name", path.stem)
    seeds = header.pop("seeds", [0])
    rank_by = header.pop("rank_by", "tpr_at_0_1_fpr")
    if rank_by not in METRIC_COLUMNS:
        raise SuiteError(
            f"{where('rank_by')} rank_by '{one_line(rank_by)}' is not a metric "
            f"(metrics: {', '.join(METRIC_COLUMNS)})"
        )
    if not seeds:  # its type is checked above
        raise SuiteError(f"{place('suite', 'seeds')} seeds must be a non-empty list of integers")
    preset = header.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        raise SuiteError(
            f"{where('preset')} unknown preset '{one_line(preset)}' (presets: {', '.join(PRESETS)})"
        )
    bad = set(header) - SPEC_FIELDS
    if bad:
        raise SuiteError(
            f"{where(sorted(bad)[0])} unknown [suite] key '{sorted(bad)[0]}' "
            f"(known: name, seeds, rank_by, preset, {', '.join(sorted(SPEC_FIELDS))})"
        )
    recipe = data.get("recipe", {})
    bad = set(recipe) - set(RECIPE_PARAMETERS)
    if bad:
        raise SuiteError(
            f"{where(sorted(bad)[0])} unknown [recipe] key '{sorted(bad)[0]}' "
            f"(known: {', '.join(RECIPE_PARAMETERS)})"
        )
    lists = {}
    for what in _LISTS:
        entries = data.get(what)
        if isinstance(entries, dict):
            raise SuiteError(
                f"{where(what)} [{what}] is one table: write [[{what}]], one per entry"
            )
        if not isinstance(entries, list) or not entries:
            raise SuiteError(f"{path}: needs at least one [[{what}]] entry")
        lists[what] = [_choice(e, what, where) for e in entries]
        check_options(registry, what, lists[what], place)
    root = data_root or header.pop("data_root", None) or os.environ.get("PRIVBENCH_DATA")
    header.pop("data_root", None)
    if root:
        try:
            header["data_root"] = str(Path(root).expanduser().resolve())
        except (RuntimeError, OSError) as err:  # "~nobody/data": no such user's home
            given = (
                "--data-root" if data_root
                else "PRIVBENCH_DATA" if "data_root" not in data.get("suite", {})
                else "[suite] data_root"
            )  # fmt: skip
            at = place("suite", "data_root") if given.startswith("[") else f"{path}:"
            raise SuiteError(f"{at} bad {given} '{root}': {err}") from None
    cells = []
    for dataset in lists["datasets"]:
        for model in lists["models"]:
            for defense in lists["defenses"]:
                for seed in seeds:
                    for attacks in _attack_groups(lists["attacks"]):
                        spec = _cell_spec(
                            registry, where, preset, recipe, header,
                            dataset=dataset, model=model, defense=defense, attacks=attacks,
                            seed=seed,
                        )  # fmt: skip
                        label = (
                            f"{dataset.name} / {_describe(model)} / {_describe(defense)} / "
                            f"seed {seed} / " + ", ".join(_describe(a) for a in attacks)
                        )
                        cells.append(Cell(cell_key(spec), label, spec))
    _validate(cells, registry, path, text, check_data)
    return Suite(name, path, tuple(cells), rank_by)


def _cell_spec(
    registry: Registry,
    where: Callable[[str], str],
    preset: str | None,
    recipe: dict[str, Any],
    header: dict[str, Any],
    **plugins: Any,
) -> AuditSpec:
    """One cell's spec, built as ``privbench.audit`` builds one (attacks' victim settings are
    not applied: a suite says what it trains)."""
    try:
        spec, _ = build_spec(
            registry, preset=preset, victim_settings=False, **recipe, **header, **plugins
        )
    except PrivbenchError as err:
        message = str(err)
        mentions = {
            k: (f"--{k.replace('_', '-')} ", f"'{k}'", f" {k}=") for k in (*recipe, *header)
        }
        culprit = next((k for k, forms in mentions.items() if any(f in message for f in forms)),
                       None)  # fmt: skip
        section = "[recipe]" if culprit in recipe else "[suite]"
        what = f" '{culprit}'" if culprit else ""
        raise SuiteError(
            f"{where(culprit or section)} bad {section} value{what}: {message}"
        ) from None
    return spec


def cell_key(spec: AuditSpec) -> str:
    """A cell's content address: its spec less where the data lies and which device runs it
    (neither changes a result; the data's content is in every model's key)."""
    return digest(attrs.asdict(attrs.evolve(spec, data_root=None, device="auto")))[:16]


def _validate(
    cells: list[Cell], registry: Registry, path: Path, text: str, check_data: bool
) -> None:
    checked: set[tuple[str, ...]] = set()
    for cell in cells:
        spec = cell.spec
        try:
            components = prepare(spec, registry)
            data_key = (
                repr(spec.dataset),
                repr(spec.model),
                repr(spec.defense),
                str(spec.population),
            )
            if check_data and data_key not in checked:
                Pool.plan(components).check_model()
                checked.add(data_key)
        except PrivbenchError as err:
            message = str(err)
            # The most specific entry the message quotes: an option's line beats its plugin's.
            quoted = re.findall(r"'([^']+)'", message)
            lines = [line_of(text, q) for q in quoted]
            # Else the dataset's entry: loading the data is what failed (a missing folder).
            found = [line for line in lines if line is not None] or [
                line for line in [entry_line(text, "datasets", spec.dataset.name)] if line
            ]
            place = f"{path}:{max(found)}:" if found else f"{path}:"
            raise SuiteError(f"{place} {message}") from None
