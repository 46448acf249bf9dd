"""The ``privbench`` command line (typer + rich). Plugins add sub-commands via
``register_commands(app)``.

Errors caused by the input (:class:`~privbench.errors.PrivbenchError`) print one line and exit
with status 2; nothing is half-written when they happen.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from privbench.errors import OptionError, PrivbenchError, did_you_mean
from privbench.plugins import KINDS, Registry, get_registry
from privbench.plugins.hookspecs import PLUGIN_API
from privbench.plugins.interfaces import TrainingRecipe
from privbench.plugins.options import configure, describe_options, parse_assignments
from privbench.presets import PRESETS, get_preset
from privbench.results.db import ResultsDB
from privbench.version import __version__

# Piped or captured output gets 120 columns rather than rich's 80, so the table stays whole.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)

DEFAULT_WORKSPACE = "privbench-workspace"

WorkspaceOption = typer.Option(
    None,
    "--workspace",
    "-w",
    help=f"Workspace folder (models, signals, runs, database) [env PRIVBENCH_WORKSPACE; "
    f"default ./{DEFAULT_WORKSPACE}].",
    show_default=False,
)


def _recipe_default(name: str) -> Any:
    return attrs.fields_dict(TrainingRecipe)[name].default


def workspace_path(value: Path | None) -> Path:
    return value or Path(os.environ.get("PRIVBENCH_WORKSPACE") or DEFAULT_WORKSPACE)


def per_plugin_options(
    kind: str, names: Sequence[str], items: Sequence[str], *, flag: str
) -> dict[str, dict[str, str]]:
    """``--attack-opt``/``--scorer-opt`` values per plugin: ``name.key=value`` targets one, a
    bare ``key=value`` every given plugin that has the option (an error if none has it)."""
    registry = get_registry()
    per_plugin: dict[str, dict[str, str]] = {name: {} for name in names}
    for key, value in parse_assignments(items, flag=flag).items():
        prefix, dot, option = key.partition(".")
        if dot and prefix in per_plugin:
            per_plugin[prefix][option] = value
            continue
        if dot:
            raise OptionError(f"{flag} {key}: '{prefix}' is not one of the {kind}s given")
        takers = [
            name
            for name in names
            if key in {row[0] for row in describe_options(registry.get(kind, name).cls)}
        ]
        if not takers:
            if not names:
                raise OptionError(f"{flag} {key}: no {kind} given")
            # Let the first plugin's validation produce the did-you-mean message.
            takers = list(names[:1])
        for name in takers:
            per_plugin[name][key] = value
    return per_plugin


def format_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.3g}"
    return str(value)


def run_title(record: dict[str, Any]) -> str:
    spec = record["spec"]
    return (
        f"{spec['dataset']['name']} · {spec['model']['name']} · defense {spec['defense']['name']}"
        f" · {spec['shadows'] + 1} models, {spec['targets']} target(s)"
        f" x {spec['population']} samples"
    )


def utility_line(record: dict[str, Any]) -> str:
    u, training = record["utility"], record["training"]
    together = training.get("target_meta", {}).get("ensemble")
    how = f" ({together} at once)" if together and training["trained"] else ""
    return (
        f"target accuracy: train {u['train_accuracy']:.3f}, test {u['test_accuracy']:.3f} · "
        f"models trained {training['trained']}{how}, reused {training['reused']}"
    )


def results_table(record: dict[str, Any]) -> Table:
    table = Table(title=run_title(record), title_justify="left", box=box.SIMPLE_HEAD)
    for column in (
        "attack",
        "access",
        "AUC",
        "AUC/target",
        "TPR@0.1%FPR",
        "TPR@1%FPR",
        "bal.acc",
        "advantage",
        "ε≥ (95%)",
        "s",
    ):
        table.add_column(column, justify="left" if column in ("attack", "access") else "right")
    for attack in record["attacks"]:
        m = attack["metrics"]
        per_target = attack.get("per_target", {"mean": {}, "std": {}})
        auc_per_target = (
            f"{per_target['mean']['auc']:.3f}±{per_target['std']['auc']:.3f}"
            if "auc" in per_target["mean"]
            else "-"
        )
        table.add_row(
            attack["name"],
            attack["access"],
            format_metric(m["auc"]),
            auc_per_target,
            *(
                format_metric(m[k])
                for k in (
                    "tpr_at_0_1_fpr",
                    "tpr_at_1_fpr",
                    "balanced_accuracy",
                    "advantage",
                    "epsilon_lower",
                )
            ),
            f"{attack['seconds']:.1f}",
        )
    table.caption = (
        "AUC and TPRs over the pooled scores of all target turns; AUC/target: mean±sd\n"
        + utility_line(record)
    )
    table.caption_justify = "left"
    return table


def dp_bound_line(bound: dict[str, float]) -> str:
    return (
        f"the accountant's (ε={bound['epsilon']:.3g}, δ={bound['delta']:.2g})-DP allows at most: "
        f"AUC {bound['auc']:.4f}, TPR@0.1%FPR {bound['tpr_at_0_1_fpr']:.4f}, "
        f"TPR@1%FPR {bound['tpr_at_1_fpr']:.4f}, advantage {bound['advantage']:.4f}"
    )


# What every trainer records about itself; the rest of a target's metadata is the defense's own
# report (accountant epsilon, synthetic-image similarity, teacher accuracy, ...).
_TRAINING_BOOKKEEPING = frozenset(
    {"device", "ensemble", "final_train_loss", "privbench", "train_seconds"}
)


def defense_line(record: dict[str, Any]) -> str | None:
    """The defense's own measurements on the first target, or None for none to show."""
    meta = record.get("training", {}).get("target_meta", {})
    shown = {
        key: value
        for key, value in sorted(meta.items())
        if key not in _TRAINING_BOOKKEEPING and isinstance(value, (int, float, str, bool))
    }
    if not shown:
        return None
    name = record["spec"]["defense"]["name"]
    return f"defense {name} (first target): " + ", ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in shown.items()
    )


def reconstruction_metrics(m: dict[str, Any]) -> str:
    bar = f"SSIM > {m['ssim_threshold']:g}"
    parts = []
    if "fraction_identified" in m:
        identified = f"identified {m['fraction_identified']:.0%} (10% nearer than any non-member"
        if "chance_fraction_identified" in m:
            identified += f"; typical images reach {m['chance_fraction_identified']:.0%}"
        parts.append(identified + ")")
    recovered = f"{bar} {m['fraction_recovered']:.0%}"
    if "chance_fraction_recovered" in m:
        recovered += f" (typical images reach {m['chance_fraction_recovered']:.0%})"
    parts += [recovered, f"mean SSIM {m['mean_ssim']:.3f}", f"mean L2 {m['mean_l2']:.3f}"]
    return ", ".join(parts)


def reconstruction_lines(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"reconstruction attack {summary['name']} on target {summary['target']} "
        f"({summary['candidates']} candidates for {summary['train_size']} training images): "
        + reconstruction_metrics(summary["metrics"])
    ]
    declared = summary.get("declared_training_set")
    if declared is not None:
        lines.append(
            f"  against the {declared['size']} images the defense trained the released model on "
            "instead: " + reconstruction_metrics(declared["metrics"])
        )
    return lines


def memorization_line(summary: dict[str, Any]) -> str:
    line = (
        f"memorization over {summary['models']} models: mean {summary['mean']:.3f}, "
        f"{summary['above_0_5']} samples above 0.5"
    )
    if "spearman_curvature" in summary:
        line += (
            f"; Spearman rank correlation with curvature {summary['spearman_curvature']:.3f} "
            f"(p = {summary['spearman_p_value']:.2g})"
        )
    return line


def scorers_table(record: dict[str, Any]) -> Table:
    """Each reported scorer's median for members and non-members of the targets."""
    table = Table(
        title="scorers on the target models: median over members and non-members",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("scorer", "members", "non-members", "membership AUC", "access"):
        table.add_column(column, justify="left" if column in ("scorer", "access") else "right")
    for name, summary in record["scorers"].items():
        table.add_row(
            name,
            f"{summary['members']['median']:.4g}",
            f"{summary['non_members']['median']:.4g}",
            format_metric(summary["membership_auc"]),
            summary["access"],
        )
    return table


def print_record(record: dict[str, Any], run_dir: Path) -> None:
    """A run's table, its bound, scorer and memorization lines, and where its files are."""
    if record["attacks"] or not record.get("reconstructions"):
        console.print(results_table(record))
    else:
        console.print(run_title(record))
        console.print(utility_line(record))
    if record.get("scorers"):
        console.print(scorers_table(record))
        for name in record["scorers"]:
            console.print(f"{name}: {run_dir / f'scores-{name}.csv'}")
    line = defense_line(record)
    if line is not None:
        console.print(line)
    if "dp_bound" in record:
        console.print(dp_bound_line(record["dp_bound"]))
    if "memorization" in record:
        console.print(memorization_line(record["memorization"]))
        console.print(f"memorization: {run_dir / 'memorization.csv'}")
    for summary in record.get("reconstructions", []):
        for line in reconstruction_lines(summary):
            console.print(line)
        console.print(f"reconstructions beside training images: {run_dir / summary['grid']}")
        if "declared_training_set" in summary:
            grid = summary["declared_training_set"]["grid"]
            console.print(f"reconstructions beside the defense's training images: {run_dir / grid}")
    console.print(f"results: {run_dir / 'results.json'}")
    if record["attacks"]:
        console.print(f"ROC plot: {run_dir / 'roc.png'}")


def run_settings(
    ctx: typer.Context, registry: Registry, preset: str | None, attacks: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """``privbench run``'s parameters, with what the command line left unset filled in: first
    by each attack's ``victim_setting`` (the setting its paper attacks, e.g. a kernel-regime
    MLP for reconstruction), then by ``--preset``. Also returns lines that say what was filled
    in and why."""
    given = {
        name
        for name in ctx.params
        # typer vendors click: compare the enum by name, not by identity
        if getattr(ctx.get_parameter_source(name), "name", "") != "DEFAULT"
    }
    settings = dict(ctx.params)
    filled: dict[str, tuple[Any, str]] = {}
    for name in attacks:
        for key, value in getattr(registry.get("attack", name).cls, "victim_setting", {}).items():
            if key not in settings:
                raise OptionError(f"attack '{name}' sets unknown run parameter '{key}'")
            if key in filled and filled[key][0] != value:
                flag = "--" + key.replace("_", "-")
                raise OptionError(
                    f"attacks '{filled[key][1]}' and '{name}' need different {flag} "
                    f"({filled[key][0]} vs {value}): run them separately"
                )
            filled[key] = (value, name)
    if preset is not None:
        filled |= {key: (value, preset) for key, value in get_preset(preset).values.items()}
    filled = {key: v for key, v in filled.items() if key not in given}
    by_source: dict[str, list[str]] = {}
    for key, (value, source) in filled.items():
        settings[key] = value
        shown = " ".join(map(str, value)) if isinstance(value, list | tuple) else value
        by_source.setdefault(source, []).append(f"--{key.replace('_', '-')} {shown}")
    notes = []
    for source, values in by_source.items():
        what = f"preset {source}" if source == preset else f"attack {source}'s victim setting"
        notes.append(f"{what}: {' '.join(values)} (flags given override it)")
    return settings, notes


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


def open_results(workspace: Path | None) -> ResultsDB:
    path = workspace_path(workspace) / "privbench.db"
    if not path.is_file():
        raise PrivbenchError(f"no results database at {path}; run 'privbench run' first")
    return ResultsDB(path)


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
        version: bool = typer.Option(False, "--version", help="Show the version and exit."),
    ) -> None:
        if version:
            console.print(f"privbench {__version__}")
            raise typer.Exit()

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
            ["loss"], "--attack", "-a", help="Attack to run; repeat for several on the same models."
        ),
        defense: str = typer.Option("none", "--defense", "-d", help="Defense for all models."),
        model: str = typer.Option(
            "small-cnn", "--model", "-m", help="Model (timm/<arch> for timm)."
        ),
        dataset: str = typer.Option("digits", "--dataset", help="Dataset."),
        attack_opt: list[str] = typer.Option(
            [], "--attack-opt", help="key=value (or attack.key=value with several attacks)."
        ),
        scorer: list[str] = typer.Option(
            [],
            "--scorer",
            "-s",
            help="Also report a scorer on the targets (members vs non-members); repeatable.",
        ),
        scorer_opt: list[str] = typer.Option(
            [], "--scorer-opt", help="key=value (or scorer.key=value with several scorers)."
        ),
        defense_opt: list[str] = typer.Option([], "--defense-opt", help="key=value"),
        model_opt: list[str] = typer.Option([], "--model-opt", help="key=value"),
        dataset_opt: list[str] = typer.Option([], "--dataset-opt", help="key=value"),
        shadows: int = typer.Option(7, "--shadows", "-k", help="Shadow models beside the target."),
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
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    ) -> None:
        """Train (or reuse) target and shadow models, run the attacks, report the metrics."""
        from privbench.engine.audit import Audit, AuditSpec, PluginChoice
        from privbench.engine.store import Workspace

        p, notes = run_settings(ctx, registry, preset, attack)
        recipe = configure(
            TrainingRecipe,
            {name: p[name] for name in attrs.fields_dict(TrainingRecipe)},
            what="the training recipe",
        )
        attacks = p["attack"]
        per_attack = per_plugin_options("attack", attacks, attack_opt, flag="--attack-opt")
        per_scorer = per_plugin_options("scorer", scorer, scorer_opt, flag="--scorer-opt")
        choices = {
            "dataset": PluginChoice(
                p["dataset"], parse_assignments(dataset_opt, flag="--dataset-opt")
            ),
            "model": PluginChoice(p["model"], parse_assignments(model_opt, flag="--model-opt")),
            "defense": PluginChoice(defense, parse_assignments(defense_opt, flag="--defense-opt")),
            "attacks": tuple(PluginChoice(name, per_attack[name]) for name in attacks),
            "scorers": tuple(PluginChoice(name, per_scorer[name]) for name in scorer),
        }
        try:
            spec = AuditSpec(
                **choices,
                recipe=recipe,
                shadows=p["shadows"],
                paired=p["paired"],
                memorization=memorization,
                targets=p["targets"],
                population=p["population"],
                seed=seed,
                data_root=data_root,
                device=device,
            )
        except ValueError as err:  # attrs validators: "'population' must be >= 4: 2"
            raise OptionError(f"bad value: {err.args[0]}") from None
        audit = Audit.prepare(spec, registry)
        ws = Workspace(workspace_path(workspace))
        progress = progress_bars(quiet)
        with progress:
            result = audit.run(ws, progress=progress)
        for note in notes:
            console.print(note)
        print_record(result.record, result.path)

    @app.command()
    def plugins(
        options: bool = typer.Option(False, "--options", help="List each component's options."),
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
        table = Table(title="plugins", title_justify="left")
        for column in ("plugin", "distribution", "version", "status", "provides / error"):
            table.add_column(column)
        for info in sorted(registry.plugins.values(), key=lambda i: i.name):
            detail = info.error or ", ".join(f"{kind} {name}" for kind, name in info.provides)
            style = {"failed": "red", "disabled": "yellow"}.get(info.status, "")
            table.add_row(
                info.name,
                info.distribution or "-",
                info.version or "-",
                f"[{style}]{info.status}[/]" if style else info.status,
                detail,
            )
        console.print(table)
        components = Table(title="components", title_justify="left")
        for column in ("kind", "name", "plugin", "description"):
            components.add_column(column)
        if options:
            components.add_column("options")
        for kind in KINDS:
            for component in registry.components(kind):
                row = [
                    kind,
                    component.name,
                    component.plugin.name,
                    getattr(component.cls, "description", ""),
                ]
                if options:
                    row.append(
                        ", ".join(f"{n}: {t} = {d}" for n, t, d in describe_options(component.cls))
                    )
                components.add_row(*row)
        console.print(components)

    @app.command("new-plugin")
    def new_plugin(
        name: str = typer.Argument(..., help="The plugin's name (lowercase, words joined by -)."),
        directory: Path = typer.Option(Path("."), "--directory", "-d", help="Where to write it."),
    ) -> None:
        """Write a plugin package skeleton (entry point, an attack, contract tests) to edit."""
        from privbench.plugins.scaffold import new_plugin as write

        root = write(name, directory)
        console.print(f"wrote {root}: pip install -e {root}, then privbench plugins --check {name}")

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
        from privbench.bench.suite import load_suite, plan_suite, run_suite
        from privbench.engine.store import Workspace

        suite = load_suite(suite_file, registry, data_root=data_root)
        ws = Workspace(workspace_path(workspace))
        if plan:
            print_plan(plan_suite(suite, ws, registry, retry_failed=retry_failed), suite.name)
            return
        runner = create_executor(executor, max_workers=max_workers, address=address)
        counts = {"done": 0, "cached": 0, "failed": 0}
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
                    if outcome.status == "failed":
                        console.print(
                            f"[red]failed[/]: {escape(outcome.cell.label)}: "
                            f"{escape(outcome.error or '')}"
                        )
                    elif outcome.status == "done":
                        console.print(f"done: {escape(outcome.cell.label)} (run {outcome.run_id})")
            finally:
                runner.close()
        console.print(
            f"suite {suite.name}: {len(suite.cells)} cells, {counts['done']} run now, "
            f"{counts['cached']} already recorded, {counts['failed']} failed; "
            f"results in {ws.database}"
        )
        if counts["failed"]:
            raise typer.Exit(1)

    from privbench.results.leaderboard import FORMATS as board_formats

    @app.command()
    def leaderboard(
        suite_file: Path | None = typer.Argument(
            None, help="A suite TOML file: only its cells [default: every run in the workspace]."
        ),
        workspace: Path | None = WorkspaceOption,
        fmt: str = typer.Option(
            "md", "--format", "-f", help=f"{', '.join(board_formats)} (html: a page with plots)."
        ),
        rank_by: str | None = typer.Option(
            None, "--rank-by", help="Metric to rank by [default: the suite's, else TPR@0.1%FPR]."
        ),
        output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file."),
    ) -> None:
        """Attack results ranked, with the defended model's test accuracy and the cost."""
        from privbench.bench.suite import suite_header
        from privbench.results import leaderboard as board

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
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            console.print(f"leaderboard ({len(rows)} rows, ranked by {by}): {output}")

    @app.command()
    def show(
        run_id: str = typer.Argument(..., help="Run id, a unique prefix of one, or 'latest'."),
        workspace: Path | None = WorkspaceOption,
    ) -> None:
        """Show the results of one run."""
        with open_results(workspace) as db:
            record = db.find_run(run_id)
        console.print(f"run {record['run_id']} ({record['created_at']})")
        print_record(record, workspace_path(workspace) / "runs" / record["run_id"])

    registry.call_register_commands(app)
    return app


def check_plugin(registry: Registry, name: str) -> None:
    """``privbench plugins --check NAME``: privbench.testing's contract checks on every
    component of plugin NAME (or on the components called NAME); exit 1 if one fails."""
    from privbench import testing

    info = registry.plugins.get(name)
    if info is not None and info.status != "loaded":
        raise PrivbenchError(f"plugin '{name}' did not load: {info.error or info.status}")
    chosen = [
        component
        for kind in KINDS
        for component in registry.components(kind)
        if component.plugin.name == name or component.name == name
    ]
    if not chosen:
        known = sorted({*registry.plugins, *(n for k in KINDS for n in registry.names(k))})
        raise PrivbenchError(f"no plugin or component '{name}'{did_you_mean(name, known)}")
    failed = 0
    for component in chosen:
        try:
            note = testing.check_component(component, registry)
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


def plugins_document(registry: Registry) -> dict[str, Any]:
    """``privbench plugins --json``: every plugin, its status, and every component's options."""
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
                    {"name": name, "type": kind_of, "default": default}
                    for name, kind_of, default in describe_options(component.cls)
                ],
            }
            for kind in KINDS
            for component in registry.components(kind)
        ],
    }


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
