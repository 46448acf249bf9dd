"""The figures of a run's HTML page (:mod:`privbench.results.report`): the log-log ROC of every
attack with its TPRs at 0.1% and 1% FPR marked, member and non-member score histograms, and the
run folder's PNGs as embedded images.

Plots are inline SVG without XML namespace declarations (an HTML parser needs none, and a page
that names no URL is easy to check); PNGs are base64 ``data:`` URIs. Text from the record is
escaped here as on the rest of the page.
"""

from __future__ import annotations

import base64
import math
import re
from html import escape
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from safetensors import SafetensorError
from safetensors.torch import load_file

from privbench.analysis.metrics import tpr_on_grid
from privbench.results.parts import AttackResult
from privbench.results.plots import figure_svg, images_png, mathtext_safe, roc_figure
from privbench.results.result import VULNERABLE_IMAGES, AuditResult

MAX_CURVE_POINTS = 2000
"""A full ROC longer than this is drawn at this many log-spaced FPRs (never above the curve):
every distinct score of a large run would make the inline SVG megabytes long."""
MARKED = ((1e-3, "tpr_at_0_1_fpr", "0.1%"), (1e-2, "tpr_at_1_fpr", "1%"))
"""The FPRs marked on the ROC, with the metric that holds each attack's TPR there."""
MEMBERS, NON_MEMBERS = "#c0392b", "#1f5fa8"


def number(value: object, digits: int = 4) -> str:
    """A number as the page shows it (HTML): a dash for none or NaN, ∞ for infinity."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if isinstance(value, float) and math.isinf(value):
        return "&infin;" if value > 0 else "&minus;&infin;"
    return f"{value:.{digits}f}" if isinstance(value, float) else escape(str(value))


def inline_svg(figure: Figure, salt: str) -> str:
    """*figure* as the leaderboard inlines it (ids salted), less the namespace attributes."""
    svg = figure_svg(figure, salt)
    end = svg.index(">")
    return re.sub(r'\s+xmlns(?::\w+)?="[^"]*"', "", svg[:end]) + svg[end:]


def png_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` holding *png* as a ``data:`` URI (the page requests nothing)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def png_image(path: Path | None, alt: str) -> str | None:
    """An ``<img>`` holding the PNG at *path* (None when there is no file)."""
    return None if path is None else png_tag(path.read_bytes(), alt)


def curve(attack: AttackResult) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The attack's ROC and what it was drawn from: the full curve from the per-sample scores,
    else the stored compact one (None: neither, a record from before both were kept)."""
    if attack.scores is not None and len(attack.scores):
        fpr, tpr = attack.scores.roc()
        if len(fpr) <= MAX_CURVE_POINTS:
            return fpr, tpr, "every distinct score"
        # As the stored ROC is made (roc_points), less its rounding.
        floor = np.log10(fpr[fpr > 0].min())
        grid = np.unique(np.r_[0.0, np.logspace(floor, 0.0, MAX_CURVE_POINTS)])
        return grid, tpr_on_grid(fpr, tpr, grid), f"{MAX_CURVE_POINTS} log-spaced FPRs"
    if attack.roc is not None:
        return attack.roc.fpr, attack.roc.tpr, "the stored compact ROC"
    return None


def roc_section(attacks: tuple[AttackResult, ...]) -> str:
    """Every attack's log-log ROC in one figure, dotted lines at 0.1% and 1% FPR with each
    attack's TPR there marked, and the attacks that have no curve named."""
    if not attacks:
        return '<p class="note">No membership attack in this run, so no ROC.</p>'
    curves, colors, sources, drawn = {}, {}, {}, []
    for index, attack in enumerate(attacks):
        found = curve(attack)
        if found is None:
            continue
        label = mathtext_safe(attack.name)
        colors[label] = f"C{index % 10}"  # the same colour for its markers
        curves[label] = (found[0], found[1], attack.metrics.auc)
        sources[attack.name] = found[2]
        drawn.append((attack, label))
    missing = ", ".join(a.name for a in attacks if a.name not in sources)
    note = f'<p class="note">No scores or stored ROC: {escape(missing)}</p>' if missing else ""
    if not curves:
        return note
    figure = roc_figure(curves, title="membership attacks", colors=colors, size=(6.4, 5.6))
    axes = figure.axes[0]
    floor = axes.get_ylim()[0]
    marks = []
    for at, key, text in MARKED:
        axes.axvline(at, color="grey", linestyle=":", linewidth=1)
        axes.text(
            at, 0.99, f" {text} FPR", transform=axes.get_xaxis_transform(), fontsize=7,
            va="top", color="dimgrey",
        )  # fmt: skip
        for attack, label in drawn:
            tpr = getattr(attack.metrics, key)
            if math.isfinite(tpr):
                # A TPR of 0 has no place on a log axis: it sits on the bottom one.
                axes.plot(
                    [at], [max(tpr, floor)], marker="o", markersize=6, color=colors[label],
                    markeredgecolor="black", markeredgewidth=0.6, clip_on=False, zorder=4,
                )  # fmt: skip
        values = ", ".join(f"{escape(a.name)} {number(getattr(a.metrics, key))}" for a, _ in drawn)
        marks.append(f"at {text} FPR: {values}")
    source = "; ".join(f"{escape(name)} from {escape(how)}" for name, how in sources.items())
    caption = (
        "One curve per attack over the pooled scores of every target turn; dotted lines at 0.1% "
        "and 1% FPR, with each attack's TPR there marked (a TPR of 0 on the bottom axis): "
        f"{'; '.join(marks)}. Drawn: {source}."
    )
    svg = inline_svg(figure, "privbench-report-roc")
    return f'<figure class="roc">{svg}<figcaption>{caption}</figcaption></figure>{note}'


def histogram(attack: AttackResult, index: int) -> str:
    """The attack's scores of members and of non-members as two overlaid histograms."""
    scores = attack.scores
    if scores is None or not len(scores):
        return f'<p class="note">{escape(attack.name)}: no per-sample scores stored.</p>'
    finite = np.isfinite(scores.score)
    values = scores.score[finite].astype(np.float64)
    member = scores.member[finite].astype(bool)
    figure = Figure(figsize=(4.6, 3.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if values.size:
        # A few huge scores (LiRA's tails) would squeeze the rest into one bin: they count in
        # the end bins instead.
        low, high = np.percentile(values, [0.5, 99.5])
        clipped = np.clip(values, low, high)
        bins = np.histogram_bin_edges(clipped, bins=40)
        for truth, name, color in ((True, "members", MEMBERS), (False, "non-members", NON_MEMBERS)):
            shown = clipped[member == truth]
            axes.hist(shown, bins=bins, color=color, alpha=0.45, label=f"{name} ({shown.size})")
            axes.hist(shown, bins=bins, color=color, histtype="step", linewidth=1.2)
        axes.legend(fontsize=8)
    axes.set_xlabel("score (higher: member)", fontsize=9)
    axes.set_ylabel("samples", fontsize=9)
    axes.set_title(mathtext_safe(attack.name), fontsize=9)
    axes.tick_params(labelsize=8)
    figure.tight_layout()
    left_out = int((~finite).sum())
    caption = (
        f"<b>{escape(attack.name)}</b>: scores of members and non-members over every target "
        "turn, in 40 bins between the 0.5th and 99.5th percentiles (scores beyond them count in "
        "the end bins)" + (f"; {left_out} non-finite score(s) left out" if left_out else "")
    )
    svg = inline_svg(figure, f"privbench-report-hist-{index}")
    return (
        f'<figure class="histogram" data-attack="{escape(attack.name)}">{svg}'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def vulnerable_images(result: AuditResult) -> dict[str, torch.Tensor]:
    """The run's stored images of the members each attack was surest of, by attack name
    (none when the folder has no such file or it cannot be read: the page then says so)."""
    path = result.files.get(VULNERABLE_IMAGES)
    if path is None:
        return {}
    try:
        return load_file(str(path))
    except (OSError, SafetensorError):
        return {}


def vulnerable_image(stored: dict[str, torch.Tensor], attack: AttackResult) -> str | None:
    """An ``<img>`` of *attack*'s most vulnerable members under their ids, or None."""
    images = stored.get(attack.name)
    if images is None or images.ndim != 4 or not len(images):
        return None
    return png_tag(images_png(images, titles=[f"#{s}" for s in attack.vulnerable]), attack.name)
