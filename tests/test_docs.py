"""The plugin author's page cannot drift from the code: every hook and every access level the
core defines is on docs/plugins.md."""

from __future__ import annotations

import inspect
from pathlib import Path

import pluggy

from privbench import Access
from privbench.plugins import Registry, hookspecs

PAGE = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()


def test_every_hook_of_the_plugin_manager_is_documented_with_its_signature():
    hooks = {
        name: caller
        for name, caller in vars(Registry().pm.hook).items()
        if isinstance(caller, pluggy.HookCaller)
    }
    assert len(hooks) >= 6  # one register_* hook per plugin kind, and register_commands
    for name in hooks:
        arguments = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({arguments})`" in PAGE, f"docs/plugins.md does not document {name}"


def test_every_access_level_an_attack_can_declare_is_documented():
    for access in Access:
        assert f"`{access.label}`" in PAGE, f"docs/plugins.md does not explain '{access.label}'"


def test_the_plugin_api_version_is_documented():
    assert "PRIVBENCH_PLUGIN_API" in PAGE and "__plugin_api__" in PAGE


def test_the_options_reference_is_the_one_generated_from_the_code():
    from privbench.plugins.reference import COMMAND, marked_section, options_reference_markdown

    expected = options_reference_markdown(Registry.from_environment())
    assert "#### `lira` (attack)" in expected and "| `gamma` | `float` | `1.0` |" in expected
    assert marked_section(PAGE).strip() == expected.strip(), (
        f"docs/plugins.md's options reference is stale: regenerate it with `{COMMAND}`"
    )
    assert COMMAND in PAGE


def test_the_public_surface_is_documented():
    import privbench.helpers

    for name in privbench.helpers.__all__:
        assert f"`{name}" in PAGE, f"docs/plugins.md does not describe privbench.helpers.{name}"
    for field in ("hflip_preserves_label", "num_classes", "subset(indices)", "input_shape"):
        assert field in PAGE, f"docs/plugins.md does not describe {field}"
