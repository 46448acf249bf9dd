"""Curvature scoring throughput against its floor: ratios measured in one run.

    .venv/bin/python benchmarks/curvature_throughput.py [--model small-cnn] [--samples 1024]
        [--batch 256] [--probes 10] [--repeats 3] [--device auto|cpu|cuda] [--markdown]

Each estimator of the ``curvature`` scorer needs a known number of model passes per sample and
query augmentation (its floor):

- ``zero-order`` (Curvature Clues): 4 loss queries per round, ``4 x probes`` forward passes,
  which the scorer sends as large batches (several rounds per model call);
- ``finite-difference`` (ICML 2024, Eq. 14): ``probes + 1`` input gradients;
- ``exact`` (Hutchinson with exact Hessian-vector products): ``probes`` double-backward passes.

For each estimator this prints samples/s and its time over the time of the passes it needs,
measured in the same run on the same model and batches (a forward pass of the same batch shape
under ``inference_mode``, one input gradient, one Hessian-vector product): 1.0 means the
estimator adds nothing beyond its model passes. For the zero-order form it also prints the
speed-up over a per-round loop as the official code writes it (four separate forward passes of
one batch per round). The estimators are batched over samples: no per-sample Python loop.

``--markdown`` prints the same figures as one Markdown table (a line saying what ran, then a
row per estimator), ready for docs/performance.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from privbench_plugins.scorers import curvature
from torch.nn import functional as F

from privbench import Model
from privbench.engine.training import resolve_device
from privbench.plugins import get_registry


def best_times(runs: list[Callable[[], object]], repeats: int, device: torch.device) -> list[float]:
    """The fastest of *repeats* runs of each (after one warm-up), the runs interleaved so that
    a noisy moment on a shared machine hits the estimator and its floor alike."""
    for run in runs:
        run()
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for index, run in enumerate(runs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[index] = min(best[index], time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--h", type=float, default=1e-3)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--markdown", action="store_true", help="Print one Markdown table (docs/performance.md)."
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    registry = get_registry()
    digits = registry.create("dataset", "digits").load(None)
    torch.manual_seed(0)
    net = registry.create("model", args.model).create(digits.input_shape, digits.num_classes)
    model = Model(net, digits.mean, digits.std).to(device).eval()
    x = digits.train.x[: args.samples].to(device)
    y = digits.train.y[: args.samples].to(device)
    batches = [(x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, len(x), args.batch)]

    def loss(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(inputs), labels, reduction="none")

    def batched_loss(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss queries as ModelView.loss answers them: forward batches of --batch."""
        with torch.inference_mode():
            return torch.cat(
                [
                    loss(inputs[i : i + args.batch], labels[i : i + args.batch])
                    for i in range(0, len(inputs), args.batch)
                ]
            )

    def gradient() -> None:
        for xb, yb in batches:
            curvature.input_gradient(loss, xb, yb)

    def hvp() -> None:
        for xb, yb in batches:
            curvature.hessian_vector_product(loss, xb, yb, torch.ones_like(xb))

    def estimator(method: str) -> Callable[[], None]:
        def run() -> None:
            g = torch.Generator().manual_seed(0)
            for xb, yb in batches:
                if method == "zero-order":
                    curvature.zero_order(batched_loss, xb, yb, args.h, args.probes, g)
                elif method == "finite-difference":
                    curvature.finite_difference(loss, xb, yb, args.h, args.probes, g, "norm", True)
                else:
                    curvature.exact(loss, xb, yb, args.probes, g, "trace")

        return run

    def per_round_loop() -> None:
        """The official code's shape: per round, four forward passes of one batch each."""
        g = torch.Generator().manual_seed(0)
        for xb, yb in batches:
            total = torch.zeros(len(xb), device=device)
            for _ in range(args.probes):
                u = args.h * curvature.rademacher(xb.shape[1:], g).to(xb)
                v = args.h * curvature.rademacher(xb.shape[1:], g).to(xb)
                with torch.inference_mode():
                    t1, t2 = loss(xb + v + u, yb), loss(xb - v + u, yb)
                    t3, t4 = loss(xb + v - u, yb), loss(xb - v - u, yb)
                total += ((t1 - t2 - t3 + t4) / (4 * args.h)).abs()

    # The zero-order floor: the same 4 x probes query volume per batch, in the same forward
    # batches, without drawing probes (timed directly: multiplying one pass by 40 would scale
    # its noise and per-call overhead too).
    wide = [(xb.repeat(4 * args.probes, 1, 1, 1), yb.repeat(4 * args.probes)) for xb, yb in batches]

    def forward_wide() -> None:
        for xb, yb in wide:
            batched_loss(xb, yb)

    plans = {
        "zero-order": (forward_wide, 1, "4 x probes forwards, batched"),
        "finite-difference": (gradient, args.probes + 1, "probes + 1 input gradients"),
        "exact": (hvp, args.probes, "probes Hessian-vector products"),
    }

    def measure(method: str) -> tuple[float, float, float | None]:
        """The estimator's seconds, its floor's, and (zero-order) the per-round loop's."""
        unit, passes, _ = plans[method]
        runs = [estimator(method), unit] + ([per_round_loop] if method == "zero-order" else [])
        seconds, unit_seconds, *loop = best_times(runs, args.repeats, device)
        return seconds, unit_seconds * passes, loop[0] if loop else None

    # Mixed precision: the same probes under bfloat16 autocast against float32, on one batch.
    # Finite differences of losses at steps of 1e-3 are what bfloat16's 8-bit mantissa loses.
    def bfloat16_error(method: str) -> float:
        """Median relative error of bfloat16 autocast against float32 on the first batch."""
        xb, yb = batches[0]
        values = []
        for dtype in (None, torch.bfloat16):
            g = torch.Generator().manual_seed(0)
            context = (
                torch.autocast(device.type, dtype=dtype)
                if dtype
                else torch.autocast(device.type, enabled=False)
            )
            with context:
                if method == "zero-order":
                    value = curvature.zero_order(batched_loss, xb, yb, args.h, args.probes, g)
                elif method == "finite-difference":
                    value = curvature.finite_difference(
                        loss, xb, yb, args.h, args.probes, g, "norm", True
                    )
                else:
                    value = curvature.exact(loss, xb, yb, args.probes, g, "trace")
            values.append(value.double())
        error = ((values[1] - values[0]).abs() / values[0].abs().clamp_min(1e-12)).median()
        return float(error)

    threads = f"{torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    if args.markdown and device.type == "cuda":
        threads += f" ({torch.cuda.get_device_name(device)})"
    heading = (
        f"{args.model} on {len(x)} digits, batches of {args.batch}, {args.probes} probes, "
        f"{threads}, torch {torch.__version__}"
    )
    if args.markdown:
        print_markdown(heading, plans, measure, bfloat16_error, len(x), args.repeats)
        return
    print(heading)
    print(f"{'method':<18} {'seconds':>8} {'samples/s':>10} {'floor':>8}  ratio  (the floor)")
    for method, (_, _, what) in plans.items():
        seconds, floor, loop = measure(method)
        print(
            f"{method:<18} {seconds:8.3f} {len(x) / seconds:10.0f} {floor:8.3f}  "
            f"{seconds / floor:5.2f}  ({what})"
        )
        if loop is not None:
            shape = "per-round loop (official shape)"
            print(f"{'':<18} {shape} {loop:.3f} s: ours is {loop / seconds:.2f}x faster")
    print("bfloat16 autocast against float32 (one batch, same probes): median relative error")
    for method in plans:
        print(f"{method:<18} {bfloat16_error(method):8.1%}")


def print_markdown(
    heading: str,
    plans: dict[str, tuple[object, int, str]],
    measure: Callable[[str], tuple[float, float, float | None]],
    bfloat16_error: Callable[[str], float],
    samples: int,
    repeats: int,
) -> None:
    """The figures as a line saying what ran and one Markdown table, a row per estimator."""
    print(f"{heading}; best of {repeats} repeats.")
    print()
    print(
        "| form | passes it needs (the floor) | seconds | samples/s | floor (s) "
        "| ratio to floor | speed-up over per-round loop | bfloat16 error |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for method, (_, _, what) in plans.items():
        seconds, floor, loop = measure(method)
        speed_up = f"{loop / seconds:.2f}x" if loop is not None else ""
        print(
            f"| {method} | {what} | {seconds:.3f} | {samples / seconds:.0f} | {floor:.3f} "
            f"| {seconds / floor:.2f} | {speed_up} | {bfloat16_error(method):.1%} |"
        )


if __name__ == "__main__":
    main()
