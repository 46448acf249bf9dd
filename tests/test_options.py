"""Typed plugin options from strings (CLI) and native values (suite files)."""

from __future__ import annotations

import enum
from typing import ClassVar, Literal

import attrs
import pytest

from privbench import OptionError
from privbench.plugins.options import (
    config_dict,
    configure,
    describe_options,
    option_docs,
    option_fields,
    option_summary,
    parse_assignments,
)


class Mode(enum.Enum):
    FAST_PATH = 1
    EXACT = 2


@attrs.frozen
class Example:
    name: ClassVar[str] = "example"
    rounds: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    step: float = 1e-3
    squared: bool = True
    method: Literal["zero-order", "exact"] = "zero-order"
    mode: Mode = Mode.EXACT
    checkpoint: str | None = None
    sizes: tuple[int, ...] = (1, 2)


def test_strings_are_converted_by_annotation():
    config = configure(
        Example,
        {
            "rounds": "3",
            "step": "1e-4",
            "squared": "no",
            "method": "exact",
            "mode": "fast-path",
            "checkpoint": "none",
            "sizes": "4,5",
        },
        what="scorer 'example'",
    )
    assert config == Example(3, 1e-4, False, "exact", Mode.FAST_PATH, None, (4, 5))


def test_native_values_from_suite_files_pass_through():
    config = configure(Example, {"rounds": 4, "squared": True, "sizes": [7]}, what="x")
    assert (config.rounds, config.squared, config.sizes) == (4, True, (7,))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rounds": "many"}, "expected an integer"),
        ({"rounds": "0"}, "'rounds' must be >= 1"),
        ({"squared": "maybe"}, "expected true or false"),
        ({"method": "second-order"}, "expected one of zero-order, exact"),
        ({"round": "3"}, "did you mean 'rounds'"),
        ({"rounds": True}, "expected an integer"),
    ],
)
def test_bad_options_give_one_line_errors(options, message):
    with pytest.raises(OptionError, match=message) as err:
        configure(Example, options, what="scorer 'example'")
    assert "\n" not in str(err.value)
    assert "scorer 'example'" in str(err.value)


def test_parse_assignments():
    assert parse_assignments(["a=1", "b = x=y"], flag="--opt") == {"a": "1", "b": "x=y"}
    with pytest.raises(OptionError, match="--opt expects key=value"):
        parse_assignments(["oops"], flag="--opt")


def test_config_dict_and_description_are_json_ready():
    assert config_dict(Example()) == {
        "rounds": 10,
        "step": 1e-3,
        "squared": True,
        "method": "zero-order",
        "mode": "exact",
        "checkpoint": None,
        "sizes": [1, 2],
    }
    rows = {name: (kind, default) for name, kind, default in describe_options(Example)}
    assert rows["method"] == ("zero-order|exact", "'zero-order'")
    assert rows["rounds"] == ("int", "10")
    assert rows["checkpoint"] == ("str|none", "None")


# -- option documentation -------------------------------------------------------------------------


@attrs.frozen
class _Base:
    name: ClassVar[str] = "base"
    """A class variable: never an option."""

    shared: int = 1
    """Inherited from the base class."""
    overridden: int = 2
    """The base class's meaning."""


@attrs.frozen
class Documented(_Base):
    overridden: int = 3
    """The subclass's meaning wins.

    A second paragraph that the summary leaves out."""
    wrapped: float = 0.5
    """A first sentence that wraps over
    two lines, indented as in a class body. A second sentence."""
    plain: bool = False
    _private: int = 0
    """Not an option."""
    other: str = "x"
    """Uses e.g. an abbreviation, then ends."""


def test_option_docs_reads_attribute_docstrings_in_option_order():
    docs = option_docs(Documented)
    assert list(docs) == list(option_fields(Documented))
    assert docs == {
        "shared": "Inherited from the base class.",
        "overridden": (
            "The subclass's meaning wins.\n\nA second paragraph that the summary leaves out."
        ),
        "wrapped": (
            "A first sentence that wraps over\ntwo lines, indented as in a class body. A second "
            "sentence."
        ),
        "plain": "",
        "other": "Uses e.g. an abbreviation, then ends.",
    }


def test_option_summary_is_one_line_up_to_the_first_line_that_ends_a_sentence():
    summary = option_summary(Documented)
    assert summary == {
        "shared": "Inherited from the base class.",
        "overridden": "The subclass's meaning wins.",
        "wrapped": (
            "A first sentence that wraps over two lines, indented as in a class body. A second "
            "sentence."
        ),
        "plain": "",
        "other": "Uses e.g. an abbreviation, then ends.",
    }
    assert all("\n" not in text for text in summary.values())


def test_option_docs_never_raise_without_source():
    built = attrs.make_class("Built", {"size": attrs.field(default=1)}, frozen=True)
    assert option_docs(built) == {"size": ""} and option_summary(built) == {"size": ""}
    assert option_docs(int) == {}  # not a plugin class at all

    @attrs.frozen
    class Unresolvable:
        ghost: NoSuchType = None  # type: ignore[name-defined]  # noqa: F821
        """An annotation that names nothing."""

    assert option_docs(Unresolvable) == {"ghost": "An annotation that names nothing."}


def test_option_docs_are_cached_and_callers_cannot_change_the_cache():
    first = option_docs(Documented)
    first["shared"] = "changed"
    assert option_docs(Documented)["shared"] == "Inherited from the base class."
