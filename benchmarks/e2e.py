"""Where the time of a suite goes, stage by stage, on a cold store: shares measured in one run.

    .venv/bin/python benchmarks/e2e.py [--suite benchmarks/smoke.toml] [--bench-args "-j 2"]
        [--device auto|cpu|cuda] [--markdown]

Runs ``privbench bench SUITE`` as a user would (a fresh process, a fresh workspace), takes its
wall time, then splits it by the run's own timing records:

- training: every model's ``train_seconds`` (its ``meta.json``);
- signal extraction: every cached logits tensor's compute seconds (population logits under each
  query augmentation, test-split logits), kept with each tensor in the store;
- scoring: every cached scorer tensor's compute seconds (per-sample statistics such as input
  loss curvature or LiRA's logit-scaled confidences);
- attacks: each attack's own work (its recorded cost minus the signals it read);
- start-up and plan: the wall time of ``privbench bench SUITE --plan`` on the same cold
  workspace (imports, plugin loading, validating every cell, laying out the jobs), which every
  bench pays before its first job;
- the rest: the jobs' data loading and hashing, model loading, metrics and writing results.

A regression in any stage shows as a change in its share. With ``-j N`` or Ray the stages run
in parallel, so their sum may exceed the wall time.

A suite's cells run on ``auto`` (CUDA when present). ``--device cpu`` hides the GPUs from the
bench (``CUDA_VISIBLE_DEVICES=""``); ``--device cuda`` refuses to start without one and checks
that every run recorded a CUDA device. ``--markdown`` prints the stages as a Markdown table,
ready for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from privbench.engine.store import Workspace

ROOT = Path(__file__).resolve().parent.parent


def stage_seconds(workspace: Workspace) -> dict[str, float]:
    """Seconds per stage from what the run recorded in *workspace*."""
    stages = dict.fromkeys(("training", "signal extraction", "scoring", "attacks"), 0.0)
    for meta in workspace.models.glob("*/*/meta.json"):
        stages["training"] += json.loads(meta.read_text())["train_seconds"]
    for path in workspace.signals.glob("*/*/*.safetensors"):
        seconds = workspace.tensor_seconds(path.parent.name, path.stem) or 0.0
        stages["scoring" if path.stem.startswith("scorer-") else "signal extraction"] += seconds
    with sqlite3.connect(workspace.database) as connection:
        for (record,) in connection.execute("SELECT record FROM runs"):
            for attack in json.loads(record)["attacks"]:
                stages["attacks"] += attack["seconds"] - attack.get("signal_seconds", 0.0)
    return stages


def run_devices(workspace: Workspace) -> list[str]:
    """The devices the runs in *workspace* recorded (``cpu``, ``cuda:0``, ...), sorted."""
    with sqlite3.connect(workspace.database) as connection:
        return sorted(
            {
                json.loads(record)["spec"]["device"]
                for (record,) in connection.execute("SELECT record FROM runs")
            }
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=str(ROOT / "benchmarks" / "smoke.toml"))
    parser.add_argument("--bench-args", default="", help="More flags for privbench bench.")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="Where the cells run (a suite's cells run on auto: CUDA when present).",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="Print a Markdown table (docs/performance.md)."
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but CUDA is not available here")
    environment = dict(os.environ)
    if args.device == "cpu":
        environment["CUDA_VISIBLE_DEVICES"] = ""
    # The console script beside this interpreter, as a user runs it (else python -m privbench).
    script = Path(sys.executable).with_name("privbench")
    privbench = [str(script)] if script.is_file() else [sys.executable, "-m", "privbench"]
    with tempfile.TemporaryDirectory() as root:
        command = [*privbench, "bench", args.suite, "-w", root, "-q"]
        command += shlex.split(args.bench_args)
        started = time.perf_counter()
        subprocess.run([*command, "--plan"], check=True, stdout=subprocess.DEVNULL, env=environment)
        planning = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=environment)
        wall = time.perf_counter() - started
        stages = {"start-up and plan": planning, **stage_seconds(Workspace(root))}
        devices = run_devices(Workspace(root))
    if args.device != "auto" and (
        not devices or any(not d.startswith(args.device) for d in devices)
    ):
        recorded = ", ".join(devices) or "no run"
        sys.exit(f"e2e: --device {args.device} asked for, but the bench recorded {recorded}")
    if args.markdown:
        print_markdown(args.suite, args.bench_args, devices, wall, stages)
        return
    print(f"privbench bench {Path(args.suite).name} {args.bench_args}".rstrip())
    print(f"cold store, wall {wall:.1f} s")
    print(f"{'stage':<19} {'seconds':>8} {'share':>6}")
    for stage, seconds in stages.items():
        print(f"{stage:<19} {seconds:8.2f} {seconds / wall:6.1%}")
    rest = wall - sum(stages.values())
    print(f"{'the rest':<19} {rest:8.2f} {rest / wall:6.1%}  (data and model loading, writing)")


def print_markdown(
    suite: str, bench_args: str, devices: list[str], wall: float, stages: dict[str, float]
) -> None:
    """A line saying what ran, then the stages, the rest and the wall as a Markdown table."""
    bench = f"privbench bench {Path(suite).name} {bench_args}".rstrip()
    on = ", ".join(devices) or "no recorded run"
    print(f"`{bench}` on a cold store, runs on {on}, torch {torch.__version__}: wall {wall:.1f} s.")
    print()
    print("| stage | seconds | share |")
    print("|---|---:|---:|")
    for stage, seconds in stages.items():
        print(f"| {stage} | {seconds:.2f} | {seconds / wall:.0%} |")
    rest = wall - sum(stages.values())
    print(
        f"| the rest (data and model loading, writing results) | {rest:.2f} | {rest / wall:.0%} |"
    )
    print(f"| wall | {wall:.1f} | |")


if __name__ == "__main__":
    main()
