"""The plugin manager: discovery, isolation of broken plugins, conflicts, names, env switches."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import textwrap
import types
from typing import ClassVar

import attrs
import numpy as np
import pytest
from conftest import install_distribution

from privbench import (
    Access,
    PluginConflictError,
    PluginLoadError,
    UnknownPluginError,
    hookimpl,
)
from privbench.plugins import Registry


def attack_class(attack_name: str) -> type:
    @attrs.frozen
    class ConstantAttack:
        name: ClassVar[str] = attack_name
        description: ClassVar[str] = "scores every sample the same"
        access: ClassVar[Access] = Access.LABELS
        min_shadows: ClassVar[int] = 0
        value: float = 0.0

        def score(self, context):
            return np.full(len(context.population), self.value)

    return ConstantAttack


def plugin_module(module_name: str, *attack_names: str) -> types.ModuleType:
    module = types.ModuleType(module_name)

    @hookimpl
    def register_attacks(register):
        for attack_name in attack_names:
            register(attack_class(attack_name))

    module.register_attacks = register_attacks
    return module


def test_builtin_plugins_are_discovered_through_entry_points():
    registry = Registry.from_environment()
    builtin = {
        info.name: info for info in registry.plugins.values() if info.distribution == "privbench"
    }
    assert {"digits", "loss-attacks", "no-defense", "small-models"} <= set(builtin)
    assert all(info.status == "loaded" for info in builtin.values()), registry.failures()
    assert {"loss", "confidence"} <= set(registry.names("attack"))
    assert "none" in registry.names("defense")
    assert registry.get("attack", "loss").plugin.name == "loss-attacks"


def test_a_plugin_registered_in_a_test_is_usable():
    registry = Registry()
    info = registry.load_module(plugin_module("my_plugin", "constant"))
    assert info.status == "loaded"
    assert info.provides == [("attack", "constant")]
    attack = registry.create("attack", "constant", {"value": "2.5"})
    assert attack.value == 2.5


def test_broken_entry_point_is_reported_and_skipped():
    registry = Registry()
    broken = importlib.metadata.EntryPoint(
        name="broken", value="privbench_no_such_module_xyz", group="privbench"
    )
    info = registry.load_entry_point(broken)
    assert info.status == "failed"
    assert "ModuleNotFoundError" in info.error and "privbench_no_such_module_xyz" in info.error
    registry.load_module(plugin_module("fine", "constant"))
    assert registry.names("attack") == ["constant"]


def test_strict_makes_a_broken_plugin_fatal():
    registry = Registry(strict=True)
    broken = importlib.metadata.EntryPoint(name="broken", value="privbench_nope", group="privbench")
    with pytest.raises(PluginLoadError, match="'broken' failed to load"):
        registry.load_entry_point(broken)


def test_a_hook_that_raises_registers_nothing():
    module = types.ModuleType("half_broken")

    @hookimpl
    def register_attacks(register):
        register(attack_class("first"))
        raise RuntimeError("boom")

    module.register_attacks = register_attacks
    registry = Registry()
    info = registry.load_module(module)
    assert info.status == "failed" and "boom" in info.error
    assert registry.names("attack") == []


def test_a_plugin_class_that_is_not_attrs_is_rejected():
    module = types.ModuleType("not_attrs")

    class Plain:
        name = "plain"

        def score(self, context):
            return None

    @hookimpl
    def register_attacks(register):
        register(Plain)

    module.register_attacks = register_attacks
    registry = Registry()
    info = registry.load_module(module)
    assert info.status == "failed" and "attrs class" in info.error


def test_duplicate_names_are_an_error_naming_both_plugins():
    registry = Registry()
    registry.load_module(plugin_module("plugin_one", "dup", "only-one"))
    registry.load_module(plugin_module("plugin_two", "dup"))
    with pytest.raises(PluginConflictError) as err:
        registry.get("attack", "dup")
    assert "'plugin_one'" in str(err.value) and "'plugin_two'" in str(err.value)
    assert "dup" not in registry.names("attack")
    assert registry.create("attack", "only-one").value == 0.0


def test_duplicate_names_are_fatal_when_strict():
    registry = Registry(strict=True)
    registry.load_module(plugin_module("plugin_one", "dup"))
    with pytest.raises(PluginConflictError, match="plugin_one"):
        registry.load_module(plugin_module("plugin_two", "dup"))


def test_unknown_names_suggest_the_closest():
    registry = Registry.from_environment()
    with pytest.raises(UnknownPluginError, match="did you mean 'loss'") as err:
        registry.create("attack", "los")
    assert "\n" not in str(err.value)
    with pytest.raises(UnknownPluginError, match="unknown defense 'nothing'"):
        registry.create("defense", "nothing")


def test_disable_plugins_by_name_and_all(monkeypatch):
    monkeypatch.delenv("PRIVBENCH_PLUGINS", raising=False)
    monkeypatch.setenv("PRIVBENCH_DISABLE_PLUGINS", "loss-attacks")
    registry = Registry.from_environment()
    assert registry.plugins["loss-attacks"].status == "disabled"
    assert "loss" not in registry.names("attack")
    assert "digits" in registry.names("dataset")
    monkeypatch.setenv("PRIVBENCH_DISABLE_PLUGINS", "all")
    assert Registry.from_environment().plugins == {}


def _write_distribution(root, module_name: str, attack_name: str) -> None:
    source = f"""
        from typing import ClassVar
        import attrs
        import numpy as np
        from privbench import Access, hookimpl

        @attrs.frozen
        class ThirdParty:
            name: ClassVar[str] = "{attack_name}"
            description: ClassVar[str] = "from a third-party distribution"
            access: ClassVar[Access] = Access.LOGITS
            min_shadows: ClassVar[int] = 0

            def score(self, context):
                return np.zeros(len(context.population))

        @hookimpl
        def register_attacks(register):
            register(ThirdParty)
        """
    install_distribution(root, module_name, source, attack_name, version="1.2.3")


def test_a_third_party_distribution_is_found_like_the_builtins(tmp_path, monkeypatch):
    _write_distribution(tmp_path, "privbench_thirdparty_demo", "third-party")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    registry = Registry.from_environment()
    info = registry.plugins["third-party"]
    assert (info.status, info.distribution, info.version) == (
        "loaded",
        "privbench_thirdparty_demo",
        "1.2.3",
    )
    assert registry.get("attack", "third-party").plugin is info
    monkeypatch.setenv("PRIVBENCH_DISABLE_PLUGINS", "privbench_thirdparty_demo")
    assert Registry.from_environment().plugins["third-party"].status == "disabled"


def test_privbench_plugins_env_loads_extra_modules(tmp_path, monkeypatch):
    (tmp_path / "my_local_plugin.py").write_text(
        textwrap.dedent(
            """
            from typing import ClassVar
            import attrs
            from privbench import Defense, hookimpl

            @attrs.frozen
            class Local(Defense):
                name: ClassVar[str] = "local"
                description: ClassVar[str] = "a defense under development"

            @hookimpl
            def register_defenses(register):
                register(Local)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PRIVBENCH_PLUGINS", "my_local_plugin, privbench_missing_mod")
    registry = Registry.from_environment()
    assert registry.plugins["my_local_plugin"].status == "loaded"
    assert "local" in registry.names("defense")
    assert registry.plugins["privbench_missing_mod"].status == "failed"
    sys.modules.pop("my_local_plugin", None)


def test_positional_argument_sets_the_declared_option():
    registry = Registry.from_environment()
    with pytest.raises(UnknownPluginError, match="takes no '/argument'"):
        registry.create("attack", "loss/extra")


def test_a_plugin_for_another_plugin_api_is_refused_with_the_reason():
    import privbench

    assert privbench.__plugin_api__ == 1
    current = plugin_module("current", "fits")
    current.PRIVBENCH_PLUGIN_API = privbench.__plugin_api__
    future = plugin_module("future", "from-the-future")
    future.PRIVBENCH_PLUGIN_API = privbench.__plugin_api__ + 1
    registry = Registry()
    assert registry.load_module(current).status == "loaded"
    info = registry.load_module(future)
    assert info.status == "failed" and registry.names("attack") == ["fits"]
    assert "built for privbench plugin API 2, but this privbench speaks API 1" in info.error
    with pytest.raises(PluginLoadError, match="plugin API 2"):
        Registry(strict=True).load_module(future)
