"""The plugin system: hook specifications, the interfaces plugins implement, typed options, the
registry that loads entry points, and the contract checks plugins are held to.

Plugin authors import from :mod:`privbench` itself; this package is the machinery behind it.
"""

from privbench.plugins.registry import (
    KINDS,
    Component,
    Kind,
    PluginInfo,
    Registry,
    get_registry,
    set_registry,
)

__all__ = ["KINDS", "Component", "Kind", "PluginInfo", "Registry", "get_registry", "set_registry"]
