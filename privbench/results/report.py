"""One run as one self-contained HTML page (``privbench report RUN``): its warnings and notes at
the top, what was audited, the utility, every attack's metrics with its slices, the log-log ROC
curves, member and non-member score histograms, the most vulnerable samples' images and the
reconstruction grids (the figures: :mod:`privbench.results.report_figures`).

Self-contained for the leaderboard page's reasons (results get mailed, archived and opened
offline): its Content-Security-Policy forbids every request and allows images only from
``data:`` URIs (the run folder's PNGs, embedded), the CSS is inline and the plots are inline
SVG. Every string that comes from the record is escaped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

import attrs

from privbench.errors import PrivbenchError
from privbench.results.files import atomic_write
from privbench.results.leaderboard.html import CSS as BOARD_CSS
from privbench.results.parts import PluginRecord
from privbench.results.report_figures import (
    histogram,
    number,
    png_image,
    roc_section,
    vulnerable_image,
    vulnerable_images,
)
from privbench.results.result import AuditResult
from privbench.results.tables import (
    bayes_line,
    defense_line,
    dp_bound_line,
    gdp_line,
    memorization_line,
    one_run_lines,
    reconstruction_metrics,
    utility_line,
)
from privbench.version import __version__

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'"
)
"""No request of any kind, no script; images only from ``data:`` URIs."""
SECTIONS = {
    "audited": "What was audited",
    "utility": "Utility",
    "metrics": "Metrics",
    "roc": "ROC curves (log-log)",
    "histograms": "Score histograms",
    "vulnerable": "Most vulnerable samples",
    "reconstructions": "Reconstructions",
}
"""The page's sections, by ``id``, in order (warnings and notes come before them)."""
METRICS = ("tpr_at_0_01_fpr", "tpr_at_0_1_fpr", "tpr_at_1_fpr", "balanced_accuracy",
           "advantage", "epsilon_lower", "epsilon_estimate")  # fmt: skip
"""The metrics table's columns after AUC and its per-target spread."""

CSS = (
    BOARD_CSS
    + """
.warnings { margin: 16px 0; padding: 8px 16px; border: 2px solid #b3261e; border-radius: 6px;
  background: #fdecea; } .warnings h2 { margin: 4px 0; border: 0; color: #8c1d18; }
.notes { margin: 12px 0; padding: 6px 16px; border-left: 4px solid var(--accent);
  background: #f2f7fd; } .notes h2 { margin: 4px 0; border: 0; font-size: 15px; }
nav a { color: var(--accent); margin-right: 14px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
tr.attack td:first-child { font-weight: 600; }
tr.slice td { color: var(--muted); font-size: 12px; }
tr.slice td:first-child { padding-left: 30px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figure.roc { max-width: 820px; }
.ids { font-family: ui-monospace, monospace; font-size: 12px; white-space: normal; }
"""
)


def _options(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in options.items())


def _plugin(record: PluginRecord) -> str:
    """A plugin's name with its options, and where it came from (HTML)."""
    text = f"<b>{escape(record.name)}</b>"
    if record.options:
        text += f" ({escape(_options(record.options))})"
    origin = " ".join(str(part) for part in (record.plugin, record.version) if part)
    files = [f"{name} sha256 {str(digest)[:12]}" for name, digest in record.files.items()]
    extra = "; ".join(([f"plugin {origin}"] if origin else []) + files)
    return text + (f' <span class="note">{escape(extra)}</span>' if extra else "")


def _outputs_only(result: AuditResult) -> bool:
    return "outputs" in result.training.target_meta


def pool_text(result: AuditResult) -> str:
    """The models the run audited, in words (plain text)."""
    spec, meta = result.spec, result.training.target_meta
    if "outputs" in meta:
        return (
            f"outputs only: the target's {meta['outputs']} on {spec.population} samples and the "
            f"outputs of {spec.shadows} reference model(s); no model was trained or queried"
        )
    if spec.target is not None:
        target = spec.target
        return (
            f"your target ({target['weights']}, sha256 {str(target['sha256'])[:12]}…, "
            f"{target['members']} members) + {spec.shadows} reference model(s), "
            f"{spec.population} samples"
        )
    if spec.one_run is not None:
        return (
            f"one-run audit: 1 model trained with {spec.one_run['canaries']} "
            f"{spec.one_run['canary_kind']} canaries (each in with probability 1/2) among "
            f"{spec.population} samples"
        )
    paired = " (paired keep-masks)" if spec.paired else ""
    return f"{spec.models} models, {spec.targets} target(s) x {spec.population} samples{paired}"


def _table(table_id: str, head: list[str], rows: list[str], caption: str, text: int = 2) -> str:
    """A table whose first *text* columns are text and the others numbers (cells are HTML)."""
    cells = "".join(
        f'<th scope="col"{" class=num" if i >= text else ""}>{h}</th>' for i, h in enumerate(head)
    )
    return (
        f'<div class="scroll"><table id="{table_id}"><caption>{caption}</caption>'
        f"<thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _row(cells: list[str], attributes: str, text: int = 2) -> str:
    body = "".join(f"<td{' class=num' if i >= text else ''}>{c}</td>" for i, c in enumerate(cells))
    return f"<tr {attributes}>{body}</tr>"


# -- sections -----------------------------------------------------------------------------------


def _alerts(result: AuditResult) -> str:
    """The run's warnings and notes, before everything else."""
    parts = []
    if result.warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in result.warnings)
        parts.append(
            f'<section id="warnings" class="warnings"><h2>Warnings ({len(result.warnings)})</h2>'
            f"<p>Numbers on this page that cannot be read as they read, and why:</p>"
            f"<ul>{items}</ul></section>"
        )
    if result.notes:
        items = "".join(f"<li>{escape(n)}</li>" for n in result.notes)
        parts.append(f'<section id="notes" class="notes"><h2>Notes</h2><ul>{items}</ul></section>')
    return "".join(parts)


def _audited(result: AuditResult) -> str:
    spec, training = result.spec, result.training
    attacks = [(a.name, a.access, a.options) for a in result.attacks]
    attacks += [(r.name, r.access, r.options) for r in result.reconstructions]
    listed = "<br>".join(
        f"<b>{escape(name)}</b> &middot; access <b>{escape(access)}</b>"
        + (f" ({escape(_options(options))})" if options else "")
        for name, access, options in attacks
    )
    if _outputs_only(result):
        recipe = "none: no model was trained"
    else:
        recipe = escape(_options(attrs.asdict(spec.recipe)))
        recipe += " (the reference models')" if spec.target is not None else ""
    version = escape(str(result.environment.get("privbench", "unknown")))
    facts = {
        "dataset": _plugin(spec.dataset),
        "model": _plugin(spec.model),
        "defense": _plugin(spec.defense),
        "attacks": listed or "none",
        "pool": escape(pool_text(result)),
        "training": f"{training.trained} model(s) trained, {training.reused} reused from the "
        f"store, {training.seconds:.1f} s",
        "recipe": recipe,
        "seed": escape(str(spec.seed)),
        "device": escape(str(spec.device)),
        "run": f"{escape(result.run_id)}, created {escape(result.created_at)}, "
        f"{result.seconds:.1f} s",
        "privbench": f'{version} <span class="note">(this page: {escape(__version__)})</span>',
    }
    measured = defense_line(result)  # its DP bound goes under the metrics it bounds
    if measured:
        facts["defense's report"] = escape(measured)
    body = "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in facts.items())
    return f'<dl class="facts">{body}</dl>'


def _utility(result: AuditResult) -> str:
    u = result.utility
    on = ("on members", "on non-members") if _outputs_only(result) else ("train", "test")
    head = ["target", f"accuracy {on[0]}", f"accuracy {on[1]}", "gap"]
    rows = []
    for t in u.per_target:
        values = map(
            number, (t.train_accuracy, t.test_accuracy, t.train_accuracy - t.test_accuracy)
        )
        rows.append(_row([escape(str(t.target)), *values], 'class="target"', text=1))
    mean = map(number, (u.train_accuracy, u.test_accuracy, u.generalization_gap))
    rows.append(_row(["<b>mean</b>", *mean], 'class="mean"', text=1))
    return _table("utility-table", head, rows, escape(utility_line(result)), text=1)


def _metrics(result: AuditResult) -> str:
    if not result.attacks:
        return '<p class="note">No membership attack in this run.</p>'
    bound = result.attacks[0].epsilon
    head = ["attack", "access", "AUC", "AUC per target", "TPR@0.01%FPR", "TPR@0.1%FPR",
            "TPR@1%FPR", "bal. acc.", "advantage", f"ε ≥ ({bound.confidence:.0%})", "ε estimate",
            "members", "non-members", "seconds"]  # fmt: skip
    rows = []
    for attack in result.attacks:
        m, spread, name = attack.metrics, attack.per_target, escape(attack.name)
        per_target = "&ndash;"
        if "auc" in spread.mean:
            per_target = f"{spread.mean['auc']:.3f} ± {number(spread.std.get('auc'), 3)}"
        cells = [name, escape(attack.access), number(m.auc), per_target,
                 *(number(getattr(m, key)) for key in METRICS),
                 number(m.n_members), number(m.n_nonmembers),
                 number(attack.seconds, 2)]  # fmt: skip
        counts = f'data-members="{m.n_members}" data-non-members="{m.n_nonmembers}"'
        rows.append(_row(cells, f'class="attack" data-attack="{name}" {counts}'))
        for part in attack.slices:
            s = part.metrics
            numbers = ["&ndash;"] * (2 + len(METRICS))
            if s is not None:
                numbers = [number(s.auc), "&ndash;", *(number(getattr(s, k)) for k in METRICS)]
            cells = [f"{escape(part.slice)} {escape(part.value)}", "", *numbers,
                     number(part.members), number(part.non_members), ""]  # fmt: skip
            counts = f'data-members="{part.members}" data-non-members="{part.non_members}"'
            where = f'data-attack="{name}" data-slice="{escape(part.slice)}"'
            rows.append(_row(cells, f'class="slice" {where} {counts}'))
    caption = (
        "AUC and TPRs over the pooled scores of every target turn; AUC per target: mean ± sd "
        f"over the {result.spec.targets} target model(s). ε ≥: a {bound.confidence:.0%} "
        f"Clopper-Pearson lower bound on ε for (ε, δ={bound.delta:g})-DP, its threshold chosen "
        "on held-out scores; ε estimate: the optimistic same-data estimate. Indented rows: the "
        "attack within each slice of the samples (no metrics where a slice lacks members or "
        "non-members)."
    )
    lines = (gdp_line(result), bayes_line(result), *one_run_lines(result),
             dp_bound_line(result), memorization_line(result))  # fmt: skip
    extra = [line for line in lines if line]
    table = _table("metrics-table", head, rows, escape(caption))
    return table + "".join(f'<p class="note">{escape(line)}</p>' for line in extra)


def _histograms(result: AuditResult) -> str:
    if not result.attacks:
        return '<p class="note">No membership attack in this run.</p>'
    figures = "".join(histogram(attack, i) for i, attack in enumerate(result.attacks))
    return f'<div class="plots">{figures}</div>'


def _vulnerable(result: AuditResult) -> str:
    if not result.attacks:
        return '<p class="note">No membership attack in this run.</p>'
    parts = []
    stored = vulnerable_images(result)
    meaning = "positions in the train split"
    if _outputs_only(result):
        meaning = "as given with the outputs, else their positions in them"
    for attack in result.attacks:
        name = escape(attack.name)
        ids = ", ".join(f"#{sample}" for sample in attack.vulnerable)
        listed = (
            f'<p>Their sample ids ({meaning}), most vulnerable first: <span class="ids">{ids}'
            "</span></p>"
            if ids
            else '<p class="note">The attack listed no samples.</p>'
        )
        image = vulnerable_image(stored, attack)
        if image is None:
            if _outputs_only(result):
                why = "this audit was given outputs alone, so privbench holds no images of them"
            elif result.path is None:
                why = "the run's folder is gone (this page comes from its database row)"
            else:
                why = f"the run folder holds no images for {attack.name}"
            image = f'<p class="note no-images">No images: {escape(why)}.</p>'
        parts.append(
            f'<figure class="vulnerable" data-attack="{name}">{image}<figcaption><b>{name}</b>: '
            f"the members it was surest of.{listed}</figcaption></figure>"
        )
    return f'<div class="plots">{"".join(parts)}</div>'


def _reconstructions(result: AuditResult) -> str:
    if not result.reconstructions:
        return '<p class="note">No reconstruction attack in this run.</p>'
    files, parts = result.files, []
    for summary in result.reconstructions:
        against = f"target {summary.target}'s {summary.train_size} training images"
        shown = [(summary.grid, summary.metrics, against)]
        declared = summary.declared_training_set
        if declared is not None:
            instead = f"the {declared['size']} images the defense trained the released model on"
            shown.append((declared["grid"], declared["metrics"], instead))
        for grid, metrics, images in shown:
            image = png_image(files.get(grid), f"reconstructions by {summary.name}")
            where = "the run folder" if result.path is not None else "any folder: it is gone"
            image = image or f'<p class="note">{escape(grid)} is not in {where}.</p>'
            caption = (
                f"<b>{escape(summary.name)}</b> ({summary.candidates} candidates) against "
                f"{escape(images)}, each training image above its reconstruction: "
                f"{escape(reconstruction_metrics(metrics))}"
            )
            parts.append(
                f'<figure class="reconstruction">{image}<figcaption>{caption}</figcaption></figure>'
            )
    return "".join(parts)


def render_report(result: AuditResult) -> str:
    """The run's page: warnings and notes, then one section per entry of :data:`SECTIONS`."""
    bodies = {
        "audited": _audited(result),
        "utility": _utility(result),
        "metrics": _metrics(result),
        "roc": roc_section(result.attacks),
        "histograms": _histograms(result),
        "vulnerable": _vulnerable(result),
        "reconstructions": _reconstructions(result),
    }
    spec = result.spec
    title = f"privbench report: run {escape(result.run_id)}"
    version = escape(str(result.environment.get("privbench", "unknown")))
    nav = "".join(f'<a href="#{key}">{escape(text)}</a>' for key, text in SECTIONS.items())
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{title}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{title}</h1>",
        f'<p class="meta"><b>{escape(spec.dataset.name)}</b> &middot; '
        f"<b>{escape(spec.model.name)}</b> &middot; defense <b>{escape(spec.defense.name)}</b>"
        f" &middot; {escape(pool_text(result))}</p>",
        f'<p class="meta">created {escape(result.created_at)} &middot; seed '
        f"{escape(str(spec.seed))} &middot; privbench {version}</p>",
        f"<nav>{nav}</nav></header>",
        _alerts(result),
        *(
            f'<section id="{key}"><h2>{escape(SECTIONS[key])}</h2>{body}</section>'
            for key, body in bodies.items()
        ),
    ]
    if result.path is not None:
        parts.append(
            f'<footer><p class="note">Run folder: {escape(str(result.path))} &middot; files: '
            f"{escape(', '.join(result.files))}</p></footer>"
        )
    parts.append("</body></html>")
    return "\n".join(part for part in parts if part) + "\n"


def write_report(result: AuditResult, path: str | os.PathLike[str]) -> Path:
    """:func:`render_report` written to *path* atomically; the path it wrote."""
    text = render_report(result).encode()
    target = Path(path).expanduser()
    try:
        atomic_write(target, lambda handle: handle.write(text))
    except OSError as err:
        raise PrivbenchError(f"cannot write {target}: {err.strerror or err}") from None
    return target
