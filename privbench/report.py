"""Result files: the log-log ROC plot (as LiRA reports it) and atomic JSON."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt
import numpy as np


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float | None]],
    path: str | os.PathLike[str],
    *,
    title: str,
) -> None:
    """Log-log ROC curves, ``label -> (fpr, tpr, auc)``, saved as a PNG.

    Log axes show the low-FPR regime that matters for privacy (Carlini et al. 2022); the floor is
    the smallest non-zero FPR any curve can reach.
    """
    figure, axes = plt.subplots(figsize=(5.2, 5.0), dpi=120)
    floor = 1.0
    for label, (fpr, tpr, auc) in curves.items():
        fpr, tpr = np.asarray(fpr), np.asarray(tpr)
        positive = fpr[fpr > 0]
        floor = min(floor, positive.min() if positive.size else 1.0)
        text = f"{label} (AUC {auc:.3f})" if auc is not None else label
        axes.plot(fpr, tpr, label=text, linewidth=1.5)
    floor = max(min(floor, 1e-3), 1e-5)
    grid = np.logspace(np.log10(floor), 0, 100)
    axes.plot(grid, grid, linestyle="--", color="grey", linewidth=1, label="chance")
    axes.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1.02))
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    _atomic_write(Path(path), lambda handle: figure.savefig(handle, format="png"))
    plt.close(figure)
