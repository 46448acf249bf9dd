"""Every option of every built-in plugin, and of the example plugin, says in one line what it
means: the first line of its attribute docstring, which ``privbench plugins --options`` and the
options reference of docs/plugins.md show."""

from __future__ import annotations

from pathlib import Path

import pytest

from privbench.plugins import KINDS, Component, PluginInfo, Registry, get_registry
from privbench.plugins.options import option_docs, option_fields, option_summary

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "privbench-example-plugin"


def _builtins() -> list[Component]:
    registry = get_registry()
    return [
        component
        for kind in KINDS
        for component in registry.components(kind)
        if component.plugin.distribution == "privbench"
    ]


def _undocumented(components: list[Component]) -> list[str]:
    """``kind name.option`` for each option whose first docstring line is not a whole meaning."""
    bad = []
    for component in components:
        docs, summary = option_docs(component.cls), option_summary(component.cls)
        assert list(docs) == list(summary) == list(option_fields(component.cls))
        for name, doc in docs.items():
            first_line = doc.splitlines()[0].strip() if doc else ""
            if not first_line or summary[name] != first_line:
                bad.append(f"{component.kind} {component.name}.{name}: {first_line!r}")
    return bad


def test_every_builtin_option_has_a_one_line_meaning():
    components = _builtins()
    assert {c.kind for c in components} == set(KINDS) and len(components) >= 25
    assert sum(len(option_fields(c.cls)) for c in components) >= 100
    bad = _undocumented(components)
    assert not bad, "give these options a docstring whose first line is a sentence: " + "; ".join(
        bad
    )


def test_the_example_plugins_options_have_a_one_line_meaning(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    registry = Registry()
    registry.load_module("privbench_example_plugin")
    components = [c for kind in KINDS for c in registry.components(kind)]
    assert {c.name for c in components} == {"entropy", "margin"}
    assert not _undocumented(components)


def test_a_missing_or_wrapped_meaning_is_caught():
    import attrs

    @attrs.frozen
    class Vague:
        name = "vague"
        undocumented: int = 1
        wrapped: int = 2
        """A meaning that only ends
        on the next line."""

    component = Component("attack", "vague", Vague, PluginInfo("test", None, None))
    assert len(_undocumented([component])) == 2
