"""Suite files are typed as TOML types them, exactly, and every bad file is one line naming the
file, the line, the key (with its table) and what was expected: a boolean is not an integer nor
an integer a boolean, a float is not an integer, a string is not a boolean; the Python API
refuses the same values. All of it before anything trains."""

from __future__ import annotations

import datetime
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privbench import OptionError
from privbench.bench.suite import SuiteError, load_suite, suite_header
from privbench.engine.settings import build_spec
from privbench.plugins import Registry
from privbench.plugins.options import convert

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.usefixtures("fresh_registry")

# -- a suite written from tables, so that any value can go in any place ---------------------------


def toml(value: Any) -> str:
    """*value* in TOML syntax (the test's own writer: the code under test must not write it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
        )
    if isinstance(value, str):
        escaped = "".join(
            "\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
            for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(map(toml, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def suite_text(
    suite: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    **entries: dict[str, Any],
) -> str:
    """A one-cell suite (digits, mlp, no defense, loss) with *suite* and *recipe* keys
    overriding its own and ``models={"name": ..., "options": {...}}``-style entries."""
    tables = {
        "suite": {"name": "tiny", "seeds": [0], "shadows": 1, "population": 60} | (suite or {}),
        "recipe": {"epochs": 1} | (recipe or {}),
    }
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {toml(value)}" for key, value in values.items()]
    plugins = {
        "datasets": {"name": "digits"},
        "models": {"name": "mlp"},
        "defenses": {"name": "none"},
        "attacks": {"name": "loss"},
    } | entries
    for table, entry in plugins.items():
        lines.append(f"[[{table}]]")
        lines += [f"{key} = {toml(value)}" for key, value in entry.items()]
    return "\n".join(lines) + "\n"


def write(folder: Path, text: str | bytes, name: str = "tiny.toml") -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_environment()


# -- the reported cases, through the command line -------------------------------------------------


SMALL = suite_text()  # line 2 is name, 3 seeds, 4 shadows, 5 population, 7 epochs


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("epochs = 1", "epochs = 2.5"), "tiny.toml:7: bad [recipe] value 'epochs' = 2.5: "
         "expected an integer, got a float"),
        (("epochs = 1", "epochs = 2.0"), "'epochs' = 2.0: expected an integer, got a float"),
        (("epochs = 1", "epochs = true"), "tiny.toml:7: bad [recipe] value 'epochs' = true: "
         "expected an integer, got a boolean"),
        (("epochs = 1", 'epochs = "3"'), "'epochs' = \"3\": expected an integer, got a string"),
        (("seeds = [0]", "seeds = [true]"), "tiny.toml:3: bad [suite] value 'seeds' = [true]: "
         "item 1: expected an integer, got a boolean"),
        (("seeds = [0]", "seeds = 0"), "tiny.toml:3: bad [suite] value 'seeds' = 0: "
         "expected a list, got an integer"),
        (("shadows = 1", "shadows = 1.0"), "tiny.toml:4: bad [suite] value 'shadows' = 1.0: "
         "expected an integer, got a float"),
        (("population = 60", 'population = 60\nmemorization = "yes"'),
         "tiny.toml:6: bad [suite] value 'memorization' = \"yes\": expected true or false, "
         "got a string"),
        (("population = 60", "population = 60\npaired = 1"),
         "tiny.toml:6: bad [suite] value 'paired' = 1: expected true or false, got an integer"),
        (("population = 60", 'population = 60\nslices = "class"'),
         "tiny.toml:6: bad [suite] value 'slices' = \"class\": expected a list, got a string"),
        (("population = 60", "population = 1979-05-27"),
         "tiny.toml:5: bad [suite] value 'population' = 1979-05-27: expected an integer, "
         "got a date"),
        (('name = "tiny"', "name = 7"), "tiny.toml:2: bad [suite] value 'name' = 7: "
         "expected a string, got an integer"),
        (("[recipe]", "[[recipe]]"), "tiny.toml:6: [recipe] must be one table, got a list"),
        (("[[models]]", "[models]"), "tiny.toml:10: [models] is one table: write [[models]]"),
        (('name = "mlp"', 'name = "mlp"\noptions = { width = 8.0 }'),
         "tiny.toml:12: bad [[models]] 1 ('mlp') option 'width' = 8.0: expected an integer, "
         "got a float"),
        (('name = "mlp"', 'name = "mlp"\n[models.options]\nwidth = true'),
         "tiny.toml:13: bad [[models]] 1 ('mlp') option 'width' = true: expected an integer, "
         "got a boolean"),
        (('name = "none"', 'name = "dp-sgd"\noptions = { epsilon = true }'),
         "tiny.toml:14: bad [[defenses]] 1 ('dp-sgd') option 'epsilon' = true: "
         "expected a number, got a boolean"),
        (('name = "loss"', 'name = "lira"\noptions = { variant = 1 }'),
         "tiny.toml:16: bad [[attacks]] 1 ('lira') option 'variant' = 1: "
         "expected one of online, offline, got an integer"),
        (('name = "loss"', 'name = "lira"\noptions = { global_variance = "on" }'),
         "option 'global_variance' = \"on\": expected true or false, got a string"),
    ],
)  # fmt: skip
def test_a_wrongly_typed_value_is_one_line_before_anything_trains(
    capsys, tmp_path, change, message
):
    assert change[0] in SMALL
    suite = write(tmp_path, SMALL.replace(*change, 1))
    ws = tmp_path / "ws"
    code, out, err = run_cli(capsys, "bench", str(suite), "-w", str(ws))
    assert code == 2, out
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {suite.parent}"), err
    assert message in err, err
    assert not ws.exists() or not any(ws.iterdir())


def test_a_suite_file_that_is_not_utf8_is_one_line_naming_file_and_line(capsys, tmp_path):
    suite = write(tmp_path, SMALL.replace('"tiny"', '"café"').encode("latin-1"))
    expected = f"{suite}:2: not UTF-8 text (byte 0xe9)"
    with pytest.raises(SuiteError, match=re.escape(expected)):
        load_suite(suite, check_data=False)
    with pytest.raises(SuiteError, match=re.escape(expected)):
        suite_header(suite)  # what the leaderboard reads
    code, _, err = run_cli(capsys, "bench", str(suite), "-w", str(tmp_path / "ws"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    # UTF-8 is read as UTF-8 whatever the locale's encoding.
    write(tmp_path, SMALL.replace('"tiny"', '"café"'))
    assert load_suite(suite, check_data=False).name == "café"


def test_an_int_widens_to_a_float_but_a_bool_is_no_number(tmp_path, registry):
    dp_sgd = {"name": "dp-sgd", "options": {"epsilon": 8}}
    suite = write(tmp_path, suite_text(recipe={"lr": 1}, defenses=dp_sgd))
    (cell,) = load_suite(suite, registry, check_data=False).cells
    assert cell.spec.recipe.lr == 1.0 and dict(cell.spec.defense.options) == {"epsilon": 8}
    assert registry.create("defense", "dp-sgd", cell.spec.defense.options).epsilon == 8.0
    suite.write_text(suite.read_text().replace("lr = 1", "lr = false"))
    with pytest.raises(SuiteError, match=r"'lr' = false: expected a number, got a boolean"):
        load_suite(suite, registry, check_data=False)


def test_an_unknown_home_in_data_root_is_one_line(tmp_path, registry):
    suite = write(tmp_path, suite_text({"data_root": "~privbench_no_such_user/data"}))
    with pytest.raises(SuiteError, match=r"tiny.toml:6: bad \[suite\] data_root '~privbench_no"):
        load_suite(suite, registry, check_data=False)


# -- every field, every wrong type: one SuiteError line, never another exception ------------------

SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.dates(),
    st.times(),
    st.datetimes(),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), SCALARS, max_size=2),
)


def is_int(value: Any) -> bool:
    return type(value) is int


def is_number(value: Any) -> bool:
    return type(value) in (int, float)


def is_bool(value: Any) -> bool:
    return type(value) is bool


def is_str(value: Any) -> bool:
    return type(value) is str


def or_none(accepts: Callable[[Any], bool]) -> Callable[[Any], bool]:
    # An optional takes "none" (TOML has no null): the way to say "the default" explicitly.
    return lambda v: accepts(v) or (is_str(v) and v.lower() in {"none", "null", ""})


def list_of(accepts: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: type(v) is list and all(map(accepts, v))


FIELDS: dict[tuple[str, str], Callable[[Any], bool]] = {
    ("suite", "name"): is_str,
    ("suite", "seeds"): list_of(is_int),
    ("suite", "rank_by"): is_str,
    ("suite", "preset"): is_str,
    ("suite", "shadows"): is_int,
    ("suite", "targets"): or_none(is_int),
    ("suite", "population"): or_none(is_int),
    ("suite", "memorization"): is_bool,
    ("suite", "paired"): is_bool,
    ("suite", "device"): is_str,
    ("suite", "slices"): list_of(is_str),
    ("suite", "data_root"): is_str,
    ("recipe", "epochs"): is_int,
    ("recipe", "batch_size"): is_int,
    ("recipe", "lr"): is_number,
    ("recipe", "momentum"): is_number,
    ("recipe", "weight_decay"): is_number,
    ("recipe", "optimizer"): is_str,
    ("recipe", "augment"): is_str,
    ("recipe", "loss"): is_str,
    ("recipe", "schedule"): is_str,
}
OPTIONS: dict[tuple[str, str, str], Callable[[Any], bool]] = {
    ("models", "mlp", "width"): is_int,
    ("models", "small-cnn", "batchnorm"): is_bool,
    ("defenses", "dp-sgd", "epsilon"): or_none(is_number),
    ("defenses", "dp-sgd", "poisson_sampling"): is_bool,
    ("defenses", "feature-noise", "layer"): lambda v: v in ("pre-logits", "pre-pooling"),
    ("attacks", "lira", "variant"): lambda v: v in ("online", "offline"),
    ("attacks", "lira", "global_variance"): or_none(is_bool),
    ("datasets", "digits", "test_fraction"): is_number,
}


def check(path: Path, registry: Registry, key: str, accepted: bool) -> None:
    """Load *path*: a SuiteError of one line naming the file is the only way to fail, and a
    type error (``'key' = value: expected ...``) comes for a value of the wrong type only."""
    try:
        load_suite(path, registry, check_data=False)
    except SuiteError as err:
        message = str(err)
        assert "\n" not in message and message.startswith(f"{path}:"), message
        type_error = f"'{key}' = " in message and "expected" in message
        assert type_error != accepted, message
    else:
        assert accepted


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=st.sampled_from(sorted(FIELDS)), value=VALUES)
def test_every_suite_field_takes_its_type_only(tmp_path, registry, field, value):
    table, key = field
    text = suite_text(**{table: {key: value}})
    assert type(tomllib.loads(text)[table][key]) is type(value)  # the test wrote what it meant
    check(write(tmp_path, text), registry, key, FIELDS[field](value))


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(option=st.sampled_from(sorted(OPTIONS)), value=VALUES)
def test_every_plugin_option_in_a_suite_takes_its_type_only(tmp_path, registry, option, value):
    table, name, key = option
    text = suite_text(**{table: {"name": name, "options": {key: value}}})
    check(write(tmp_path, text), registry, key, OPTIONS[option](value))


# -- the same values from Python; command-line text still converts --------------------------------


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"memorization": 1}, "--memorization: 1 (expected true or false, got an integer)"),
        ({"paired": "yes", "shadows": 2.0}, "--shadows: 2.0 (expected an integer, got a float)"),
        ({"paired": np.int64(0)}, "expected true or false, got an integer"),
        ({"targets": True}, "--targets: True (expected an integer, got a boolean"),
        ({"epochs": True}, "epochs=True: expected an integer, got a boolean"),
        ({"lr": False}, "lr=False: expected a number, got a boolean"),
        ({"slices": 5}, "--slices: 5 (expected a list, got an integer)"),
    ],
)
def test_the_python_api_refuses_the_same_values(registry, parameters, message):
    with pytest.raises(OptionError) as err:
        build_spec(registry, **parameters)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_python_values_of_the_right_type_and_command_line_text_still_convert(registry):
    spec, _ = build_spec(
        registry, shadows=np.int64(2), memorization=np.bool_(True), paired="yes", lr=1, epochs=3
    )
    assert (spec.shadows, spec.memorization, spec.paired) == (2, True, True)
    assert type(spec.shadows) is int and type(spec.recipe.lr) is float
    lira = registry.create("attack", "lira", {"variant": "offline", "global_variance": "no"})
    assert (lira.variant, lira.global_variance) == ("offline", False)
    # ... but a number given where a boolean is expected is a mistake, even from Python.
    with pytest.raises(OptionError, match="expected true or false, got an integer"):
        registry.create("attack", "lira", {"global_variance": 1})


@settings(max_examples=300, deadline=None)
@given(value=VALUES, number=st.integers(-(10**30), 10**30), flag=st.booleans())
def test_convert_takes_a_value_of_the_annotated_type_or_text(value, number, flag):
    for annotation, accepted in {int: is_int, float: is_number, bool: is_bool, str: is_str}.items():
        if is_str(value) and annotation is not str:
            # Text is parsed (command-line values), unless it comes from a typed source.
            with pytest.raises(ValueError, match="got a string"):
                convert(value, annotation, parse_strings=False)
            continue
        for parse_strings in (True, False):
            try:
                converted = convert(value, annotation, parse_strings=parse_strings)
            except ValueError as err:
                assert not accepted(value) and "expected" in str(err)
            else:
                assert accepted(value) and type(converted) is annotation
    assert convert(f" {number} ", int) == number
    assert convert(str(number), float) == float(number)
    assert convert(str(flag).lower(), bool) is flag
    assert convert(f"{number},{number}", tuple[int, ...]) == (number, number)


def test_a_value_with_a_newline_is_quoted_on_one_line(tmp_path):
    """Found by the property above: an unknown preset or rank_by holding a newline broke the
    one-line message."""
    for key in ("preset", "rank_by"):
        path = tmp_path / f"{key}.toml"
        path.write_text(f'[suite]\nname = "s"\n{key} = "a\\nb"\n')
        with pytest.raises(SuiteError) as caught:
            load_suite(path, check_data=False)
        assert "\n" not in str(caught.value) and "a\\nb" in str(caught.value)
