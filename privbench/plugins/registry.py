"""Plugin loading and the typed registry of everything plugins provide.

Plugins are found through entry points of group ``privbench`` and loaded one at a time: a
plugin that fails to import or to register is recorded (name, distribution, error) and skipped,
so one broken plugin never takes the command line down with it. That holds for whatever it
raises, ``sys.exit()`` included; only a KeyboardInterrupt (the user's Ctrl-C) goes through.
Environment variables behave as pytest's do:

- ``PRIVBENCH_DISABLE_PLUGINS``: comma-separated entry-point or distribution names not to load;
  ``all`` (or ``*`` / ``1``) loads no entry points at all, like ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``.
- ``PRIVBENCH_PLUGINS``: comma-separated module names to load as plugins in addition, like
  ``PYTEST_PLUGINS`` (handy for a plugin under development).
- ``PRIVBENCH_STRICT=1`` or ``privbench --strict``: any load failure or name conflict is fatal.

Two plugins that register the same name for one kind both lose it: asking for that name is an
error that names both, rather than a silent winner.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs
import pluggy

from privbench.errors import (
    PluginConflictError,
    PluginLoadError,
    UnknownPluginError,
    did_you_mean,
)
from privbench.plugins import hookspecs
from privbench.plugins.hookspecs import PLUGIN_API
from privbench.plugins.options import configure

Kind = Literal["attack", "defense", "scorer", "model", "dataset"]
KINDS: tuple[Kind, ...] = ("attack", "defense", "scorer", "model", "dataset")
_HOOKS: dict[Kind, str] = {kind: f"register_{kind}s" for kind in KINDS}
_REQUIRED_METHODS: dict[Kind, tuple[str, ...]] = {
    # Alternatives are joined by "|": an attack infers membership or reconstructs images.
    "attack": ("score|reconstruct",),
    "defense": ("prepare_model", "fit", "release"),
    "scorer": ("score",),
    "model": ("create",),
    "dataset": ("load",),
}


@attrs.define
class PluginInfo:
    """One plugin (an entry point or a module) and what became of it."""

    name: str
    distribution: str | None
    version: str | None
    status: Literal["loaded", "failed", "disabled"] = "loaded"
    error: str | None = None
    provides: list[tuple[Kind, str]] = attrs.Factory(list)


@attrs.frozen
class Component:
    """A registered plugin class of one kind, and the plugin that registered it."""

    kind: Kind
    name: str
    cls: type
    plugin: PluginInfo
    positional_option: str | None = None
    """An option settable in the name itself: ``timm/resnet18`` sets ``arch=resnet18``."""

    def create(
        self, options: Mapping[str, Any] | None = None, *, argument: str | None = None
    ) -> Any:
        options = dict(options or {})
        if argument is not None:
            if self.positional_option is None:
                raise UnknownPluginError(f"{self.kind} '{self.name}' takes no '/argument'")
            options.setdefault(self.positional_option, argument)
        return configure(self.cls, options, what=f"{self.kind} '{self.name}'")


def _env_list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class Registry:
    """Loads plugins and resolves their names; one per process via :func:`get_registry`."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.pm = pluggy.PluginManager("privbench")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._components: dict[Kind, dict[str, Component]] = {kind: {} for kind in KINDS}
        self._conflicts: dict[tuple[Kind, str], list[PluginInfo]] = {}

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def from_environment(cls, *, strict: bool | None = None) -> Registry:
        """Entry points of group ``privbench`` plus ``PRIVBENCH_PLUGINS``, minus the disabled."""
        registry = cls(strict=_truthy("PRIVBENCH_STRICT") if strict is None else strict)
        disabled = set(_env_list("PRIVBENCH_DISABLE_PLUGINS"))
        if not disabled & {"all", "*", "1", "true"}:
            for entry_point in importlib.metadata.entry_points(group="privbench"):
                registry.load_entry_point(entry_point, disabled=disabled)
        for module_name in _env_list("PRIVBENCH_PLUGINS"):
            registry.load_module(module_name)
        return registry

    def load_entry_point(
        self, entry_point: importlib.metadata.EntryPoint, *, disabled: Iterable[str] = ()
    ) -> PluginInfo:
        dist = getattr(entry_point, "dist", None)
        info = PluginInfo(
            name=entry_point.name,
            distribution=dist.name if dist else None,
            version=dist.version if dist else None,
        )
        if info.name in self.plugins:
            return self.plugins[info.name]
        disabled = set(disabled)
        if info.name in disabled or (info.distribution and info.distribution in disabled):
            info.status = "disabled"
            self.plugins[info.name] = info
            return info
        self._register(info, entry_point.load)
        return info

    def load_module(self, module: str | types.ModuleType, *, name: str | None = None) -> PluginInfo:
        """Load a plugin from a module (or module name) rather than an entry point."""
        module_name = module if isinstance(module, str) else module.__name__
        info = PluginInfo(name=name or module_name, distribution=None, version=None)
        if info.name in self.plugins:
            return self.plugins[info.name]
        if isinstance(module, str):
            self._register(info, lambda: importlib.import_module(module_name))
        else:
            self._register(info, lambda: module)
        return info

    def _register(self, info: PluginInfo, load: Callable[[], Any]) -> None:
        self.plugins[info.name] = info
        try:
            plugin = load()
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # SystemExit too: a plugin must not end the command
            self._fail(info, _failure(err, "at import"))
            return
        try:
            wanted = getattr(plugin, "PRIVBENCH_PLUGIN_API", PLUGIN_API)
            if wanted != PLUGIN_API:
                # Before its hooks run: a plugin for another API would fail in obscure ways.
                self._fail(
                    info,
                    f"built for privbench plugin API {wanted}, but this privbench speaks API "
                    f"{PLUGIN_API}: install a version of it made for API {PLUGIN_API}, or the "
                    f"privbench it was made for",
                )
                return
            self.pm.register(plugin, name=info.name)
        except KeyboardInterrupt:
            raise
        except BaseException as err:
            self._fail(info, _failure(err, "at registration"))
            return
        self._collect(info, plugin)

    def _collect(self, info: PluginInfo, plugin: Any) -> None:
        staged: list[Component] = []
        for kind, hook_name in _HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue

                def register(
                    cls: type, *, positional_option: str | None = None, _kind: Kind = kind
                ):
                    staged.append(self._component(_kind, cls, info, positional_option))

                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except KeyboardInterrupt:
                    raise
                except BaseException as err:
                    self.pm.unregister(plugin)
                    self._fail(info, f"{hook_name} {_failure(err, verb='raised')}")
                    return
        for component in staged:
            self._add(component)

    def _component(
        self, kind: Kind, cls: type, info: PluginInfo, positional_option: str | None
    ) -> Component:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls!r} has no 'name' class attribute")
        if not attrs.has(cls):
            raise TypeError(f"{kind} '{name}' must be an attrs class (its fields are its options)")
        missing = [
            required.replace("|", " or ")
            for required in _REQUIRED_METHODS[kind]
            if not any(callable(getattr(cls, m, None)) for m in required.split("|"))
        ]
        if missing:
            raise TypeError(f"{kind} '{name}' lacks {', '.join(missing)}")
        return Component(kind, name, cls, info, positional_option)

    def _add(self, component: Component) -> None:
        key = (component.kind, component.name)
        table = self._components[component.kind]
        if key in self._conflicts:
            self._conflicts[key].append(component.plugin)
        elif component.name in table:
            self._conflicts[key] = [table.pop(component.name).plugin, component.plugin]
        else:
            table[component.name] = component
        component.plugin.provides.append(key)
        if key in self._conflicts and self.strict:
            raise self._conflict_error(key)

    def add_class(self, kind: Kind, cls: type) -> Component:
        """Register plugin class *cls* from this process (one defined in a notebook or a
        script, which no entry point provides), or return the component that already is it.
        It is checked like any plugin class; its name must be free."""
        table = self._components[kind]
        name = getattr(cls, "name", None)
        known = table.get(name) if isinstance(name, str) else None
        if known is not None:
            if known.cls is cls:
                return known
            raise PluginConflictError(
                f"{kind} '{name}' is already provided by plugin '{known.plugin.name}'; give "
                f"{cls.__qualname__} another name"
            )
        info = self.plugins.setdefault(
            f"python:{cls.__module__}", PluginInfo(f"python:{cls.__module__}", None, None)
        )
        try:
            component = self._component(kind, cls, info, None)
        except TypeError as err:
            raise PluginLoadError(f"{cls.__qualname__} is not a plugin class: {err}") from None
        self._add(component)
        return component

    def _fail(self, info: PluginInfo, error: str) -> None:
        info.status = "failed"
        info.error = error
        if self.strict:
            where = f" (from {info.distribution} {info.version})" if info.distribution else ""
            raise PluginLoadError(f"plugin '{info.name}'{where} failed to load: {error}")

    def _conflict_error(self, key: tuple[Kind, str]) -> PluginConflictError:
        owners = " and ".join(
            f"'{p.name}'" + (f" ({p.distribution} {p.version})" if p.distribution else "")
            for p in self._conflicts[key]
        )
        return PluginConflictError(
            f"{key[0]} '{key[1]}' is registered by both {owners}; "
            f"disable one with PRIVBENCH_DISABLE_PLUGINS=<plugin name>"
        )

    # -- lookup --------------------------------------------------------------------------------

    def names(self, kind: Kind) -> list[str]:
        return sorted(self._components[kind])

    def components(self, kind: Kind) -> list[Component]:
        return [self._components[kind][name] for name in self.names(kind)]

    def get(self, kind: Kind, name: str) -> Component:
        """The component called *name*; ``base/argument`` names resolve to ``base``."""
        if (kind, name) in self._conflicts:
            raise self._conflict_error((kind, name))
        table = self._components[kind]
        if name in table:
            return table[name]
        base = name.split("/", 1)[0]
        if "/" in name and base in table:
            return table[base]
        available = ", ".join(self.names(kind)) or "none loaded"
        raise UnknownPluginError(
            f"unknown {kind} '{name}'{did_you_mean(name, table)} (available: {available}; "
            f"see 'privbench plugins')"
        )

    def create(self, kind: Kind, name: str, options: Mapping[str, Any] | None = None) -> Any:
        """A configured instance of the *kind* plugin called *name* (``base/argument`` allowed)."""
        component = self.get(kind, name)
        argument = name.split("/", 1)[1] if name != component.name else None
        return component.create(options, argument=argument)

    def failures(self) -> list[PluginInfo]:
        return [info for info in self.plugins.values() if info.status == "failed"]

    def call_register_commands(self, app: Any) -> None:
        """Let every loaded plugin add CLI sub-commands; a failing plugin is recorded, not fatal."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            info = self.plugins.get(impl.plugin_name)
            try:
                impl.function(app=app)
            except KeyboardInterrupt:
                raise
            except BaseException as err:
                if info is not None:
                    self._fail(info, f"register_commands {_failure(err, verb='raised')}")


def _failure(err: BaseException, when: str = "", *, verb: str = "") -> str:
    """What a plugin did wrong, for its entry in ``privbench plugins``: ``called sys.exit(3)
    at import``, or ``[raised ]TypeError: ...`` (*verb* before, *when* after a sys.exit)."""
    if isinstance(err, SystemExit):
        # Its str() is just the code ("3", or "" for sys.exit()): say what the plugin did.
        code = "" if err.code is None else repr(err.code)
        return " ".join(filter(None, [f"called sys.exit({code})", when]))
    return " ".join(filter(None, [verb, f"{type(err).__name__}: {err}"]))


_registry: Registry | None = None


def get_registry(*, strict: bool | None = None) -> Registry:
    """The process-wide registry, loaded from the environment on first use."""
    global _registry
    if _registry is None or (strict and not _registry.strict):
        _registry = Registry.from_environment(strict=strict)
    return _registry


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests; ``None`` reloads on next use)."""
    global _registry
    _registry = registry
