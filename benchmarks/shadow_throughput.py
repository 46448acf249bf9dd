"""Shadow-pool throughput: K models by a bare loop (the floor), by the standard trainer one after
the other, and as one ensemble, interleaved in one run.

    .venv/bin/python benchmarks/shadow_throughput.py [--dataset digits|fashion-mnist]
        [--model M] [--models 4 16] [--members 500] [--epochs 10] [--batch 64] [--repeats N]
        [--threads N] [--cpu-time] [--device auto|cpu|cuda] [--markdown]
        [--profile floor|sequential|ensemble]

For each K, K models of the pool (each on its own random subset of ``--members`` training
images, with its own seed; ``small-cnn`` on 8x8 digits or ``conv-fc`` on 28x28 Fashion-MNIST
unless ``--model`` says otherwise) are trained three ways, by the recipe's defaults (SGD with
momentum and weight decay, cosine schedule, no augmentation) at the given batch size and epochs:

- **floor**: a minimal PyTorch loop, one model after the other: each epoch a random permutation
  on the device, then ``for xb, yb in batches: opt.zero_grad(); F.cross_entropy(model(xb),
  yb).backward(); opt.step()`` with ``torch.optim.SGD`` of the same settings and the same cosine
  schedule (bfloat16 autocast on CUDA, as the trainer). It trains the same ``nn.Module`` as the
  trainer, privbench's ``Model`` wrapper included: the wrapper's normalisation ``(x - mean) /
  std`` is part of the model that any training loop has to run, so leaving it out would credit
  the floor with work the model needs, not with overhead the trainer adds;
- **sequential**: :class:`~privbench.engine.training.StandardTrainer`, one model after the other
  (what ``PRIVBENCH_ENSEMBLE=0`` runs);
- **ensemble**: :func:`~privbench.engine.ensemble.fit_ensemble`, all K at once.

Each K first trains one epoch of each way (start-up costs, and on CUDA cuDNN's search for each
new shape: an ensemble's grouped convolutions differ with K), then ``--repeats`` rounds (3 on
the CPU, 2 on CUDA, which keeps ``benchmarks/gpu_check.sh``'s budget), the three ways in turn
and in a rotating order, so that a busy moment on a shared machine hits all three alike. Each
way's fastest round counts. Printed per K: models/hour of each, ``seq/floor`` (the trainer's
time over the floor's: 1.00 means the trainer adds nothing to the loop it must run), the
ensemble's speed-up over sequential, the largest weight difference between the sequential and
the ensemble models (the same models up to floating-point summation order) and both pools' mean
test accuracy (on at most 2,000 test images), each K's row as soon as it is measured. On the CPU
the line above the table gives the load average at the start and a line below it the load at the
end, since other work on the machine slows all three ways (and not alike: see
docs/results/ensemble_profile.md).

``--cpu-time`` times by the process's CPU time instead of the wall clock (CPU only). With
``--threads 1`` that is the work itself, without the waits for a core that other work on a
shared machine causes, so its ratios hold on a loaded machine; with more threads it would also
count the threads' spinning while they wait for each other, so it is refused there.

``--profile WAY`` instead runs one way once at the first K (after the warm-up) under
``torch.profiler`` and prints its operators by their own time, each input shape apart (what
docs/results/ensemble_profile.md reports).

``--markdown`` prints the same as a line saying what ran, then a Markdown table (header and one
row per K) ready for docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import time
from collections.abc import Callable

import attrs
import numpy as np
import torch
from torch.nn import functional as F

from privbench import Model, TensorData, TrainingRecipe
from privbench.engine.ensemble import fit_ensemble
from privbench.engine.training import StandardTrainer, resolve_device
from privbench.plugins import get_registry

DEFAULT_MODELS = {"digits": "small-cnn", "fashion-mnist": "conv-fc"}
TEST_SAMPLES = 2000


def floor_fit(
    model: Model, data: TensorData, recipe: TrainingRecipe, seed: int, device: torch.device
) -> None:
    """The minimal training loop of *model* with the recipe's optimizer, schedule, batch size
    and epochs (SGD only: the recipe this script builds)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x, y = data.x.to(device), data.y.to(device)
    model.to(device).train()
    opt = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs)
    precision = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    for _ in range(recipe.epochs):
        order = torch.randperm(len(y), generator=generator).to(device)
        for index in order.split(recipe.batch_size):
            xb, yb = x[index], y[index]
            opt.zero_grad()
            with precision:
                loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        schedule.step()
    model.eval()


Pool = list[Model]


def floor(models: Pool, data: list[TensorData], recipe: TrainingRecipe, device: torch.device):
    for seed, (model, subset) in enumerate(zip(models, data, strict=True)):
        floor_fit(model, subset, recipe, seed, device)


def sequential(models: Pool, data: list[TensorData], recipe: TrainingRecipe, device: torch.device):
    for seed, (model, subset) in enumerate(zip(models, data, strict=True)):
        StandardTrainer(recipe, seed=seed, device=device).fit(model, subset)


def ensemble(models: Pool, data: list[TensorData], recipe: TrainingRecipe, device: torch.device):
    trainers = [StandardTrainer(recipe, seed=seed, device=device) for seed in range(len(models))]
    fit_ensemble(models, data, trainers)


WAYS: list[Callable[[Pool, list[TensorData], TrainingRecipe, torch.device], None]] = [
    floor,
    sequential,
    ensemble,
]
"""The three ways to train a pool, in the table's order."""


def profile(way: Callable[..., None], start: Pool, data: list[TensorData], recipe: TrainingRecipe):
    """Run *way* once under ``torch.profiler`` and print its operators by self time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    device = next(start[0].parameters()).device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    models = copy.deepcopy(start)
    began = time.perf_counter()
    with profiler(activities=activities, record_shapes=True) as run:
        way(models, data, recipe, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    print(f"{way.__name__}: {time.perf_counter() - began:.3f} s under the profiler")
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = run.key_averages(group_by_input_shape=True).table(sort_by=sort, row_limit=20)
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DEFAULT_MODELS), default="digits")
    parser.add_argument("--model", help="default: small-cnn on digits, conv-fc on fashion-mnist")
    parser.add_argument("--models", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, help="rounds per K (default: 3 on CPU, 2 on CUDA)")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: its own)")
    parser.add_argument(
        "--cpu-time", action="store_true", help="Time by CPU time (with --threads 1 only)."
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", choices=[way.__name__ for way in WAYS])
    parser.add_argument(
        "--markdown", action="store_true", help="Print a Markdown table (docs/performance.md)."
    )
    args = parser.parse_args()
    if min(args.models) < 2:
        parser.error("--models: an ensemble needs at least 2 models")

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time and (device.type != "cpu" or torch.get_num_threads() != 1):
        parser.error("--cpu-time measures one CPU thread: add --threads 1 (and no CUDA)")
    clock = time.process_time if args.cpu_time else time.perf_counter
    repeats = args.repeats or (2 if device.type == "cuda" else 3)
    model_name = args.model or DEFAULT_MODELS[args.dataset]
    registry = get_registry()
    dataset = registry.create("dataset", args.dataset).load(None)
    recipe = TrainingRecipe(epochs=args.epochs, batch_size=args.batch)
    one_epoch = attrs.evolve(recipe, epochs=1)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU, {torch.get_num_threads()} threads"
    load_before = os.getloadavg()[0]
    test_x = dataset.test.x[:TEST_SAMPLES].to(device)
    test_y = dataset.test.y[:TEST_SAMPLES].to(device)

    def accuracy(models: list[Model]) -> float:
        with torch.no_grad():
            return float(
                np.mean([(m(test_x).argmax(1) == test_y).float().mean().item() for m in models])
            )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    ran = (
        f"{model_name} on {args.dataset}, {args.members} images each, {args.epochs} epochs, "
        f"batch {args.batch}, {where}, torch {torch.__version__}, best of {repeats} rounds"
        f"{' by CPU time' if args.cpu_time else ''}"
    )
    if device.type == "cpu":
        ran += f", load average {load_before:.1f} at the start"
    if args.profile:
        print(ran)
    elif args.markdown:
        print(f"{ran}:\n")
        print(
            "| model | K | floor models/h | sequential models/h | ensemble models/h "
            "| sequential / floor | ensemble speed-up | max weight difference "
            "| mean test acc (seq / ens) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|", flush=True)
    else:
        print(ran)
        print(
            f"{'K':>4} {'floor/h':>9} {'sequential/h':>13} {'ensemble/h':>11} {'seq/floor':>10} "
            f"{'speed-up':>9} {'max |dw|':>9}  acc (seq / ens)",
            flush=True,
        )
    for k in args.models:  # each K's row as soon as it is measured (a timeout keeps the rest)
        rng = np.random.default_rng(k)
        data = [
            dataset.train.subset(rng.permutation(len(dataset.train))[: args.members])
            for _ in range(k)
        ]
        start = []
        for seed in range(k):
            torch.manual_seed(seed)
            net = registry.create("model", model_name).create(
                dataset.input_shape, dataset.num_classes
            )
            start.append(Model(net, dataset.mean, dataset.std).to(device))

        for way in WAYS:  # warm-up: one epoch each
            way(copy.deepcopy(start), data, one_epoch, device)
        if args.profile:
            profile(next(w for w in WAYS if w.__name__ == args.profile), start, data, recipe)
            return
        best = [float("inf")] * len(WAYS)
        trained: list[list[Model]] = [[] for _ in WAYS]
        for round_ in range(repeats):
            for turn in range(len(WAYS)):
                which = (turn + round_) % len(WAYS)  # a rotating order
                models = copy.deepcopy(start)
                sync()
                began = clock()
                WAYS[which](models, data, recipe, device)
                sync()
                best[which] = min(best[which], clock() - began)
                trained[which] = models
        gap = max(
            (a.state_dict()[name] - value).abs().max().item()
            for a, b in zip(trained[2], trained[1], strict=True)
            for name, value in b.state_dict().items()
            if value.is_floating_point()
        )
        fl, seq, ens = (3600 * k / seconds for seconds in best)
        ratio, speed_up = best[1] / best[0], best[1] / best[2]
        acc_seq, acc_ens = accuracy(trained[1]), accuracy(trained[2])
        if args.markdown:
            print(
                f"| {model_name} ({args.dataset}) | {k} | {fl:.0f} | {seq:.0f} | {ens:.0f} "
                f"| {ratio:.2f}x | {speed_up:.2f}x | {gap:.0e} | {acc_seq:.3f} / {acc_ens:.3f} |",
                flush=True,
            )
        else:
            print(
                f"{k:4d} {fl:9.0f} {seq:13.0f} {ens:11.0f} {ratio:9.2f}x {speed_up:8.2f}x "
                f"{gap:9.1e}  {acc_seq:.3f} / {acc_ens:.3f}",
                flush=True,
            )
    if device.type == "cpu":
        print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f}.")


if __name__ == "__main__":
    main()
