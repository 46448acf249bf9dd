"""Leaderboard rows as text: a Markdown table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from privbench.results.leaderboard.rows import TEXT_COLUMNS, columns, rank


def render_text(rows: list[dict[str, Any]], fmt: str, by: str) -> str:
    """The ranked rows as a Markdown table (``md``), ``csv`` or ``json``."""
    rows = rank(rows, by)
    if fmt == "json":
        plain = [{k: v for k, v in row.items() if k != "roc"} for row in rows]
        return json.dumps({"rank_by": by, "rows": plain}, indent=2) + "\n"
    shown = columns(by)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=shown, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    align = ["---" if c in TEXT_COLUMNS else "---:" for c in shown]
    lines = ["| rank | " + " | ".join(shown) + " |", "|---:|" + "|".join(align) + "|"]
    for position, row in enumerate(rows, 1):
        lines.append(f"| {position} | " + " | ".join(cell(row[c]) for c in shown) + " |")
    return "\n".join(lines) + "\n"
