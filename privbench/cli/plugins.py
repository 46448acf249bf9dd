"""``privbench plugins`` (what is installed, its options, its contract checks) and
``privbench new-plugin`` (a package skeleton)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from privbench.cli.common import console
from privbench.errors import PrivbenchError, did_you_mean
from privbench.plugins import KINDS, Component, Registry
from privbench.plugins.hookspecs import PLUGIN_API
from privbench.plugins.options import describe_options
from privbench.version import __version__


def _chosen(registry: Registry, name: str) -> list[Component]:
    """The components of plugin *name*, or the components called *name*."""
    chosen = [
        component
        for kind in KINDS
        for component in registry.components(kind)
        if component.plugin.name == name or component.name == name
    ]
    if not chosen:
        known = sorted({*registry.plugins, *(n for k in KINDS for n in registry.names(k))})
        raise PrivbenchError(f"no plugin or component '{name}'{did_you_mean(name, known)}")
    return chosen


def check_plugin(registry: Registry, name: str) -> None:
    """``privbench plugins --check NAME``: the contract checks on every component of plugin
    NAME (or on the components called NAME); exit 1 if one fails."""
    from privbench.engine import contracts as checks

    info = registry.plugins.get(name)
    if info is not None and info.status != "loaded":
        raise PrivbenchError(f"plugin '{name}' did not load: {info.error or info.status}")
    failed = 0
    for component in _chosen(registry, name):
        try:
            note = checks.check_component(component, registry)
        except Exception as err:  # a broken promise or the plugin's own crash: both are findings
            failed += 1
            message = str(err).strip().splitlines()[0] if str(err).strip() else ""
            console.print(
                f"[red]FAILED[/] {component.kind} {component.name}: "
                f"{escape(type(err).__name__)}: {escape(message)}"
            )
        else:
            console.print(f"[green]ok[/] {component.kind} {component.name}: {note}")
    if failed:
        raise typer.Exit(1)


def options_table(component: Component) -> Table:
    """One component's options in full: type, default and meaning."""
    table = Table(
        title=f"{component.kind} {component.name} ({component.plugin.name}): "
        + getattr(component.cls, "description", ""),
        title_justify="left",
    )
    for column in ("option", "type", "default", "meaning"):
        table.add_column(column, overflow="fold")
    from privbench.plugins.options import option_summary

    meanings = option_summary(component.cls)
    for name, kind, default in describe_options(component.cls):
        table.add_row(name, kind, default, meanings.get(name, ""))
    return table


def plugins_document(registry: Registry) -> dict[str, Any]:
    """``privbench plugins --json``: every plugin, its status, and every component's options."""
    from privbench.plugins.options import option_summary

    return {
        "privbench": __version__,
        "plugin_api": PLUGIN_API,
        "plugins": [
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "status": info.status,
                "error": info.error,
                "provides": [{"kind": kind, "name": name} for kind, name in info.provides],
            }
            for info in sorted(registry.plugins.values(), key=lambda i: i.name)
        ],
        "components": [
            {
                "kind": kind,
                "name": component.name,
                "plugin": component.plugin.name,
                "description": getattr(component.cls, "description", ""),
                "options": [
                    {"name": name, "type": kind_of, "default": default, "meaning": meaning}
                    for (name, kind_of, default), meaning in zip(
                        describe_options(component.cls),
                        option_summary(component.cls).values(),
                        strict=True,
                    )
                ],
            }
            for kind in KINDS
            for component in registry.components(kind)
        ],
    }


def register(app: typer.Typer, registry: Registry) -> None:
    @app.command()
    def plugins(
        name: str | None = typer.Argument(
            None, help="Only this plugin or component, with every option it has, in full."
        ),
        options: bool = typer.Option(
            False, "--options", help="Every component's options: type, default and meaning."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print it all as JSON."),
        check: str | None = typer.Option(
            None, "--check", help="Run the contract checks on a plugin's or component's classes."
        ),
    ) -> None:
        """List plugins (including those that failed to load) and what they provide."""
        if check is not None:
            check_plugin(registry, check)
            return
        if as_json:
            sys.stdout.write(json.dumps(plugins_document(registry), indent=2) + "\n")
            return
        if options or name is not None:
            chosen = (
                _chosen(registry, name)
                if name is not None
                else [c for kind in KINDS for c in registry.components(kind)]
            )
            for component in chosen:
                console.print(options_table(component))
            return
        table = Table(title="plugins", title_justify="left")
        for column in ("plugin", "distribution", "version", "status", "provides / error"):
            table.add_column(column)
        for info in sorted(registry.plugins.values(), key=lambda i: i.name):
            detail = info.error or ", ".join(f"{kind} {name}" for kind, name in info.provides)
            style = {"failed": "red", "disabled": "yellow"}.get(info.status, "")
            table.add_row(
                escape(info.name),
                escape(info.distribution or "-"),
                escape(info.version or "-"),
                f"[{style}]{info.status}[/]" if style else info.status,
                escape(detail),
            )
        console.print(table)
        components = Table(title="components", title_justify="left")
        for column in ("kind", "name", "plugin", "description"):
            components.add_column(column)
        for kind in KINDS:
            for component in registry.components(kind):
                components.add_row(
                    kind,
                    component.name,
                    escape(component.plugin.name),
                    escape(getattr(component.cls, "description", "")),
                )
        console.print(components)
        console.print("the options of one plugin or component: privbench plugins --options NAME")

    @app.command("new-plugin")
    def new_plugin(
        name: str = typer.Argument(..., help="The plugin's name (lowercase, words joined by -)."),
        directory: Path = typer.Option(Path("."), "--directory", "-d", help="Where to write it."),
    ) -> None:
        """Write a plugin package skeleton (entry point, an attack, contract tests) to edit."""
        from privbench.plugins.scaffold import new_plugin as write

        root = write(name, directory)
        console.print(f"wrote {root}: pip install -e {root}, then privbench plugins --check {name}")
