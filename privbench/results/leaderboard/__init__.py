"""Leaderboards: every recorded attack result of a suite (or of a workspace), one row per
configuration averaged over seeds, ranked (:mod:`~privbench.results.leaderboard.rows`), as
Markdown, CSV, JSON (:mod:`~privbench.results.leaderboard.text`) or a self-contained HTML page
with plots (:mod:`~privbench.results.leaderboard.html`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from privbench.errors import OptionError
from privbench.results.leaderboard.rows import collect, columns, mean_roc, rank
from privbench.results.leaderboard.text import render_text

FORMATS = ("md", "csv", "json", "html")

__all__ = ["FORMATS", "collect", "columns", "mean_roc", "rank", "render"]


def render(
    rows: list[dict[str, Any]],
    fmt: str,
    by: str,
    *,
    suite: str | None = None,
    failed: Sequence[tuple[str, str]] = (),
) -> str:
    """The ranked rows as a Markdown table, CSV, JSON or an HTML page (which alone uses *suite*,
    its name, and *failed*, its failed cells as ``(label, error)``)."""
    if fmt not in FORMATS:
        raise OptionError(f"unknown format '{fmt}' (formats: {', '.join(FORMATS)})")
    if fmt == "html":
        from privbench.results.leaderboard.html import render_html  # matplotlib only if asked

        return render_html(rows, by, suite=suite, failed=failed)
    return render_text(rows, fmt, by)
