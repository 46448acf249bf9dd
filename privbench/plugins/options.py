"""Typed plugin options: ``key=value`` strings (CLI) or TOML values (suites) to attrs instances.

A plugin class is an attrs class whose fields are its options. :func:`configure` builds an
instance from a mapping, converting strings by each field's annotation (``bool``, ``int``,
``float``, ``str``, ``Literal``, ``Enum``, ``X | None``) and letting the attrs validators judge
the values; every failure becomes one :class:`~privbench.errors.OptionError` line.
"""

from __future__ import annotations

import ast
import contextlib
import enum
import functools
import inspect
import json
import numbers
import re
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import attrs
import numpy as np

from privbench.errors import OptionError, did_you_mean

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}
_NONE = {"none", "null", ""}


def parse_assignments(items: Iterable[str], *, flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` to ``{"a": "1", "b": "x"}``; *flag* names the option in errors."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"{flag} expects key=value, got '{item}'")
        result[key.strip()] = value.strip()
    return result


def option_fields(cls: type) -> dict[str, attrs.Attribute]:
    """The options of a plugin class: its public attrs fields, annotations resolved where they
    can be (a class defined where its annotations' names are not importable keeps them as
    text, and its option values are then taken as given)."""
    with contextlib.suppress(NameError, TypeError, AttributeError):
        attrs.resolve_types(cls)
    return {f.name: f for f in attrs.fields(cls) if f.init and not f.name.startswith("_")}


def describe_options(cls: type) -> list[tuple[str, str, str]]:
    """``(name, type, default)`` for each option of a plugin class."""
    rows = []
    for name, field in option_fields(cls).items():
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        rows.append(
            (name, _type_name(field.type), "" if default is attrs.NOTHING else repr(default))
        )
    return rows


def option_docs(cls: type) -> dict[str, str]:
    """The attribute docstring of each option of a plugin class (the string literal right after
    the field, dedented and stripped; ``""`` for an option without one), in the order of
    :func:`option_fields`.

    Read from the source of the class and of its attrs base classes (a subclass's docstring
    wins); cached per class. Never raises: a class whose source is unavailable (built at run
    time, or shipped without sources) documents nothing.
    """
    return dict(_option_docs(cls))


def option_summary(cls: type) -> dict[str, str]:
    """Each option's one-line meaning: the first sentence of its docstring (the lines of its
    first paragraph up to one that ends a sentence), joined into one line."""
    return {name: _first_sentence(doc) for name, doc in _option_docs(cls)}


@functools.cache
def _option_docs(cls: type) -> tuple[tuple[str, str], ...]:
    try:
        names = list(option_fields(cls))
    except Exception:  # unresolvable annotations: still list the fields, undocumented
        try:
            names = [f.name for f in attrs.fields(cls) if f.init and not f.name.startswith("_")]
        except Exception:
            return ()
    found: dict[str, str] = {}
    for klass in cls.__mro__:
        if attrs.has(klass):
            for name, doc in _attribute_docstrings(klass).items():
                found.setdefault(name, doc)
    return tuple((name, found.get(name, "")) for name in names)


def _attribute_docstrings(klass: type) -> dict[str, str]:
    """``name: docstring`` for every annotated assignment in the body of *klass* that a string
    literal follows."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except Exception:  # no source file, a source that moved on, or one that does not parse
        return {}
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)), None)
    if node is None or node.name != klass.__name__:
        return {}
    docs: dict[str, str] = {}
    for field, following in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[field.target.id] = inspect.cleandoc(following.value.value).strip()
    return docs


_SENTENCE_END = re.compile(r"[.!?][)\]\"'`]*$")


def _first_sentence(doc: str) -> str:
    lines: list[str] = []
    for line in doc.split("\n\n", 1)[0].splitlines():
        lines.append(line.strip())
        if _SENTENCE_END.search(line.strip()):
            break
    return " ".join(part for part in lines if part)


def configure(cls: type[T], options: Mapping[str, Any], *, what: str) -> T:
    """An instance of plugin class *cls* from *options*; *what* names it in errors
    (e.g. ``"attack 'loss'"``)."""
    fields = option_fields(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in options.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise OptionError(
                f"{what} has no option '{key}'{did_you_mean(key, fields)} (options: {known})"
            )
        try:
            kwargs[key] = convert(raw, fields[key].type)
        except (TypeError, ValueError) as err:
            raise OptionError(f"bad value for {what} option {key}={raw!r}: {err}") from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise OptionError(f"bad option for {what}: {_validator_message(err)}") from None


def config_dict(instance: Any) -> dict[str, Any]:
    """The options of a configured plugin as JSON-ready values (for store keys and results)."""
    fields = option_fields(type(instance))
    return {name: _jsonable(getattr(instance, name)) for name in fields}


def convert(value: Any, annotation: Any, *, parse_strings: bool = True) -> Any:
    """Convert *value* (a string from the CLI, or a TOML or Python value) to *annotation*.

    A string is text to parse by the annotation (``"3"`` for an int, ``"no"`` for a bool) while
    *parse_strings*; a typed source (TOML) passes False, and its strings then count only where
    a string is the value (``str``, a ``Literal`` of strings, an ``Enum`` member's name, "none"
    for an optional). Any other value must be of the annotated type already: a bool is not a
    number nor a number a bool, a float is not an int (not even 2.0), an int widens to a float.
    """
    if annotation is None or annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in _NONE)
        ):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(value, arg, parse_strings=parse_strings)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if origin is typing.Literal:
        for choice in args:
            # 1 == True and 1.0 == 1 in Python: a choice matches a value of its own kind only.
            if value == choice and kind_of(value) == kind_of(choice):
                return choice
            if parse_strings and isinstance(value, str) and str(choice) == value:
                return choice
        # A value of no choice's kind (1 for "online") is a type error: say which type it was.
        kinds = {kind_of(choice) for choice in args}
        given = "" if kind_of(value) in kinds else f", got {kind_of(value)}"
        raise ValueError(f"expected one of {', '.join(map(str, args))}{given}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)) and not (parse_strings and isinstance(value, str)):
            # A scalar is not a list of one: 5 would otherwise pass as "5", i.e. ["5"].
            raise ValueError(f"expected a list, got {kind_of(value)}")
        inner = args[0] if args else Any
        converted = []
        for number, item in enumerate(_split_list(value), 1):
            try:
                converted.append(convert(item, inner, parse_strings=parse_strings))
            except ValueError as err:
                raise ValueError(f"item {number}: {err}") from None
        return tuple(converted) if origin is tuple else converted
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if isinstance(value, annotation):
            return value
        choices = ", ".join(m.name.lower().replace("_", "-") for m in annotation)
        if not isinstance(value, str):  # a member is named, never numbered (str(1) is "1")
            raise ValueError(f"expected one of {choices}, got {kind_of(value)}")
        try:
            return annotation[value.upper().replace("-", "_")]
        except KeyError:
            raise ValueError(f"expected one of {choices}") from None
    if annotation is bool:
        if _is_bool(value):
            return bool(value)
        if not (parse_strings and isinstance(value, str)):
            # str(1) is "1", a true word: only text may spell a boolean.
            raise ValueError(f"expected true or false, got {kind_of(value)}")
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("expected true or false")
    if annotation is int:
        # bool is an int subclass in Python, and numpy's integers are not ints: ask numbers.
        if isinstance(value, numbers.Integral) and not _is_bool(value):
            return int(value)
        if not (parse_strings and isinstance(value, str)):
            raise ValueError(f"expected an integer, got {kind_of(value)}")
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError("expected an integer") from None
    if annotation is float:
        if isinstance(value, numbers.Real) and not _is_bool(value):
            return float(value)  # an int widens
        if not (parse_strings and isinstance(value, str)):
            raise ValueError(f"expected a number, got {kind_of(value)}")
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError("expected a number") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {kind_of(value)}")
        return value
    return value


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def kind_of(value: Any) -> str:
    """What *value* is, for "expected ..., got ..." messages (in the words TOML uses)."""
    if _is_bool(value):
        return "a boolean"
    if isinstance(value, numbers.Integral):
        return "an integer"
    if isinstance(value, numbers.Real):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _split_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    text = str(value).strip()
    if text.startswith("["):
        return list(json.loads(text))
    return [part.strip() for part in text.split(",") if part.strip()]


def _validator_message(err: Exception) -> str:
    # attrs validators raise ValueError("'name' must be >= 1: 0") style messages; keep the text.
    return str(err.args[0]) if err.args else str(err)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return "|".join(
            "none" if arg is type(None) else _type_name(arg) for arg in typing.get_args(annotation)
        )
    if typing.get_origin(annotation) is typing.Literal:
        return "|".join(map(str, typing.get_args(annotation)))
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return "|".join(m.name.lower().replace("_", "-") for m in annotation)
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name.lower().replace("_", "-")
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
