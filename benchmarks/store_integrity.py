"""What verified reads cost: the store's digest-checked writes and reads against plain
safetensors calls on the same tensors, as ratios measured in one run.

    .venv/bin/python benchmarks/store_integrity.py [--repeats 30]

For two model sizes (the built-in small CNN on digits, timm's resnet18 for 32x32 inputs: 11M
parameters, 45 MB) and one signal (the logits of 10,000 samples), prints the median seconds of:
saving a model (safetensors + meta.json, fsync'd) without and with the manifest of digests;
loading it (``load_file`` + ``load_state_dict``) without and with verification; reading a signal
without and with its digest check. A Markdown table, ready for docs/performance.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from privbench.engine.store import Workspace
from privbench.plugins import get_registry


def medians(
    plain: Callable[[], object], verified: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median seconds of each, the two alternated so that a change in the machine's load
    falls on both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for work, spent in zip((plain, verified), times, strict=True):
            started = time.perf_counter()
            work()
            spent.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def plain_save(folder: Path, model: torch.nn.Module) -> None:
    """The store's write before manifests: weights and meta, fsync'd (no digests)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "weights.safetensors"))
    (folder / "meta.json").write_text(json.dumps({"index": 0}))
    for name in ("weights.safetensors", "meta.json"):
        with open(folder / name, "rb+") as handle:
            os.fsync(handle.fileno())


def measure_model(
    ws: Workspace, label: str, model: torch.nn.Module, repeats: int
) -> list[tuple[str, float, float]]:
    """Save and load *model* plainly and through the store, each into a fresh entry."""
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    keys = iter(f"{n:064x}" for n in itertools.count(int(label.encode().hex()[:12], 16) << 40))
    plain = ws.root / "plain" / label.replace("/", "-").replace(" ", "")

    def save_plain() -> None:
        plain_save(plain, model)

    stored: list[str] = []

    def save_verified() -> None:
        stored.append(next(keys))
        ws.save_model(stored[-1], model, {"index": 0})

    def load_plain() -> None:
        model.load_state_dict(load_file(str(plain / "weights.safetensors")))
        json.loads((plain / "meta.json").read_text())

    def load_verified() -> None:
        # A fresh Workspace: the object remembers what it verified (an audit reads each
        # model twice); this is the first read's cost.
        Workspace(ws.root).load_model(stored[-1], model)

    return [
        (f"save {label}, {size / 1e6:.1f} MB", *medians(save_plain, save_verified, repeats)),
        (f"load {label}", *medians(load_plain, load_verified, repeats)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    registry = get_registry()
    models = {
        "small-cnn (digits)": registry.create("model", "small-cnn").create((1, 8, 8), 10),
        "timm/resnet18 (32x32)": registry.create("model", "timm/resnet18").create((3, 32, 32), 10),
    }
    rows = []
    with tempfile.TemporaryDirectory() as root:
        ws = Workspace(root).create()
        for label, model in models.items():
            rows += measure_model(ws, label, model, args.repeats)
        value = torch.randn(10_000, 10)
        ws.cached_tensor("ab" * 32, "signal", lambda: value)
        path = ws.signal_path("ab" * 32, "signal")
        rows.append(
            (
                "read a signal (10,000 x 10 logits)",
                *medians(
                    lambda: load_file(str(path))["value"].clone(),
                    lambda: Workspace(root).stored_tensor("ab" * 32, "signal"),
                    args.repeats,
                ),
            )
        )
    print(f"| operation | plain (s) | verified (s) | ratio |  (median of {args.repeats})")
    print("|---|---|---|---|")
    for what, plain_seconds, verified_seconds in rows:
        print(
            f"| {what} | {plain_seconds:.4f} | {verified_seconds:.4f} | "
            f"{verified_seconds / plain_seconds:.2f}x |"
        )


if __name__ == "__main__":
    main()
