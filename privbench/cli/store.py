"""``privbench store verify``: a client of :func:`privbench.engine.verify.verify_workspace`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from privbench.api import workspace_path
from privbench.cli.common import WorkspaceOption, console
from privbench.engine.store import Workspace
from privbench.plugins import Registry


def register(app: typer.Typer, registry: Registry) -> None:
    store = typer.Typer(
        help="Check the workspace's stored models, signals, runs and database.",
        no_args_is_help=True,
    )
    app.add_typer(store, name="store")

    @store.command()
    def verify(
        workspace: Path | None = WorkspaceOption,
        repair: bool = typer.Option(
            False,
            "--repair",
            help="Move what fails to quarantine/ and retrain the models it can (signals are "
            "recomputed when next read).",
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the problems and the total."),
    ) -> None:
        """Verify every stored entry against its digest; exit 1 if anything is still damaged."""
        from privbench.engine.verify import Finding, verify_workspace

        def show(finding: Finding) -> None:
            if not quiet or finding.status not in ("ok", "unverified"):
                style = {"ok": "green", "unverified": "yellow"}.get(finding.status, "red")
                console.print(
                    f"[{style}]{escape(finding.line)}[/]", highlight=False, soft_wrap=True
                )

        ws = Workspace(workspace_path(workspace))
        report = verify_workspace(ws, repair=repair, registry=registry, on_finding=show)
        counts = ", ".join(
            f"{report.count(status)} {status}"
            for status in ("ok", "unverified", "damaged", "quarantined", "rebuilt")
            if report.count(status) or status == "ok"
        )
        console.print(
            f"{ws.root}: {len(report.findings)} entries checked in {report.seconds:.2f} s: "
            f"{counts}" + ("" if report.ok or repair else "; run with --repair to fix them"),
            soft_wrap=True,
        )
        if not report.ok:
            raise typer.Exit(1)
