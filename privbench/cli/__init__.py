"""The ``privbench`` command line (typer + rich): a client of the library. ``run`` and ``show``
call :func:`privbench.audit` and :func:`privbench.load_run`, ``bench`` the suite runner, and
plugins add sub-commands through ``register_commands(app)``.

Errors caused by the input (:class:`~privbench.errors.PrivbenchError`) print one line and exit
with status 2; nothing is half-written when they happen.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import typer
from rich.markup import escape

from privbench.cli import bench, outputs, plugins, report, run, store
from privbench.cli.common import console, err_console
from privbench.errors import PrivbenchError
from privbench.plugins import Registry, get_registry
from privbench.version import __version__


def _show_version(value: bool) -> None:
    if value:
        console.print(f"privbench {__version__}")
        raise typer.Exit()


def build_app(registry: Registry) -> typer.Typer:
    app = typer.Typer(
        name="privbench",
        help="How much does a trained image classifier leak about its training data?",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # help text is plain: "[default: ...]" must not read as markup
        add_completion=False,
    )

    @app.callback()
    def root(
        strict: bool = typer.Option(
            False, "--strict", help="Fail when any plugin fails to load [env PRIVBENCH_STRICT=1]."
        ),
        version: bool = typer.Option(
            False,
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ) -> None:
        """How much does a trained image classifier leak about its training data?"""

    run.register(app, registry)
    outputs.register(app, registry)
    report.register(app, registry)
    bench.register(app, registry)
    plugins.register(app, registry)
    store.register(app, registry)
    registry.call_register_commands(app)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # privbench never downloads weights: any model-hub access must fail at once, not retry.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        registry = get_registry(strict=True if "--strict" in args else None)
        app = build_app(registry)
        app(args=args, prog_name="privbench")
    except PrivbenchError as err:
        err_console.print(
            f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True
        )
        sys.exit(2)
