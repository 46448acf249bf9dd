"""DP-SGD throughput: samples/s of private training over non-private training of the same
model, data and batch, per per-sample clipping mode, measured in one run.

    .venv/bin/python benchmarks/dp_throughput.py [--models small-cnn conv-fc tanh-cnn resnet18]
        [--modes book-keeping hooks] [--samples 1024] [--batch 128] [--repeats 3]
        [--device auto|cpu|cuda] [--markdown]

Each row trains one model for one epoch on ``--samples`` random inputs of its dataset's shape
(``small-cnn``: 1x8x8 digits; ``conv-fc`` and ``tanh-cnn``: 1x28x28 Fashion-MNIST;
``resnet18``: timm's, 3x32x32 CIFAR-sized), once by the standard trainer (the non-private
floor: shuffled batches, the recipe's SGD) and once by the ``dp-sgd`` defense in each mode
(Poisson batches of the same expected size, fixed noise multiplier 1, the RDP accountant). The
accountant's work (computing epsilon at the end, calibrating the noise to a target epsilon) is a
cost per model, not per sample: the defense records it (``accounting_seconds``), the DP time
leaves it out, and the last column shows it (about 0.2 s with RDP; the PRV accountant and a
calibration take seconds, once per pool with the calibration cached). Timings alternate
between the variants and the median of ``--repeats`` is reported; ``ratio`` is DP time over
non-DP time.
The batch-norm models are first converted as the defense converts them (GroupNorm), for both.

The goal of issue 20: DP at most 2x the non-DP cost for the built-in CNNs and 4x for resnet18
on the CPU. opacus' ``hooks`` mode cannot train resnet18 (in-place ops): ``ew`` (expanded
weights) is the reference there, on two batches only (``--samples`` capped at ``2 * --batch``;
a few images a second on the CPU), whose ratio is the one to read.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import torch

from privbench import Model, TensorData, TrainingRecipe
from privbench.engine.training import StandardTrainer, resolve_device
from privbench.plugins import get_registry

MODELS: dict[str, tuple[str, dict[str, object], tuple[int, int, int]]] = {
    "small-cnn": ("small-cnn", {"batchnorm": True}, (1, 8, 8)),
    "conv-fc": ("conv-fc", {}, (1, 28, 28)),
    "tanh-cnn": ("tanh-cnn", {}, (1, 28, 28)),
    "resnet18": ("timm", {"arch": "resnet18"}, (3, 32, 32)),
}
"""Benchmark name: (model plugin, its options, input shape)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["book-keeping", "hooks"],
        choices=["book-keeping", "hooks", "ew", "functorch"],
    )
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--markdown", action="store_true", help="print Markdown table rows")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # opacus' notes on secure RNG and hooks

    device = resolve_device(args.device)
    registry = get_registry()
    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    header = f"batch {args.batch}, {args.samples} samples, {where}, torch {torch.__version__}"
    columns = [
        "model",
        "input",
        "mode",
        "non-DP samples/s",
        "DP samples/s",
        "ratio",
        "accounting s",
    ]
    if args.markdown:
        print(f"<!-- dp_throughput.py: {header} -->")
        print("| " + " | ".join(columns) + " |")
        print("|---|---|---|---:|---:|---:|---:|")
    else:
        print(header)
        print(
            f"{'model':<10} {'input':<8} {'mode':<13} {'non-DP/s':>9} {'DP/s':>8} {'ratio':>6} "
            f"{'acct s':>6}"
        )

    for name in args.models:
        plugin, options, shape = MODELS[name]
        builder = registry.create("model", plugin, options)
        for asked in args.modes:
            # opacus' hooks cannot follow resnet18's in-place ops: ew is its reference there
            mode = "ew" if asked == "hooks" and name == "resnet18" else asked
            if mode == "ew" and asked != mode and "ew" in args.modes:
                continue
            samples = min(args.samples, 2 * args.batch) if mode == "ew" else args.samples
            defense = registry.create(
                "defense",
                "dp-sgd",
                {"noise_multiplier": 1.0, "grad_sample_mode": mode, "accountant": "rdp"},
            )
            times = _measure(builder, defense, shape, samples, args, device)
            rate_plain = samples / times["plain"]
            rate_private = samples / times["private"]
            ratio = times["private"] / times["plain"]
            cells = [
                name,
                "x".join(map(str, shape)),
                mode,
                f"{rate_plain:.0f}",
                f"{rate_private:.0f}",
                f"{ratio:.2f}x",
                f"{times['accounting']:.2f}",
            ]
            if args.markdown:
                print("| " + " | ".join(cells) + " |", flush=True)
            else:
                print(
                    f"{cells[0]:<10} {cells[1]:<8} {cells[2]:<13} {cells[3]:>9} "
                    f"{cells[4]:>8} {cells[5]:>6} {cells[6]:>6}",
                    flush=True,
                )


def _measure(
    builder: Any,
    defense: Any,
    shape: tuple[int, int, int],
    samples: int,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, float]:
    """Median seconds of one epoch without and with DP over ``args.repeats`` alternated runs,
    after one warm-up each (first calls pay for imports and allocator growth), and of the
    accountant's work in the DP fit (``accounting_seconds`` of its record), which the DP time
    leaves out. Building and converting the model is not timed."""
    generator = torch.Generator().manual_seed(0)
    data = TensorData(
        torch.randn(samples, *shape, generator=generator),
        torch.randint(0, 10, (samples,), generator=generator),
    )
    recipe = TrainingRecipe(epochs=1, batch_size=args.batch)

    def fresh() -> Model:
        torch.manual_seed(0)
        net = builder.create(shape, 10)
        model = Model(net, torch.zeros(shape[0]), torch.ones(shape[0]))
        return defense.prepare_model(model).to(device)

    def plain(model: Model) -> float:
        StandardTrainer(recipe, seed=0, device=device).fit(model, data)
        return 0.0

    def private(model: Model) -> float:
        meta = defense.fit(model, data, StandardTrainer(recipe, seed=0, device=device))
        return float(meta["accounting_seconds"])

    variants = {"plain": plain, "private": private}
    for run in variants.values():
        run(fresh())
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    seconds["accounting"] = []
    for _ in range(args.repeats):
        for name, run in variants.items():
            model = fresh()
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            accounting = run(model)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - started - accounting)
            if name == "private":
                seconds["accounting"].append(accounting)
    return {name: statistics.median(values) for name, values in seconds.items()}


if __name__ == "__main__":
    main()
