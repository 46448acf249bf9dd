"""Reading a suite file and checking its values exactly as TOML types them, each error naming
the file and the line of the offending key (:mod:`privbench.bench.suite` builds the cells)."""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from privbench.engine.settings import SPEC_PARAMETERS
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.errors import PrivbenchError
from privbench.plugins import Kind, Registry
from privbench.plugins.options import convert, option_fields

SPEC_FIELDS = set(SPEC_PARAMETERS) - {"seed"}
KIND_OF_LIST: dict[str, Kind] = {
    "datasets": "dataset", "models": "model", "defenses": "defense", "attacks": "attack"
}  # fmt: skip
_HEADER_LINE = re.compile(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?")


class SuiteError(PrivbenchError):
    """A malformed suite file: the message starts with ``file:line:``."""


def line_of(text: str, needle: str) -> int | None:
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


def read_suite_text(path: Path) -> str:
    """The text of suite file *path*, decoded as TOML says (UTF-8, whatever the locale)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SuiteError(f"{path}: no such suite file") from None
    except OSError as err:  # a folder, no permission
        raise SuiteError(f"{path}: cannot read the suite file: {err.strerror or err}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise SuiteError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x}): a suite file is TOML, "
            "which is UTF-8; save it as UTF-8"
        ) from None


def table_line(text: str, table: str, key: str, index: int = 1) -> int | None:
    """The line of *key* in the *index*-th table named *table* (``suite``, or the n-th
    ``[[models]]`` entry with its ``[models.options]`` sub-table), else of that table's header:
    a key such as ``name`` or ``seed`` recurs in other tables."""
    inside, heading, count = False, None, 0
    assignment = re.compile(rf"(^|[{{,])\s*{re.escape(key)}\s*=")
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#")[0]
        header = _HEADER_LINE.match(code)
        if header:
            name = header.group(1)
            if name == table:
                count += 1
                inside = count == index
                heading = number if inside else heading
            else:
                inside = inside and name.startswith(f"{table}.")
        elif inside and assignment.search(code):
            return number
    return heading


def toml_text(value: Any) -> str:
    """*value* as a suite file spells it (``true``, ``"yes"``, ``[1, 2.5]``), shortened to fit
    the one line of an error."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, float) and not math.isfinite(value):
        text = str(value)  # TOML's inf, -inf, nan
    elif isinstance(value, list):
        text = "[" + ", ".join(map(toml_text, value)) + "]"
    elif isinstance(value, dict):
        text = "{ " + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + " }"
    elif isinstance(value, datetime.date | datetime.time):
        text = value.isoformat()
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_types(
    values: Mapping[str, Any],
    types: Mapping[str, Any],
    section: str,
    place: Callable[[str], str],
) -> None:
    """Every value of *values* of its key's type in *types*, exactly (keys not in *types* are
    left to the unknown-key checks)."""
    for key, value in values.items():
        if key not in types:
            continue
        try:
            convert(value, types[key], parse_strings=False)
        except (TypeError, ValueError) as err:
            raise SuiteError(
                f"{place(key)} bad {section} value '{key}' = {toml_text(value)}: {err}"
            ) from None


def suite_types() -> dict[str, Any]:
    """The type of each [suite] key: the run parameters' are AuditSpec's fields' types."""
    spec = option_fields(AuditSpec)
    return {name: spec[name].type for name in SPEC_FIELDS} | {
        "name": str, "seeds": list[int], "rank_by": str, "preset": str, "data_root": str
    }  # fmt: skip


def check_options(
    registry: Registry, what: str, entries: list[PluginChoice], place: Callable[..., str]
) -> None:
    """The options of each ``[[what]]`` entry, typed exactly: checked here because resolving a
    plugin converts its options as it does command-line text, where "1" is true."""
    for index, choice in enumerate(entries, 1):
        try:
            fields = option_fields(registry.get(KIND_OF_LIST[what], choice.name).cls)
        except PrivbenchError:
            continue  # an unknown plugin: validating the cells names it, with suggestions
        for key, value in choice.options.items():
            if key not in fields:
                continue  # the plugin's own check lists its options
            try:
                convert(value, fields[key].type, parse_strings=False)
            except (TypeError, ValueError) as err:
                raise SuiteError(
                    f"{place(what, key, index)} bad [[{what}]] {index} ('{choice.name}') option "
                    f"'{key}' = {toml_text(value)}: {err}"
                ) from None


def entry_line(text: str, what: str, name: str) -> int | None:
    """The line of ``name = "NAME"`` in the first ``[[what]]`` entry that has it."""
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.split("#")[0].strip()
        if stripped.startswith("["):
            inside = stripped == f"[[{what}]]"
        elif inside and re.fullmatch(rf'name\s*=\s*"{re.escape(name)}"', stripped):
            return number
    return None
