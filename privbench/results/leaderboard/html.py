"""The leaderboard as one self-contained HTML page: a sortable table, log-log ROC curves of the
attacks per defense and a privacy/utility scatter.

Self-contained because results get mailed, archived and opened offline: no request leaves the
page (its Content-Security-Policy forbids any), the CSS and the sorting script are inline and the
plots are inline SVG whose text stays text (``svg.fonttype = 'none'``), which keeps them small
and sharp. Everything that comes from the database is escaped. A TPR at zero false positives
(too few non-members for its FPR: :mod:`~privbench.results.leaderboard.rows`) is marked ``†``
in the table, explained beneath it and, when it is the ranked metric, in the page's header.
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from privbench.results.leaderboard.rows import (
    MARK,
    TEXT_COLUMNS,
    ZERO_FP_NAMES,
    ZERO_FP_NONMEMBERS,
    columns,
    rank,
    ranking_note,
    zero_fp_note,
)
from privbench.results.plots import figure_svg, mathtext_safe, roc_figure
from privbench.version import __version__

LABELS = {
    "auc": "AUC",
    "tpr_at_0_01_fpr": "TPR@0.01%FPR",
    "tpr_at_0_1_fpr": "TPR@0.1%FPR",
    "tpr_at_1_fpr": "TPR@1%FPR",
    "balanced_accuracy": "bal. acc.",
    "balanced_accuracy_at_eer": "bal. acc. (EER)",
    "advantage": "advantage",
    "epsilon_lower": "ε≥ (95%)",
    "epsilon_gdp": "ε GDP",
    "epsilon_bayes": "ε Bayes",
    "epsilon_one_run": "ε one run",
    "epsilon_estimate": "ε estimate",
    "n_members": "members",
    "n_nonmembers": "non-members",
    "test_accuracy": "test acc.",
    "seconds": "seconds",
    "config": "config",
}

CSS = """
:root { color-scheme: light; --ink: #1d2330; --muted: #5f6b7a; --line: #d9dee5; --accent: #1f5fa8; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1400px; padding: 24px 24px 48px; color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 36px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
.meta, .note, figcaption, caption { color: var(--muted); }
.meta { margin: 0 0 6px; } .meta b { color: var(--ink); font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px;
  font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align: left; padding-top: 6px; font-size: 13px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { text-align: left; } thead th { background: #f3f5f8; border-bottom: 2px solid var(--line); }
tbody tr:nth-child(even) { background: #fafbfc; } tbody tr:hover { background: #eef4fb; }
.num { text-align: right; } th.num button { flex-direction: row-reverse; }
th button { all: unset; cursor: pointer; display: inline-flex; gap: 4px; font-weight: 600; }
th button:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
th button::after { content: "↕"; color: #b3bbc6; font-weight: 400; }
th[aria-sort="descending"] button::after { content: "▼"; color: var(--accent); }
th[aria-sort="ascending"] button::after { content: "▲"; color: var(--accent); }
.ranked { background: #f2f7fd; font-weight: 600; } thead th.ranked { background: #e3edf9; }
.zero-fp { color: #8a4b00; } caption p { margin: 2px 0; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 16px; }
figure { margin: 0; padding: 8px; border: 1px solid var(--line); border-radius: 6px; }
figure svg { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figure.scatter { max-width: 720px; }
figcaption { font-size: 13px; padding: 4px 6px 0; }
.failed td { white-space: normal; vertical-align: top; } .failed td:first-child { width: 30%; }
.failed pre { margin: 0; white-space: pre-wrap; font-size: 12px; }
"""

SCRIPT = """
(() => {
  // Sort the leaderboard by a clicked header: numbers from data-value, empty ones always last.
  const table = document.getElementById("leaderboard");
  const headers = [...table.tHead.rows[0].cells];
  headers.forEach((th, index) => th.addEventListener("click", () => {
    const numeric = th.classList.contains("num");
    const current = th.getAttribute("aria-sort");
    const order = current ? (current === "ascending" ? "descending" : "ascending")
                          : th.dataset.first || (numeric ? "descending" : "ascending");
    const sign = order === "ascending" ? 1 : -1;
    const key = (row) => {
      const cell = row.cells[index];
      if (!numeric) return cell.textContent;
      return cell.dataset.value === "" ? null : Number(cell.dataset.value);
    };
    const rows = [...table.tBodies[0].rows];
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === null || y === null) return (x === null) - (y === null);
      return sign * (numeric ? x - y : x.localeCompare(y));
    });
    table.tBodies[0].append(...rows);
    headers.forEach((other) => other.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", order);
  }));
})();
"""


def _number(column: str, value: Any) -> str:
    if value is None:
        return "&ndash;"
    if column == "seeds":
        return str(value)
    return f"{value:.1f}" if column == "seconds" else f"{value:.4f}"


def _table(rows: list[dict[str, Any]], by: str) -> str:
    rows = rank(rows, by)
    shown = columns(by, rows)
    text_columns = (*TEXT_COLUMNS, "config")
    head = ['<th scope="col" class="num" data-column="rank" data-first="ascending">']
    head[0] += "<button type='button'>rank</button></th>"
    for column in shown:
        classes = ("" if column in text_columns else "num ") + ("ranked" if column == by else "")
        sort = ' aria-sort="descending"' if column == by else ""
        head.append(
            f'<th scope="col" class="{classes.strip()}" data-column="{column}"{sort}>'
            f"<button type='button'>{escape(LABELS.get(column, column))}</button></th>"
        )
    body = []
    for position, row in enumerate(rows, 1):
        cells = [f'<td class="num" data-value="{position}">{position}</td>']
        for column in shown:
            value = row[column]
            if column in text_columns:
                cells.append(f"<td>{escape(str(value))}</td>")
                continue
            data = "" if value is None else repr(float(value))
            classes = "num" + (" ranked" if column == by else "")
            shown_value, title = _number(column, value), ""
            if column in row["tpr_at_zero_fp"]:
                # The value stays sortable (data-value); the mark and its reason are shown.
                classes += " zero-fp"
                shown_value += MARK
                title = (
                    f' title="{ZERO_FP_NAMES[column]} on {row["n_nonmembers"]:,} non-members '
                    f'(fewer than {ZERO_FP_NONMEMBERS[column]:,}): TPR at zero false positives"'
                )
            cells.append(f'<td class="{classes}" data-value="{data}"{title}>{shown_value}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(
        f"<p>{escape(note)}</p>" for note in filter(None, (zero_fp_note(c, rows) for c in shown))
    )
    return (
        '<div class="scroll"><table id="leaderboard">'
        f"<caption><p>Metrics averaged over seeds. Click a header to sort.</p>{notes}</caption>"
        f"<thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _run_label(row: dict[str, Any]) -> tuple[str, str, str, str]:
    """What one pool of models is known by: dataset, model, defense and the config (the
    settings that tell runs under the same first three apart; usually empty)."""
    return (row["dataset"], row["model"], row["defense"], row.get("config", ""))


def _roc_figures(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """One ROC figure per (dataset, model, defense), and the configurations without a stored
    ROC (recorded before ROCs were kept). One attack keeps its colour across figures."""
    attacks = sorted({row["attack"] for row in rows})
    colors = {mathtext_safe(a): f"C{i % 10}" for i, a in enumerate(attacks)}
    # One figure per pool of models: rows of runs with other settings (a config) get their own,
    # whose curves would otherwise overwrite each other's under one attack name.
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    missing = []
    for row in rows:
        if row.get("roc") is None:
            missing.append(
                " / ".join(filter(None, (*(row[c] for c in TEXT_COLUMNS), row.get("config"))))
            )
        else:
            groups[_run_label(row)].append(row)
    figures = []
    for index, ((dataset, model, defense, config), members) in enumerate(groups.items()):
        curves = {
            mathtext_safe(r["attack"]): (r["roc"]["fpr"], r["roc"]["tpr"], r["auc"])
            for r in sorted(members, key=lambda r: r["attack"])
        }
        # The caption names the dataset and model; a config tells figures of one defense apart.
        title = mathtext_safe("\n".join([f"defense {defense}", *textwrap.wrap(config, 56)]))
        figure = roc_figure(curves, title=title, colors=colors, size=(4.3, 4.1))
        svg = figure_svg(figure, f"privbench-roc-{index}")
        caption = f"{escape(dataset)} · {escape(model)} · defense <b>{escape(defense)}</b>"
        if config:
            caption += f" · {escape(config)}"
        figures.append(
            f'<figure class="roc" data-defense="{escape(defense)}">{svg}'
            f"<figcaption>{caption}: one curve per attack, mean over seeds</figcaption></figure>"
        )
    return figures, missing


def _scatter(rows: list[dict[str, Any]], by: str) -> str | None:
    """Test accuracy against the rank metric: each defense's strongest attack, the others faint."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["test_accuracy"] is not None and row[by] is not None:
            groups[_run_label(row)].append(row)
    if not groups:
        return None
    several = len({key[:2] for key in groups}) > 1  # then a label names dataset and model too
    figure = Figure(figsize=(6.8, 4.4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, (key, members) in enumerate(groups.items()):
        color = f"C{index % 10}"
        xs, ys = [m["test_accuracy"] for m in members], [m[by] for m in members]
        axes.scatter(xs, ys, s=30, color=color, alpha=0.45, linewidths=0)
        best = max(members, key=lambda m: m[by])
        point = (best["test_accuracy"], best[by])
        axes.scatter(*point, s=90, color=color, edgecolors="black", linewidths=0.7, zorder=3)
        label = " / ".join(filter(None, key if several else key[2:]))
        axes.annotate(
            mathtext_safe(f"{label}\n({best['attack']})"),
            point,
            xytext=(8, 0),
            textcoords="offset points",
            fontsize=8,
            va="center",
        )
    axes.margins(x=0.25, y=0.15)
    axes.set_xlabel("clean test accuracy of the defended model")
    axes.set_ylabel(f"attack {LABELS.get(by, by)}")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    caption = (
        f"x: clean test accuracy of the defended model; y: the attack's {escape(LABELS[by])}. "
        "One large point per defense: its strongest attack (the leakage it admits); faint "
        "points: every attack. Lower right is better: a useful model that leaks little."
    )
    if any(by in row["tpr_at_zero_fp"] for row in rows):
        caption += f" Some y values are TPRs at zero false positives ({MARK} in the table)."
    return (
        f'<figure class="scatter">{figure_svg(figure, "privbench-scatter")}'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def render_html(
    rows: list[dict[str, Any]],
    by: str,
    *,
    suite: str | None = None,
    failed: Sequence[tuple[str, str]] = (),
) -> str:
    """The page: table (ranked by *by*), ROC figures, scatter and the suite's failed cells."""
    table = _table(rows, by)  # ranks first: an unknown metric fails before any plotting
    figures, missing = _roc_figures(rows)
    scatter = _scatter(rows, by)
    name = escape(suite) if suite else "workspace"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        f"<title>privbench leaderboard: {name}</title><style>{CSS}</style></head><body>",
        f"<header><h1>privbench leaderboard: {name}</h1>",
        f'<p class="meta">ranked by <b>{escape(LABELS[by])}</b> · <b>{len(rows)}</b> '
        f"configurations · privbench {escape(__version__)} · generated {when}</p>",
        '<p class="note">Membership-inference attacks against each (defended) model: higher '
        "attack metrics mean more leakage about the training data.</p>",
    ]
    if note := ranking_note(by, rank(rows, by)):
        parts.append(f'<p class="note zero-fp" id="ranking-note">{escape(note)}</p>')
    parts += [
        "</header>",
        f"<section><h2>Leaderboard</h2>{table}</section>",
        "<section><h2>ROC curves per defense (log-log)</h2>",
        f'<div class="plots">{"".join(figures)}</div>' if figures else "",
    ]
    if missing:
        listed = ", ".join(escape(m) for m in missing)
        parts.append(f'<p class="note">No stored ROC (recorded by an older version): {listed}</p>')
    parts.append("</section>")
    if scatter:
        parts.append(f"<section><h2>Privacy vs utility</h2>{scatter}</section>")
    if failed:
        cells = "".join(
            f"<tr><td>{escape(label)}</td><td><pre>{escape(error)}</pre></td></tr>"
            for label, error in failed
        )
        parts.append(
            f'<section id="failed-cells"><h2>Failed cells ({len(failed)})</h2>'
            '<table class="failed"><thead><tr><th>cell</th><th>error</th></tr></thead>'
            f"<tbody>{cells}</tbody></table></section>"
        )
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"
