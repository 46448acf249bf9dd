"""``privbench bench`` (run a suite through its waves of jobs) and ``privbench leaderboard``
(its results ranked)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from privbench.api import workspace_path
from privbench.cli.common import WorkspaceOption, console, open_results, progress_bars
from privbench.errors import PrivbenchError
from privbench.plugins import Registry


def register(app: typer.Typer, registry: Registry) -> None:
    @app.command()
    def bench(
        suite_file: Path = typer.Argument(..., help="A suite TOML file (benchmarks/*.toml)."),
        workspace: Path | None = WorkspaceOption,
        executor: str = typer.Option(
            "local", "--executor", "-e", help="Where jobs run: local or ray (docs/scale.md)."
        ),
        max_workers: int | None = typer.Option(
            None,
            "--max-workers",
            "-j",
            help="Jobs at once [local: 1, in this process; ray: one per cluster CPU].",
        ),
        address: str | None = typer.Option(
            None, "--address", help="Ray cluster to join [default: RAY_ADDRESS, else start one]."
        ),
        data_root: str | None = typer.Option(
            None, "--data-root", help="Folder holding downloaded datasets [env PRIVBENCH_DATA]."
        ),
        retry_failed: bool = typer.Option(
            False, "--retry-failed", help="Run cells an earlier bench recorded as failed again."
        ),
        plan: bool = typer.Option(
            False, "--plan", help="Only say which jobs a run would start, and run none."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Run every cell of a suite (validated first): each missing model is trained once,
        then every cell's attacks run; finished cells are not run again."""
        from privbench.bench.executors import create_executor
        from privbench.bench.suite import load_suite
        from privbench.bench.waves import plan_suite, run_suite
        from privbench.engine.preflight import check_workspace
        from privbench.engine.store import Workspace

        suite = load_suite(suite_file, registry, data_root=data_root)
        ws = Workspace(workspace_path(workspace))
        if plan:
            print_plan(plan_suite(suite, ws, registry, retry_failed=retry_failed), suite.name)
            return
        check_workspace(ws.root)  # before an executor (a Ray cluster) starts for nothing
        runner = create_executor(executor, max_workers=max_workers, address=address)
        counts = {"done": 0, "cached": 0, "partial": 0, "failed": 0}
        progress = progress_bars(quiet)
        with progress:
            models = progress.add_task("models to train", total=None, visible=False)
            passes = progress.add_task("scoring passes", total=None, visible=False)
            cells = progress.add_task(f"suite {suite.name}: cells", total=len(suite.cells))

            def planned(plan: Any) -> None:
                count = sum(len(job.keys) for job in plan.training)
                progress.update(models, total=count, visible=bool(count))
                progress.update(passes, total=len(plan.scoring), visible=bool(plan.scoring))

            def trained(job: Any, error: BaseException | None) -> None:
                progress.advance(models, len(job.keys))
                if error is not None:
                    console.print(f"[red]model failed[/]: {escape(str(error))}")

            def scored(job: Any, error: BaseException | None) -> None:
                progress.advance(passes)  # a failed pass is left to its cell, which reports it

            try:
                outcomes = run_suite(
                    suite, ws, registry, executor=runner, retry_failed=retry_failed,
                    on_plan=planned, on_model=trained, on_score=scored,
                )  # fmt: skip
                for outcome in outcomes:
                    counts[outcome.status] += 1
                    progress.advance(cells)
                    if outcome.status in ("failed", "partial"):
                        what = "failed" if outcome.status == "failed" else "partly failed"
                        console.print(
                            f"[red]{what}[/]: {escape(outcome.cell.label)}: "
                            f"{escape(outcome.error or '')}",
                            soft_wrap=True,  # one line a log can be searched for
                        )
                    elif outcome.status == "done":
                        console.print(f"done: {escape(outcome.cell.label)} (run {outcome.run_id})")
            finally:
                runner.close()
        console.print(
            f"suite {suite.name}: {len(suite.cells)} cells, {counts['done']} run now, "
            f"{counts['cached']} already recorded, {counts['failed']} failed"
            + (
                f", {counts['partial']} partly failed (the rest of them recorded)"
                if counts["partial"]
                else ""
            )
            + f"; results in {ws.database}"
        )
        if counts["failed"] or counts["partial"]:
            raise typer.Exit(1)

    @app.command()
    def leaderboard(
        suite_file: Path | None = typer.Argument(
            None, help="A suite TOML file: only its cells [default: every run in the workspace]."
        ),
        workspace: Path | None = WorkspaceOption,
        fmt: str = typer.Option(
            "md", "--format", "-f", help="md, csv, json or html (a page with plots)."
        ),
        rank_by: str | None = typer.Option(
            None, "--rank-by", help="Metric to rank by [default: the suite's, else TPR@0.1%FPR]."
        ),
        output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file."),
    ) -> None:
        """Attack results ranked, with the defended model's test accuracy and the cost."""
        from privbench.bench.suite import suite_header
        from privbench.engine.preflight import check_output_file
        from privbench.results import leaderboard as board
        from privbench.results.files import atomic_write

        if output is not None:
            output = output.expanduser()
            check_output_file(output, "--output/-o")
        suite_name, by = None, "tpr_at_0_1_fpr"
        if suite_file is not None:
            suite_name, by = suite_header(suite_file)
        by = rank_by or by
        with open_results(workspace) as db:
            rows = board.collect(db, suite_name)
            failed = db.failed_cells(suite_name) if suite_name else []
        if not rows:
            what = f"suite '{suite_name}'" if suite_name else "this workspace"
            raise PrivbenchError(f"no attack results recorded for {what}; run 'privbench bench'")
        text = board.render(rows, fmt, by, suite=suite_name, failed=failed)
        if output is None:
            sys.stdout.write(text)
        else:
            try:
                atomic_write(output, lambda handle: handle.write(text.encode()))
            except OSError as err:
                raise PrivbenchError(f"cannot write {output}: {err.strerror or err}") from None
            count = f"{len(rows)} row" + ("" if len(rows) == 1 else "s")
            console.print(f"leaderboard ({count}, ranked by {by}): {output}")


def print_plan(plan: Any, name: str) -> None:
    """``privbench bench --plan``: the jobs of each wave, before any of them runs."""
    done = sum(outcome.status == "cached" for outcome in plan.recorded)
    failed = len(plan.recorded) - done
    console.print(
        f"suite {name}: {len(plan.recorded) + len(plan.pending) + len(plan.unplanned)} cells, "
        f"{done} recorded done, {failed} recorded failed (--retry-failed runs them again)"
    )
    missing = sum(len(job.keys) for job in plan.training)
    console.print(
        f"wave 1: {len(plan.training)} training jobs for {missing} models, ensembles where "
        f"they can ({plan.models - missing} of the {plan.models} models the pending cells use "
        "are stored already)"
    )
    console.print(f"wave 2: {len(plan.scoring)} scoring jobs (one pass per model)")
    console.print(f"wave 3: {len(plan.pending)} audit jobs (one per pending cell)")
    for cell, error in plan.unplanned:
        console.print(f"[red]cannot plan[/] {escape(cell.label)}: {escape(error)}")
