"""How much of an audit is training, and what the store saves: ratios measured in one run.

    .venv/bin/python benchmarks/engine_overhead.py [--shadows 7] [--epochs 30]

Prints, for the default digits audit: the share of the first run spent inside training loops
(the rest is data loading, hashing, signals, attacks, metrics and writing results), and how much
faster a second, identical run is when every model comes from the store.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import privbench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shadows", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    settings = dict(
        attacks=["loss", "confidence"], epochs=args.epochs, shadows=args.shadows, device="cpu"
    )
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        first = privbench.audit(workspace=root, **settings)
        first_seconds = time.perf_counter() - started
        training = sum(
            json.loads(path.read_text())["train_seconds"]
            for path in Path(root, "models").glob("*/*/meta.json")
        )
        started = time.perf_counter()
        privbench.audit(workspace=root, **settings)
        second_seconds = time.perf_counter() - started
    models = first.training.models
    print(f"audit of {models} models on digits ({args.epochs} epochs), 2 attacks")
    print(f"first run: {first_seconds:.2f} s, of which training loops {training:.2f} s")
    print(f"training share of the first run: {training / first_seconds:.3f}")
    print(f"second run (all models reused): {second_seconds:.2f} s")
    print(f"speed-up from the store: {first_seconds / second_seconds:.1f}x")


if __name__ == "__main__":
    main()
