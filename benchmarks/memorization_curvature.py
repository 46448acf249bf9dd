"""Memorization against input-loss curvature (Ravikumar et al., ICML 2024, "Unveiling Privacy,
Memorization, and Input Curvature Links", Sec. 6.3), on a pool of models.

    .venv/bin/python benchmarks/memorization_curvature.py [--preset fashion-mnist]
        [--models 16] [--population 4000] [--name fashion_mnist] [--out docs/results]

One audit with ``--memorization``: every population sample's Feldman-Zhang memorization from the
pool's keep masks (accuracy of the models that trained on it minus that of the models that did
not; no extra training), its mean input-loss curvature over the models that trained on it (the
``curvature`` scorer, finite differences, as the paper's curvature of the training loss), and
the Spearman rank correlation of the two (the paper reports a strong positive one on CIFAR and
ImageNet). Writes ``memorization_curvature_<name>.md`` (the correlation, its p-value, the
correlation within the top memorization decile, and how curvature rises across memorization
bins) and ``memorization_curvature_<name>.png`` (the most memorized images, with their labels,
memorization and curvature) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
from _flags import as_flags, key_values
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

import privbench
from privbench.plugins import get_registry

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
"""Fashion-MNIST's label names, in label order (Xiao et al. 2017)."""


def read_rows(path: Path) -> dict[str, np.ndarray]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}


def plot_top(columns: dict[str, np.ndarray], dataset: str, path: Path, count: int = 24) -> None:
    """The *count* most memorized images with label, memorization and curvature (ties, which a
    small pool makes common, in the order of the population)."""
    data = get_registry().create("dataset", dataset).load(None)
    order = np.argsort(-np.nan_to_num(columns["memorization"], nan=-1.0), kind="stable")[:count]
    names = FASHION_CLASSES if dataset == "fashion-mnist" else None
    figure = Figure(figsize=(12, 1.7 * count / 12 + 0.4), dpi=110)
    FigureCanvasAgg(figure)
    for slot, row in enumerate(order):
        axes = figure.add_subplot(count // 12, 12, slot + 1)
        image = data.train.x[int(columns["index"][row])]
        axes.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        label = int(columns["label"][row])
        axes.set_title(
            f"{names[label] if names else label}\nmem {columns['memorization'][row]:.2f}\n"
            f"curv {columns['curvature_in'][row]:.3g}",
            fontsize=6,
        )
        axes.axis("off")
    figure.suptitle("most memorized training images (Feldman-Zhang, over the pool)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fashion-mnist")
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--population", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="instead of the preset's")
    parser.add_argument("--model-option", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--name", default="fashion_mnist")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    args.model_option = key_values(parser, args.model_option, "--model-option")
    command = (
        f"python benchmarks/memorization_curvature.py --preset {args.preset} "
        f"--models {args.models} --population {args.population} --seed {args.seed} "
        f"--name {args.name}"
        + (f" --epochs {args.epochs}" if args.epochs else "")
        + as_flags("--model-option", args.model_option)
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result = privbench.audit(
            preset=args.preset,
            epochs=args.epochs,
            model_options=args.model_option or None,
            attacks=["loss"],
            memorization=True,
            shadows=args.models - 1,
            targets=1,
            paired=True,
            population=args.population,
            seed=args.seed,
            device="cpu",
            workspace=Path(args.workspace or scratch),
        )
        columns = read_rows(result.path / "memorization.csv")
    minutes = (time.perf_counter() - started) / 60
    summary = result.memorization
    assert summary is not None and summary.spearman_curvature is not None
    memorization, curvature = columns["memorization"], columns["curvature_in"]
    finite = np.isfinite(memorization) & np.isfinite(curvature)
    memorization, curvature = memorization[finite], curvature[finite]
    top = memorization >= np.quantile(memorization, 0.9)
    rho_top, p_top = stats.spearmanr(memorization[top], curvature[top])
    edges = [-1.0, 0.0, 0.25, 0.5, 0.75, 1.01]
    bins = []
    for low, high in itertools.pairwise(edges):
        inside = (memorization >= low) & (memorization < high)
        if inside.any():
            median = float(np.median(curvature[inside]))
            bins.append(
                f"| [{low:.2f}, {min(high, 1.0):.2f}) | {int(inside.sum())} | {median:.4g} |"
            )
    stem = f"memorization_curvature_{args.name}"
    dataset = result.spec.dataset.name
    args.out.mkdir(parents=True, exist_ok=True)
    plot_top(columns, dataset, args.out / f"{stem}.png")
    text = (
        f"# Memorization and input-loss curvature: {args.preset}\n\n"
        f"Generated by `{command}` on 2 CPU cores in {minutes:.0f} minutes. {args.models} models "
        f"with paired Bernoulli(0.5) keep-masks over a population of {args.population} "
        f"(each sample in {args.models // 2} models and out of {args.models // 2}); test "
        f"accuracy {result.utility.test_accuracy:.3f}. Memorization is Feldman-Zhang's "
        "(accuracy in minus accuracy out, over the pool); curvature is the `curvature` "
        "scorer's finite-difference input-loss curvature, averaged over the models that "
        f"trained on the sample ({int(finite.sum())} samples with both).\n\n"
        f"- Spearman rank correlation, memorization vs curvature: "
        f"**{summary.spearman_curvature:.3f}** (p = {summary.spearman_p_value:.2g})\n"
        f"- among samples at or above the 90th memorization percentile ({int(top.sum())}): "
        f"{rho_top:.3f} (p = {p_top:.2g})\n"
        f"- mean memorization {summary.mean:.3f}; {summary.above_0_5} samples above 0.5, "
        f"{int((memorization >= 1.0).sum())} at 1 (right in every model that trained on them, "
        "wrong in every other); the figure shows the first of them\n\n"
        "| memorization | samples | median curvature |\n|---|---|---|\n"
        + "\n".join(bins)
        + f"\n\n![the most memorized images]({stem}.png)\n"
    )
    (args.out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
