"""Where the time of a suite goes, stage by stage, on a cold store: shares measured in one run.

    .venv/bin/python benchmarks/e2e.py [--suite benchmarks/smoke.toml] [--bench-args "-j 2"]

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
"""

from __future__ import annotations

import argparse
import json
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=str(ROOT / "benchmarks" / "smoke.toml"))
    parser.add_argument("--bench-args", default="", help="More flags for privbench bench.")
    args = parser.parse_args()
    privbench = Path(sys.executable).with_name("privbench")
    with tempfile.TemporaryDirectory() as root:
        command = [str(privbench), "bench", args.suite, "-w", root, "-q"]
        command += shlex.split(args.bench_args)
        started = time.perf_counter()
        subprocess.run([*command, "--plan"], check=True, stdout=subprocess.DEVNULL)
        planning = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        stages = {"start-up and plan": planning, **stage_seconds(Workspace(root))}
    print(f"privbench bench {Path(args.suite).name} {args.bench_args}".rstrip())
    print(f"cold store, wall {wall:.1f} s")
    print(f"{'stage':<19} {'seconds':>8} {'share':>6}")
    for stage, seconds in stages.items():
        print(f"{stage:<19} {seconds:8.2f} {seconds / wall:6.1%}")
    rest = wall - sum(stages.values())
    print(f"{'the rest':<19} {rest:8.2f} {rest / wall:6.1%}  (data and model loading, writing)")


if __name__ == "__main__":
    main()
