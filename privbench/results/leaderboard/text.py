"""Leaderboard rows as text: a Markdown table, CSV or JSON.

Each keeps what the rows say about their own reliability (:mod:`~privbench.results.leaderboard.
rows`): Markdown marks a TPR at zero false positives with ``†`` and explains it under the table,
first of all when the ranked metric is one in some rows; CSV and JSON carry the counts
themselves (``n_nonmembers``, ``tpr_at_zero_fp``) for whoever reads them next.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from privbench.results.leaderboard.rows import (
    MARK,
    TEXT_COLUMNS,
    columns,
    csv_columns,
    rank,
    ranking_note,
    zero_fp_note,
)


def render_text(rows: list[dict[str, Any]], fmt: str, by: str) -> str:
    """The ranked rows as a Markdown table (``md``), ``csv`` or ``json``."""
    rows = rank(rows, by)
    if fmt == "json":
        plain = [{k: v for k, v in row.items() if k != "roc"} for row in rows]
        return json.dumps({"rank_by": by, "rows": plain}, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=csv_columns(by), extrasaction="ignore")
        writer.writeheader()
        # One cell per field: the flagged metrics as "a;b" (empty: none).
        writer.writerows({**row, "tpr_at_zero_fp": ";".join(row["tpr_at_zero_fp"])} for row in rows)
        return out.getvalue()
    return _markdown(rows, by)


def _markdown(rows: list[dict[str, Any]], by: str) -> str:
    shown = columns(by, rows)

    def cell(row: dict[str, Any], column: str) -> str:
        value = row[column]
        if value is None:
            return "-"
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return text + MARK if column in row["tpr_at_zero_fp"] else text

    align = ["---" if c in (*TEXT_COLUMNS, "config") else "---:" for c in shown]
    lines = ["| rank | " + " | ".join(shown) + " |", "|---:|" + "|".join(align) + "|"]
    for position, row in enumerate(rows, 1):
        lines.append(f"| {position} | " + " | ".join(cell(row, c) for c in shown) + " |")
    # Beneath the table, so that the output still starts with it (pasted, concatenated, parsed)
    # and has no notes at all where nothing is flagged.
    notes = [ranking_note(by, rows), *(zero_fp_note(c, rows) for c in shown)]
    for note in filter(None, notes):
        lines += ["", note]
    return "\n".join(lines) + "\n"
