"""``privbench run``, ``runs`` and ``show``: clients of :func:`privbench.audit` and
:func:`privbench.load_run`, and of the workspace database."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
import typer
from rich import box
from rich.table import Table

from privbench.api import audit as run_audit_api
from privbench.api import load_run, workspace_path
from privbench.cli.common import WorkspaceOption, console, open_results, progress_bars
from privbench.cli.progress import RichProgress, StoreRepairs
from privbench.engine.presets import PRESETS
from privbench.engine.progress import Callback, PrintProgress
from privbench.plugins import Registry
from privbench.plugins.interfaces import TrainingRecipe
from privbench.plugins.options import parse_assignments
from privbench.results.result import AuditResult
from privbench.results.tables import format_metric, report

_OPTION_FLAGS = {
    "attack_opt": "attack_options",
    "defense_opt": "defense_options",
    "model_opt": "model_options",
    "dataset_opt": "dataset_options",
    "scorer_opt": "scorer_options",
}


def _recipe_default(name: str) -> object:
    return attrs.fields_dict(TrainingRecipe)[name].default


def _installed(registry: Registry, kind: str) -> str:
    names = registry.names(kind)  # type: ignore[arg-type]
    return f" Installed: {', '.join(names)}." if names else ""


def print_result(result: AuditResult) -> None:
    for part in report(result):
        if isinstance(part, str):
            console.print(part, markup=False, highlight=False, soft_wrap=True)
        else:
            console.print(part)


def register(app: typer.Typer, registry: Registry) -> None:
    @app.command()
    def run(
        ctx: typer.Context,
        preset: str | None = typer.Option(
            None,
            "--preset",
            help="A paper's protocol: "
            + "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()),
        ),
        attack: list[str] = typer.Option(
            ["loss"],
            "--attack",
            "-a",
            help="Attack to run; repeat for several on the same models."
            + _installed(registry, "attack"),
        ),
        defense: str = typer.Option(
            "none",
            "--defense",
            "-d",
            help="Defense for all models." + _installed(registry, "defense"),
        ),
        model: str = typer.Option(
            "small-cnn",
            "--model",
            "-m",
            help="Model (timm/<arch> for any timm architecture)." + _installed(registry, "model"),
        ),
        dataset: str = typer.Option(
            "digits", "--dataset", help="Dataset." + _installed(registry, "dataset")
        ),
        attack_opt: list[str] = typer.Option(
            [], "--attack-opt", help="key=value (or attack.key=value with several attacks)."
        ),
        scorer: list[str] = typer.Option(
            [],
            "--scorer",
            "-s",
            help="Also report a scorer on the targets (members vs non-members); repeatable."
            + _installed(registry, "scorer"),
        ),
        scorer_opt: list[str] = typer.Option(
            [], "--scorer-opt", help="key=value (or scorer.key=value with several scorers)."
        ),
        defense_opt: list[str] = typer.Option([], "--defense-opt", help="key=value"),
        model_opt: list[str] = typer.Option([], "--model-opt", help="key=value"),
        dataset_opt: list[str] = typer.Option([], "--dataset-opt", help="key=value"),
        target: Path | None = typer.Option(
            None,
            "--target",
            help="Audit a model you trained: its weights (.safetensors) for --model; privbench "
            "then trains only reference models.",
        ),
        members: Path | None = typer.Option(
            None,
            "--members",
            help="With --target: the train-split samples it trained on (.npy, .csv or .txt of "
            "indices, or a 0/1 mask).",
        ),
        shadows: int = typer.Option(
            7, "--shadows", "-k", help="Shadow (reference) models beside the target."
        ),
        slices: list[str] = typer.Option(
            [],
            "--slice",
            help="Also report every attack per slice: class, correct (the target's prediction), "
            "or FILE.csv:COLUMN (rows keyed by sample); repeatable.",
        ),
        memorization: bool = typer.Option(
            False,
            "--memorization",
            help="Estimate every sample's memorization from the pool (memorization.csv).",
        ),
        paired: bool = typer.Option(
            False, "--paired", help="Bernoulli keep-masks in complementary pairs (Curvature Clues)."
        ),
        targets: int | None = typer.Option(
            None, "--targets", help="Models that take a turn as target [default: all]."
        ),
        population: int | None = typer.Option(
            None, "--population", help="Population size from the train split [default: all]."
        ),
        audit: str = typer.Option(
            "membership",
            "--audit",
            help="membership (LiRA's game over the pool) or one-run (Steinke et al.: one "
            "model trained with canaries, each in with probability 1/2; an ε lower bound).",
        ),
        canaries: int | None = typer.Option(
            None,
            "--canaries",
            help="With --audit one-run: canaries [default: 1000, at most half the population].",
        ),
        canary_kind: str = typer.Option(
            "mislabelled", "--canary-kind", help="With --audit one-run: mislabelled or natural."
        ),
        epochs: int = typer.Option(_recipe_default("epochs"), "--epochs"),
        batch_size: int = typer.Option(_recipe_default("batch_size"), "--batch-size"),
        optimizer: str = typer.Option(
            _recipe_default("optimizer"), "--optimizer", help="sgd or adamw"
        ),
        lr: float = typer.Option(_recipe_default("lr"), "--lr"),
        momentum: float = typer.Option(_recipe_default("momentum"), "--momentum"),
        weight_decay: float = typer.Option(_recipe_default("weight_decay"), "--weight-decay"),
        augment: str = typer.Option(
            _recipe_default("augment"), "--augment", help="none, flip, crop or flip+crop"
        ),
        loss: str = typer.Option(
            _recipe_default("loss"), "--loss", help="training objective: cross-entropy or mse"
        ),
        schedule: str = typer.Option(
            _recipe_default("schedule"), "--schedule", help="lr schedule: cosine or constant"
        ),
        seed: int = typer.Option(0, "--seed"),
        workspace: Path | None = WorkspaceOption,
        data_root: str | None = typer.Option(
            None, "--data-root", help="Folder holding downloaded datasets [env PRIVBENCH_DATA]."
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    ) -> None:
        """Train (or reuse) target and shadow models, run the attacks, report the metrics.
        Progress: bars on a terminal, plain lines when output goes to a file."""
        given = {
            name: value
            for name, value in ctx.params.items()
            # typer vendors click: compare the enum by name, not by identity
            if getattr(ctx.get_parameter_source(name), "name", "") != "DEFAULT"
        }
        parameters = {
            {"attack": "attacks", "scorer": "scorers"}.get(name, name): value
            for name, value in given.items()
            if name not in ("preset", "workspace", "quiet", *_OPTION_FLAGS)
        }
        for flag, parameter in _OPTION_FLAGS.items():
            if ctx.params[flag]:
                parameters[parameter] = parse_assignments(
                    ctx.params[flag], flag="--" + flag.replace("_", "-")
                )
        progress = progress_bars(quiet or not sys.stdout.isatty())
        callback: Callback
        if quiet:
            callback = StoreRepairs()
        elif sys.stdout.isatty():
            callback = RichProgress(progress)
        else:
            callback = PrintProgress()
        with progress:
            result = run_audit_api(
                preset=preset, workspace=workspace, callback=callback, registry=registry,
                **parameters,
            )  # fmt: skip
        print_result(result)
        if result.failures:  # the others' results are recorded; the exit status says not all
            raise typer.Exit(1)

    @app.command()
    def runs(
        workspace: Path | None = WorkspaceOption,
        limit: int = typer.Option(20, "--limit", "-n", help="Show at most this many runs."),
    ) -> None:
        """List the runs recorded in the workspace database, newest first."""
        with open_results(workspace) as db:
            rows = db.runs(limit)
        table = Table(title=str(db.path), title_justify="left", box=box.SIMPLE_HEAD)
        table.add_column("run", no_wrap=True)
        table.add_column("created (UTC)", no_wrap=True)
        for column in ("dataset", "model", "defense", "attacks", "best AUC", "test acc"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["id"],
                row["created_at"][:19].replace("T", " "),
                row["dataset"],
                row["model"],
                row["defense"],
                row["attacks"] or "",
                "-" if row["best_auc"] is None else format_metric(row["best_auc"]),
                format_metric(row["test_accuracy"]),
            )
        console.print(table)

    @app.command()
    def show(
        run_id: str = typer.Argument(
            ..., help="Run id, a unique prefix of one, 'latest', or a run folder."
        ),
        workspace: Path | None = WorkspaceOption,
    ) -> None:
        """Show the results of one run."""
        result = load_run(run_id, workspace=workspace_path(workspace))
        console.print(f"run {result.run_id} ({result.created_at})", markup=False)
        print_result(result)
