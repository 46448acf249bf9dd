"""``privbench report``: one run as one self-contained HTML page, a client of
:func:`privbench.load_run` and :func:`privbench.results.report.write_report`."""

from __future__ import annotations

from pathlib import Path

import typer

from privbench.api import load_run, workspace_path
from privbench.cli.common import WorkspaceOption, console
from privbench.errors import PrivbenchError
from privbench.plugins import Registry


def register(app: typer.Typer, registry: Registry) -> None:
    @app.command()
    def report(
        run: str = typer.Argument(
            ..., help="Run id, a unique prefix of one, 'latest', a run folder or its results.json."
        ),
        output: Path | None = typer.Option(
            None,
            "--output",
            "-o",
            help="Where to write the page [default: report.html in the run's folder].",
            show_default=False,
        ),
        workspace: Path | None = WorkspaceOption,
    ) -> None:
        """Write one self-contained HTML page for one run (warnings, what was audited, utility,
        metrics per attack and slice, log-log ROC, score histograms, the most vulnerable
        samples, reconstructions): it makes no network request, so it can be mailed."""
        from privbench.results.report import write_report  # matplotlib only when asked

        result = load_run(run, workspace=workspace_path(workspace))
        if output is None:
            if result.path is None:
                raise PrivbenchError(
                    f"run {result.run_id}'s folder is gone (only its database row is left): "
                    "give --output/-o"
                )
            output = result.path / "report.html"
        written = write_report(result, output)
        console.print(
            f"report of run {result.run_id}: {written}", markup=False, highlight=False,
            soft_wrap=True,
        )  # fmt: skip
