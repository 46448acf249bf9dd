"""The Curvature Clues attack table on real data, and how it moves with training-set size.

    .venv/bin/python benchmarks/curvature_clues_sizes.py [--preset NAME] [--name digits]
        [--models 16] [--targets 4] [--sizes 300,600,1257] [--epochs 30] [--out docs/results]
        [--min-steps 0] [--model-option KEY=VALUE ...]

For each population size N (each model trains on about N/2 samples), one pool of models with
Curvature Clues' paired Bernoulli masks is trained once and shared by every attack: loss, LiRA
online and offline, RMIA, and the curvature attack (zero-order, LR and NLL). Metrics are mean,
std and a 95% confidence interval (Student t) over the target models, as the paper reports
means over targets. The paper's claim (Ravikumar et al. 2024, Sec. 5.3) is that curvature MIA
gains on the other attacks as the training set grows; the script reports, per size, the AUROC
gap between Curv ZO LR and the best other attack, per target (the same target's models and
shadows for both), with its 95% interval.

``--preset`` takes the dataset, model and recipe of a preset (``fashion-mnist``); without one,
digits and ``small-cnn`` at ``--epochs``. A fixed number of epochs gives a small training set
few SGD steps (8 a epoch for 1,000 images at batch 128) and leaves it under-fitted, while the
paper trains every model to convergence; ``--min-steps`` raises the epochs of a small size
until its models take at least that many steps. Writes ``curvature_clues_<name>.md`` (the tables),
``curvature_clues_<name>_roc.png`` (log-log ROC at the largest size) and
``curvature_clues_<name>_sizes.png`` (AUROC and TPR at 1% / 0.1% FPR against size) into
``--out``. The paper uses 64 shadow models on CIFAR; this is a CPU-sized version of the same
protocol.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from _flags import as_flags, key_values
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

import privbench
from privbench.analysis.metrics import roc_auc_score
from privbench.engine.presets import get_preset
from privbench.results.parts import MembershipScores
from privbench.results.plots import plot_roc

ATTACKS = [
    ("loss", "loss", {}),
    ("LiRA online", "lira", {"variant": "online"}),
    ("LiRA offline", "lira", {"variant": "offline"}),
    ("RMIA", "rmia", {}),
    ("Curv ZO LR", "curvature", {"variant": "lr"}),
    ("Curv ZO NLL", "curvature", {"variant": "nll"}),
]
CURVATURE = "Curv ZO LR"
COLUMNS = [
    ("AUROC", "auc"),
    ("bal. acc (EER)", "balanced_accuracy_at_eer"),
    ("TPR@1%FPR", "tpr_at_1_fpr"),
    ("TPR@0.1%FPR", "tpr_at_0_1_fpr"),
]


def interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, sample std and the half-width of the 95% Student-t interval of the mean."""
    n = len(values)
    std = float(np.std(values, ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
    return float(np.mean(values)), std, half


def per_target_aucs(scores: MembershipScores) -> dict[int, float]:
    return {
        int(t): float(roc_auc_score(part.member, part.score))
        for t in np.unique(scores.target)
        for part in [scores.for_target(int(t))]
    }


def run_size(workspace: Path, size: int, args: argparse.Namespace) -> dict:
    """One pool at population *size*; every attack against it (one audit per attack label,
    the models coming from the store after the first)."""
    rows, curves, aucs = [], {}, {}
    epochs = args.epochs
    if args.preset:
        preset = get_preset(args.preset).values
        epochs, batch = preset.get("epochs", epochs), preset.get("batch_size", 64)
        epochs = max(epochs, math.ceil(args.min_steps / math.ceil(size / 2 / batch)))
    recipe = {"epochs": epochs, "model_options": args.model_option or None}
    utility = None
    for label, name, options in ATTACKS:
        started = time.perf_counter()
        result = privbench.audit(
            preset=args.preset,
            attacks=[(name, options)],
            shadows=args.models - 1,
            targets=args.targets,
            paired=True,
            population=size,
            seed=args.seed,
            device="cpu",
            workspace=workspace,
            **recipe,
        )
        attack = result.attacks[0]
        aucs[label] = per_target_aucs(attack.scores)
        rows.append((label, attack.per_target, time.perf_counter() - started))
        curves[label] = (*attack.scores.roc(), attack.metrics.auc)
        utility = result.utility
        print(f"size {size} {label}: AUROC {attack.metrics.auc:.3f}", flush=True)
    return {"rows": rows, "curves": curves, "aucs": aucs, "utility": utility, "epochs": epochs}


def gap(run: dict) -> tuple[str, tuple[float, float, float]]:
    """Curv ZO LR's AUROC minus the best other attack's (by mean), paired by target."""
    others = [label for label, _, _ in ATTACKS if not label.startswith("Curv")]
    best = max(others, key=lambda label: np.mean(list(run["aucs"][label].values())))
    targets = sorted(run["aucs"][CURVATURE])
    diff = np.array([run["aucs"][CURVATURE][t] - run["aucs"][best][t] for t in targets])
    return best, interval(diff)


def table(size: int, run: dict, args: argparse.Namespace) -> str:
    utility = run["utility"]
    lines = [
        f"### population {size} (each model trains on ~{size // 2} samples, {run['epochs']} "
        f"epochs): train acc {utility.train_accuracy:.3f}, test acc {utility.test_accuracy:.3f}",
        "",
        "| attack | " + " | ".join(c for c, _ in COLUMNS) + " | AUROC 95% CI | seconds |",
        "|---|" + "---|" * (len(COLUMNS) + 2),
    ]
    for label, per_target, seconds in run["rows"]:
        cells = [f"{per_target.mean[key]:.3f} ± {per_target.std[key]:.3f}" for _, key in COLUMNS]
        mean, _, half = interval(np.array(list(run["aucs"][label].values())))
        ci = f"[{mean - half:.3f}, {mean + half:.3f}]"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ci} | {seconds:.0f} |")
    best, (mean, _, half) = gap(run)
    lines += [
        "",
        f"{CURVATURE} minus {best} (the best other attack here), AUROC paired by target: "
        f"{mean:+.4f} (95% CI [{mean - half:+.4f}, {mean + half:+.4f}], {args.targets} targets)",
    ]
    return "\n".join(lines) + "\n"


def plot_sizes(sizes: list[int], runs: list[dict], path: Path, title: str) -> None:
    """AUROC and TPR at 1% / 0.1% FPR (mean and 95% CI over targets) against the size."""
    figure = Figure(figsize=(11, 3.6), dpi=120)
    FigureCanvasAgg(figure)
    members = np.array(sizes) // 2
    spreads = [{label: spread for label, spread, _ in run["rows"]} for run in runs]
    for panel, (column, key) in enumerate([COLUMNS[0], COLUMNS[2], COLUMNS[3]]):
        axes = figure.add_subplot(1, 3, panel + 1)
        for label, _, _ in ATTACKS:
            n = len(runs[0]["aucs"][label])
            means = np.array([spread[label].mean[key] for spread in spreads])
            stds = np.array([spread[label].std[key] for spread in spreads])
            half = stats.t.ppf(0.975, max(n - 1, 1)) * stds / np.sqrt(n)
            axes.errorbar(members, means, yerr=half, marker="o", markersize=3, capsize=2,
                          label=label)  # fmt: skip
        axes.set_xscale("log")
        axes.set_xticks(members, [f"{m:,}" for m in members])
        axes.minorticks_off()
        axes.set_xlabel("members per model")
        axes.set_ylabel(f"{column} (mean, 95% CI over targets)")
        axes.grid(True, alpha=0.3)
        if panel == 0:
            axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None)
    parser.add_argument("--name", default="digits")
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--sizes", default="300,600,1257")
    parser.add_argument("--epochs", type=int, default=30, help="without --preset")
    parser.add_argument("--min-steps", type=int, default=0, help="SGD steps per model at least")
    parser.add_argument("--model-option", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    args.model_option = key_values(parser, args.model_option, "--model-option")
    sizes = [int(s) for s in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    setting = f"--preset {args.preset}" if args.preset else f"--epochs {args.epochs}"
    options = as_flags("--model-option", args.model_option)
    steps = f" --min-steps {args.min_steps}" if args.min_steps else ""
    command = (
        f"python benchmarks/curvature_clues_sizes.py {setting} --name {args.name} "
        f"--models {args.models} --targets {args.targets} --sizes {args.sizes} --seed {args.seed}"
        + steps
        + options
    )
    started = time.perf_counter()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        workspace = Path(args.workspace or scratch)
        for size in sizes:
            runs.append(run_size(workspace, size, args))
            write(sizes[: len(runs)], runs, args, command, started)  # each size kept as done


def write(sizes: list[int], runs: list[dict], args: argparse.Namespace, command: str,
          started: float) -> None:  # fmt: skip
    """The tables and plots of the sizes done so far."""
    minutes = (time.perf_counter() - started) / 60
    sections = [table(size, run, args) for size, run in zip(sizes, runs, strict=True)]
    stem = f"curvature_clues_{args.name}"
    what = args.preset or f"digits, small-cnn, {args.epochs} epochs"
    if args.model_option:
        what += " (" + ", ".join(f"{k}={v}" for k, v in args.model_option.items()) + ")"
    plot_roc(
        runs[-1]["curves"],
        args.out / f"{stem}_roc.png",
        title=f"{what}, population {sizes[-1]}, {args.models} models, {args.targets} targets",
    )
    plot_sizes(sizes, runs, args.out / f"{stem}_sizes.png",
               f"{what}: {args.models} models, paired masks, {args.targets} targets")  # fmt: skip
    gaps = []
    for size, run in zip(sizes, runs, strict=True):
        best, (mean, _, half) = gap(run)
        ci = f"[{mean - half:+.4f}, {mean + half:+.4f}]"
        gaps.append(f"| {size // 2} | {best} | {mean:+.4f} | {ci} |")
    header = (
        f"# Curvature Clues protocol: {what}\n\n"
        f"Generated by `{command}` on 2 CPU cores in {minutes:.0f} minutes. "
        f"{args.models} models with paired Bernoulli(0.5) keep-masks, {args.targets} of them in "
        "turn the target (the rest its shadows, the target's complement left out); mean ± std "
        "over targets, and the 95% Student-t interval of the mean AUROC.\n\n"
        f"## {CURVATURE} against the best other attack, by training-set size\n\n"
        "| members per model | best other attack | AUROC gap (mean over targets) | 95% CI |\n"
        "|---|---|---|---|\n" + "\n".join(gaps) + "\n\n"
        f"![AUROC and TPR against size]({stem}_sizes.png)\n\n## Per size\n\n"
    )
    (args.out / f"{stem}.md").write_text(header + "\n".join(sections))
    print(f"wrote {args.out / stem}.md", flush=True)


if __name__ == "__main__":
    main()
