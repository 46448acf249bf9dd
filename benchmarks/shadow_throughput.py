"""Shadow-pool throughput: K sequential trainings against one K-wide ensemble, in one run.

    .venv/bin/python benchmarks/shadow_throughput.py [--model small-cnn] [--models 4 16]
        [--members 500] [--epochs 10] [--device auto|cpu|cuda]

For each K, trains K models of the pool (each on its own random half-sized subset of digits,
with its own seed) one after the other with the standard trainer, then the same K as one
ensemble (:mod:`privbench.engine.ensemble`: stacked parameters, one vmapped pass per step),
and prints models/hour for both, the speed-up, and the largest weight difference between the
two (the ensemble trains the same models; only floating-point summation order differs) and
both pools' mean test accuracy.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from privbench import Model, TrainingRecipe
from privbench.engine.ensemble import fit_ensemble
from privbench.engine.training import StandardTrainer, resolve_device
from privbench.plugins import get_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--models", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    registry = get_registry()
    digits = registry.create("dataset", "digits").load(None)
    recipe = TrainingRecipe(epochs=args.epochs, batch_size=args.batch)
    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    print(
        f"{args.model}, {args.members} members each, {args.epochs} epochs, batch {args.batch}, "
        f"{where}, torch {torch.__version__}"
    )
    print(f"{'K':>4} {'sequential/h':>13} {'ensemble/h':>11} {'speed-up':>9} {'max |dw|':>9}  acc")
    test_x, test_y = digits.test.x.to(device), digits.test.y.to(device)

    def accuracy(models: list[Model]) -> float:
        with torch.no_grad():
            return float(
                np.mean([(m(test_x).argmax(1) == test_y).float().mean().item() for m in models])
            )

    warm_up = True  # the first measured K would otherwise pay one-time start-up costs
    for k in ([min(args.models)] if warm_up else []) + list(args.models):
        rng = np.random.default_rng(k)
        data = [
            digits.train.subset(rng.permutation(len(digits.train))[: args.members])
            for _ in range(k)
        ]
        models = []
        for seed in range(k):
            torch.manual_seed(seed)
            net = registry.create("model", args.model).create(
                digits.input_shape, digits.num_classes
            )
            models.append(Model(net, digits.mean, digits.std).to(device))
        sequential = [copy.deepcopy(m) for m in models]

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        sync()
        started = time.perf_counter()
        for seed, (model, subset) in enumerate(zip(sequential, data, strict=True)):
            StandardTrainer(recipe, seed=seed, device=device).fit(model, subset)
        sync()
        apart = time.perf_counter() - started
        trainers = [StandardTrainer(recipe, seed=seed, device=device) for seed in range(k)]
        started = time.perf_counter()
        fit_ensemble(models, data, trainers)
        sync()
        together = time.perf_counter() - started
        gap = max(
            (a.state_dict()[name] - value).abs().max().item()
            for a, b in zip(models, sequential, strict=True)
            for name, value in b.state_dict().items()
        )
        if warm_up:
            warm_up = False
            continue
        print(
            f"{k:4d} {3600 * k / apart:13.0f} {3600 * k / together:11.0f} "
            f"{apart / together:8.2f}x {gap:9.1e}  {accuracy(sequential):.3f} / "
            f"{accuracy(models):.3f}"
        )


if __name__ == "__main__":
    main()
