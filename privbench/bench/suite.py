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
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from privbench.engine.audit import prepare
from privbench.engine.pool import Pool
from privbench.engine.presets import PRESETS
from privbench.engine.settings import RECIPE_PARAMETERS, SPEC_PARAMETERS, build_spec
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import digest
from privbench.errors import PrivbenchError
from privbench.plugins import Registry, get_registry
from privbench.results.db import METRIC_COLUMNS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_SPEC_FIELDS = set(SPEC_PARAMETERS) - {"seed"}
_LISTS = ("datasets", "models", "defenses", "attacks")


class SuiteError(PrivbenchError):
    """A malformed suite file: the message starts with ``file:line:``."""


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


def _line_of(text: str, needle: str) -> int | None:
    """The line where *needle* is a key (``needle =``), else where it first appears."""
    key = re.compile(rf"^\s*{re.escape(needle)}\s*=")
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if key.match(line):
            return number
    for number, line in enumerate(lines, 1):
        if needle in line.split("#")[0]:  # not in a comment that happens to mention it
            return number
    return None


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
        header = tomllib.loads(path.read_text()).get("suite", {})
    except FileNotFoundError:
        raise SuiteError(f"{path}: no such suite file") from None
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from None
    return header.get("name", path.stem), header.get("rank_by", "tpr_at_0_1_fpr")


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
    text = path.read_text()

    def where(needle: str) -> str:
        line = _line_of(text, needle)
        return f"{path}:{line}:" if line else f"{path}:"

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from None
    registry = registry or get_registry()
    unknown = set(data) - {"suite", "recipe", *_LISTS}
    if unknown:
        raise SuiteError(f"{where(sorted(unknown)[0])} unknown section '{sorted(unknown)[0]}'")
    header = dict(data.get("suite", {}))
    name = header.pop("name", path.stem)
    seeds = header.pop("seeds", [0])
    rank_by = header.pop("rank_by", "tpr_at_0_1_fpr")
    if rank_by not in METRIC_COLUMNS:
        raise SuiteError(
            f"{where('rank_by')} rank_by '{rank_by}' is not a metric "
            f"(metrics: {', '.join(METRIC_COLUMNS)})"
        )
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds) or not seeds:
        raise SuiteError(f"{where('seeds')} seeds must be a list of integers")
    preset = header.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        raise SuiteError(
            f"{where('preset')} unknown preset '{preset}' (presets: {', '.join(PRESETS)})"
        )
    bad = set(header) - _SPEC_FIELDS
    if bad:
        raise SuiteError(
            f"{where(sorted(bad)[0])} unknown [suite] key '{sorted(bad)[0]}' "
            f"(known: name, seeds, rank_by, preset, {', '.join(sorted(_SPEC_FIELDS))})"
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
        if not isinstance(entries, list) or not entries:
            raise SuiteError(f"{path}: needs at least one [[{what}]] entry")
        lists[what] = [_choice(e, what, where) for e in entries]
    root = data_root or header.pop("data_root", None) or os.environ.get("PRIVBENCH_DATA")
    header.pop("data_root", None)
    if root:
        header["data_root"] = str(Path(root).expanduser().resolve())
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


def _entry_line(text: str, what: str, name: str) -> int | None:
    """The line of ``name = "NAME"`` in the first ``[[what]]`` entry that has it."""
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.split("#")[0].strip()
        if stripped.startswith("["):
            inside = stripped == f"[[{what}]]"
        elif inside and re.fullmatch(rf'name\s*=\s*"{re.escape(name)}"', stripped):
            return number
    return None


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
            lines = [_line_of(text, q) for q in quoted]
            # Else the dataset's entry: loading the data is what failed (a missing folder).
            found = [line for line in lines if line is not None] or [
                line for line in [_entry_line(text, "datasets", spec.dataset.name)] if line
            ]
            place = f"{path}:{max(found)}:" if found else f"{path}:"
            raise SuiteError(f"{place} {message}") from None
