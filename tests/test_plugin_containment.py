"""A plugin that ends the process (``sys.exit()``) or raises any BaseException but a
KeyboardInterrupt, at import or while it registers, is contained like one that raises an
Exception: listed as failed with what it did, the other plugins loaded, fatal only if strict."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import types
from pathlib import Path

import pytest
from conftest import install_distribution, run_cli

from privbench import PluginLoadError, hookimpl
from privbench.plugins import Registry

pytestmark = pytest.mark.usefixtures("fresh_registry")

FINE = """
from typing import ClassVar
import attrs
import numpy as np
from privbench import Access, hookimpl

@attrs.frozen
class StillHere:
    name: ClassVar[str] = "still-here"
    description: ClassVar[str] = "loads beside a plugin that exits"
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 0

    def score(self, context):
        return np.zeros(len(context.population))

@hookimpl
def register_attacks(register):
    register(StillHere)
"""

EXITS_AT_IMPORT = """
import sys
sys.exit(3)
"""

EXITS_WHILE_REGISTERING = """
from privbench import hookimpl

@hookimpl
def register_attacks(register):
    raise SystemExit(4)
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path holding the fine plugin; a test installs a bad one beside it."""
    monkeypatch.delenv("PRIVBENCH_PLUGINS", raising=False)
    monkeypatch.delenv("PRIVBENCH_STRICT", raising=False)
    monkeypatch.delenv("PRIVBENCH_DISABLE_PLUGINS", raising=False)
    install_distribution(tmp_path, "privbench_containment_fine", FINE, "still-here")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("privbench_containment_fine", "privbench_containment_bad"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    importlib.invalidate_caches()
    return tmp_path


@pytest.mark.parametrize(
    ("source", "error"),
    [
        pytest.param(EXITS_AT_IMPORT, "called sys.exit(3) at import", id="exit-3-at-import"),
        pytest.param("import sys\nsys.exit()\n", "called sys.exit() at import", id="bare-exit"),
        pytest.param(
            "raise SystemExit('no GPU here')\n",
            "called sys.exit('no GPU here') at import",
            id="exit-message",
        ),
        pytest.param(
            EXITS_WHILE_REGISTERING, "register_attacks called sys.exit(4)", id="exit-in-hook"
        ),
        pytest.param("raise GeneratorExit('odd')\n", "GeneratorExit: odd", id="generator-exit"),
        pytest.param(
            "class Odd(BaseException):\n    pass\nraise Odd('very')\n",
            "Odd: very",
            id="base-exception-subclass",
        ),
    ],
)
def test_a_plugin_that_exits_or_raises_a_base_exception_is_listed_as_failed(site, source, error):
    install_distribution(site, "privbench_containment_bad", source, "bad")
    registry = Registry.from_environment()
    info = registry.plugins["bad"]
    assert (info.status, info.error) == ("failed", error)
    assert info.distribution == "privbench_containment_bad"
    assert registry.plugins["still-here"].status == "loaded"
    assert {"still-here", "loss"} <= set(registry.names("attack"))


def test_privbench_plugins_lists_a_plugin_that_exits_at_import(capsys, site):
    install_distribution(site, "privbench_containment_bad", EXITS_AT_IMPORT, "bad")
    code, out, err = run_cli(capsys, "plugins")
    assert code == 0, err
    assert "bad" in out and "called sys.exit(3) at import" in out
    assert "still-here" in out


def test_strict_makes_a_plugin_that_exits_a_one_line_error(capsys, site):
    install_distribution(site, "privbench_containment_bad", EXITS_WHILE_REGISTERING, "bad")
    code, _, err = run_cli(capsys, "--strict", "plugins")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "error: plugin 'bad' (from privbench_containment_bad 0.1) failed to load" in err
    assert "register_attacks called sys.exit(4)" in err


def test_register_commands_that_exits_is_contained_but_ctrl_c_is_not():
    exits = types.ModuleType("exits_in_register_commands")

    @hookimpl
    def register_commands(app):
        sys.exit(5)

    exits.register_commands = register_commands
    registry = Registry()
    assert registry.load_module(exits).status == "loaded"
    registry.call_register_commands(app=None)
    info = registry.plugins["exits_in_register_commands"]
    assert (info.status, info.error) == ("failed", "register_commands called sys.exit(5)")

    # The user's Ctrl-C is not the plugin's failure: it stops loading, as it stops anything.
    interrupted = types.ModuleType("interrupted")

    @hookimpl
    def register_attacks(register):
        raise KeyboardInterrupt

    interrupted.register_attacks = register_attacks
    with pytest.raises(KeyboardInterrupt):
        Registry().load_module(interrupted)


def test_a_plugin_api_check_that_exits_is_contained():
    # A module that exits when asked for its plugin API: it fails registering, not at import.
    class Exiting(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name == "PRIVBENCH_PLUGIN_API":
                raise SystemExit(6)
            raise AttributeError(name)  # what repr() and pytest look up stays a plain miss

    registry = Registry()
    info = registry.load_module(Exiting("exits_on_lookup"))
    assert (info.status, info.error) == ("failed", "called sys.exit(6) at registration")
    with pytest.raises(PluginLoadError, match=r"called sys.exit\(6\) at registration"):
        Registry(strict=True).load_module(Exiting("exits_on_lookup"))


def test_entry_point_that_exits_is_recorded_without_a_distribution():
    # An entry point not backed by a distribution (as tests/test_plugins.py builds them).
    module = types.ModuleType("privbench_containment_ep")
    module.__dict__["__getattr__"] = lambda name: sys.exit(7) if name == "plugin" else None
    sys.modules["privbench_containment_ep"] = module
    try:
        entry_point = importlib.metadata.EntryPoint(
            name="ep", value="privbench_containment_ep:plugin", group="privbench"
        )
        info = Registry().load_entry_point(entry_point)
    finally:
        del sys.modules["privbench_containment_ep"]
    assert (info.status, info.error) == ("failed", "called sys.exit(7) at import")
