"""What a curvature pass costs against the model passes it needs: ratios measured in one run.

    .venv/bin/python benchmarks/curvature_cost.py [--model small-cnn] [--samples 1024]
        [--batch 256] [--probes 10] [--repeats 3]

Each estimator of the ``curvature`` scorer needs a known number of model passes per sample:

- ``zero-order`` (Curvature Clues): 4 loss queries per round, ``4 x probes`` forward passes;
- ``finite-difference`` (ICML 2024, Eq. 14): ``probes + 1`` input gradients;
- ``exact`` (Hutchinson with exact Hessian-vector products): ``probes`` double-backward passes.

For each estimator this prints its time over the time of the passes it needs, measured in the
same run on the same batches (forward passes under ``no_grad``, one input gradient, one
Hessian-vector product): 1.0 means the estimator adds nothing beyond its model passes, more is
our overhead (probe generation, concatenation, reductions). The scorer is batched over samples,
so the ratios also show that no per-sample Python loop hides in it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from privbench_plugins.scorers import curvature
from torch.nn import functional as F

from privbench import Model
from privbench.plugins import get_registry


def best_time(run: Callable[[], object], repeats: int) -> float:
    """The fastest of *repeats* runs (after one warm-up), the usual guard against noise."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--h", type=float, default=1e-3)
    args = parser.parse_args()

    registry = get_registry()
    digits = registry.create("dataset", "digits").load(None)
    torch.manual_seed(0)
    net = registry.create("model", args.model).create(digits.input_shape, digits.num_classes)
    model = Model(net, digits.mean, digits.std).eval()
    x, y = digits.train.x[: args.samples], digits.train.y[: args.samples]
    batches = [(x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, len(x), args.batch)]

    def loss(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(inputs), labels, reduction="none")

    def forward() -> None:
        with torch.no_grad():
            for xb, yb in batches:
                loss(xb, yb)

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
                    with torch.no_grad():
                        curvature.zero_order(loss, xb, yb, args.h, args.probes, g)
                elif method == "finite-difference":
                    curvature.finite_difference(loss, xb, yb, args.h, args.probes, g, "norm", True)
                else:
                    curvature.exact(loss, xb, yb, args.probes, g, "trace")

        return run

    unit = {
        "forward": best_time(forward, args.repeats),
        "gradient": best_time(gradient, args.repeats),
        "hvp": best_time(hvp, args.repeats),
    }
    # A zero-order round queries 4 x batch images at once: time that batch shape as the unit.
    wide = [(torch.cat([xb] * 4), yb.repeat(4)) for xb, yb in batches]

    def forward_wide() -> None:
        with torch.no_grad():
            for xb, yb in wide:
                loss(xb, yb)

    needs = {
        "zero-order": (best_time(forward_wide, args.repeats) * args.probes, "4 x probes forwards"),
        "finite-difference": (unit["gradient"] * (args.probes + 1), "probes + 1 input gradients"),
        "exact": (unit["hvp"] * args.probes, "probes Hessian-vector products"),
    }
    print(
        f"{args.model} on {len(x)} digits, batches of {args.batch}, {args.probes} probes, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"unit passes over all samples: forward {unit['forward']:.3f} s, input gradient "
        f"{unit['gradient']:.3f} s ({unit['gradient'] / unit['forward']:.1f}x forward), "
        f"Hessian-vector product {unit['hvp']:.3f} s ({unit['hvp'] / unit['forward']:.1f}x)"
    )
    print(f"{'method':<18} {'seconds':>8} {'needs':>8}  ratio  (what it needs)")
    for method, (needed, what) in needs.items():
        seconds = best_time(estimator(method), args.repeats)
        print(f"{method:<18} {seconds:8.3f} {needed:8.3f}  {seconds / needed:5.2f}  ({what})")


if __name__ == "__main__":
    main()
