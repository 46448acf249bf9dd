"""Result files: the log-log ROC plot (as LiRA reports it) and atomic JSON.

Both are written to a temporary file beside the target and renamed over it, so a reader (or a
crash) never sees half a file.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 honours the umask; mkstemp's 0o600 would survive the rename.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _jsonable(value: Any) -> Any:
    # NumPy scalars and arrays keep their numbers; anything else unknown (paths) becomes text.
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n"
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def roc_figure(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike, float | None]],
    *,
    title: str,
    colors: Mapping[str, str] | None = None,
    size: tuple[float, float] = (5.2, 5.0),
) -> Figure:
    """Log-log ROC curves, ``label -> (fpr, tpr, auc)``, as a Figure (``auc`` may be None).

    Log axes show the low-FPR regime that matters for privacy (Carlini et al. 2022). The axes
    start at the smallest non-zero FPR any curve reaches (about ``1/n_nonmembers``), kept
    within [1e-5, 1e-3] so small runs still show the low-FPR decades and huge ones stay legible.
    A bare Agg figure, not pyplot: no global backend switch, no figure left open on errors, and
    the caller chooses the output (a run's PNG, a leaderboard's inline SVG). *colors* (label ->
    colour) keeps one attack's colour across several figures; *size* is in inches.
    """
    figure = Figure(figsize=size, dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    floor = 1.0
    for label, (fpr, tpr, auc) in curves.items():
        fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
        positive = fpr[fpr > 0]
        floor = min(floor, positive.min() if positive.size else 1.0)
        text = f"{label} (AUC {auc:.3f})" if auc is not None else label
        axes.plot(fpr, tpr, label=text, linewidth=1.5, color=(colors or {}).get(label))
    floor = max(min(floor, 1e-3), 1e-5)
    axes.plot([floor, 1], [floor, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    axes.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1.02))
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    return figure


def plot_roc(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike, float | None]],
    path: str | os.PathLike[str],
    *,
    title: str,
) -> None:
    """:func:`roc_figure` saved as a PNG, atomically (a run's ``roc.png``)."""
    figure = roc_figure(curves, title=title)
    _atomic_write(Path(path), lambda handle: figure.savefig(handle, format="png"))
