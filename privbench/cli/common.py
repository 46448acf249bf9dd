"""What every command shares: the consoles, the ``--workspace`` option, the results database."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from privbench.api import workspace_path
from privbench.errors import PrivbenchError
from privbench.results.db import ResultsDB
from privbench.results.tables import WIDTH

# Piped or captured output gets the text width rather than rich's 80: the table stays whole.
console = Console(width=None if sys.stdout.isatty() else WIDTH)
err_console = Console(stderr=True)

WorkspaceOption = typer.Option(
    None,
    "--workspace",
    "-w",
    help="Workspace folder (models, signals, runs, database) [env PRIVBENCH_WORKSPACE; "
    "default ./privbench-workspace].",
    show_default=False,
)


def open_results(workspace: Path | None) -> ResultsDB:
    """The workspace's results database, checked first: a damaged file gets one line saying so,
    not rows that silently miss runs."""
    from privbench.engine.preflight import check_database  # on use: it loads torch

    path = workspace_path(workspace) / "privbench.db"
    if path.exists() and not path.is_file():
        raise PrivbenchError(f"the results database {path} is not a file: move it aside")
    if not path.is_file():
        raise PrivbenchError(f"no results database at {path}; run 'privbench run' first")
    check_database(path, writable=False)
    return ResultsDB(path)


def progress_bars(quiet: bool) -> Progress:
    """The transient progress display of ``run`` and ``bench`` (on stderr)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=quiet,
    )
