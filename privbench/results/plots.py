"""Plots: log-log ROC curves, as LiRA reports them (Carlini et al. 2022), for a run's
``roc.png`` and the inline SVGs of the leaderboard and run pages (:func:`figure_svg`); and
image grids (a run's most vulnerable samples)."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from privbench.results.files import atomic_write


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
    atomic_write(Path(path), lambda handle: figure.savefig(handle, format="png"))


def images_png(images: torch.Tensor, *, titles: Sequence[str] = (), columns: int = 8) -> bytes:
    """Images in [0, 1] (``K x C x H x W``) as a PNG grid, each under its title (a run's most
    vulnerable samples on its page)."""
    images = images.detach().float().cpu().clamp(0, 1)
    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(1.3 * columns, 1.5 * rows), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, image in enumerate(images):
        ax = axes.flat[k]
        shown = image.permute(1, 2, 0).numpy()
        ax.imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray", vmin=0, vmax=1)
        if k < len(titles):
            ax.set_title(titles[k], fontsize=7)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def mathtext_safe(text: str) -> str:
    """Text for matplotlib: a '$' in a label must not start mathtext."""
    return text.replace("$", r"\$")


def figure_svg(figure: Figure, salt: str) -> str:
    """The figure as inline SVG: fonts as text, no metadata, and every id (matplotlib numbers
    its groups from 1 in each figure) and reference to one prefixed with *salt*, so that several
    figures can share the page."""
    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        metadata = dict.fromkeys(("Creator", "Date", "Format", "Type"))
        figure.savefig(out, format="svg", metadata=metadata)
    text = out.getvalue()
    return re.sub(r'(id="|href="#|url\(#)', rf"\g<1>{salt}-", text[text.index("<svg") :])
