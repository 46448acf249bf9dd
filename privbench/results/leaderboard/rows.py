"""Leaderboards: every recorded attack result of a suite (or of a workspace), ranked.

One row per (dataset, model, defense, attack) configuration, its metrics averaged over the seeds
(cells) that measured it, beside the defended model's clean test accuracy (the privacy/utility
trade-off) and the attack's cost in seconds (its own work plus computing the signals it reads,
wherever that happened: see ``Audit.signal_seconds``). Ranked by TPR at 0.1% FPR unless told
otherwise.
This module gathers and ranks the rows; :mod:`~privbench.results.leaderboard.text` writes
them as Markdown, CSV or JSON and :mod:`~privbench.results.leaderboard.html` as a
self-contained page with plots.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from privbench.errors import OptionError, PrivbenchError
from privbench.plugins import get_registry
from privbench.results.db import METRIC_COLUMNS, ResultsDB

TEXT_COLUMNS = ("dataset", "model", "defense", "attack")
SHOWN = ("tpr_at_0_1_fpr", "tpr_at_1_fpr", "auc", "balanced_accuracy", "epsilon_lower")


def _defaults(kind: str, name: str) -> dict[str, Any]:
    """A plugin's option defaults (empty when it is not installed: every option is shown)."""
    try:
        cls = get_registry().get(kind, name.split("/")[0]).cls
    except PrivbenchError:
        return {}
    return {
        f.name: f.default
        for f in attrs.fields(cls)
        if f.default is not attrs.NOTHING and not isinstance(f.default, attrs.Factory)  # type: ignore[arg-type]
    }


def _label(kind: str, name: str, options: dict[str, Any]) -> str:
    """``name(option=value, ...)`` with only the options that differ from the defaults."""
    defaults = _defaults(kind, name)
    changed = {k: v for k, v in options.items() if k not in defaults or defaults[k] != v}
    if not changed:
        return name
    return f"{name}(" + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) + ")"


def collect(db: ResultsDB, suite: str | None = None) -> list[dict[str, Any]]:
    """Rows of the leaderboard: the runs a suite recorded (or every run), grouped over seeds."""
    query = """
        SELECT runs.id, runs.record, runs.test_accuracy, results.*
        FROM results JOIN runs ON runs.id = results.run_id
    """
    params: tuple[Any, ...] = ()
    if suite is not None:
        query += (
            " WHERE runs.id IN (SELECT run_id FROM suite_cells WHERE suite = ? AND status = 'done')"
        )
        params = (suite,)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in db.connection.execute(query, params):
        record = json.loads(row["record"])
        spec = record["spec"]
        key = (
            spec["dataset"]["name"],
            _label("model", spec["model"]["name"], spec["model"]["options"]),
            _label("defense", spec["defense"]["name"], spec["defense"]["options"]),
            _label("attack", row["attack"], json.loads(row["options"])),
        )
        groups[key].append(
            {
                **{c: row[c] for c in METRIC_COLUMNS},
                "test_accuracy": row["test_accuracy"],
                "seconds": row["seconds"],
                "seed": spec["seed"],
                # Runs recorded before ROCs were stored have none: their curve is left out.
                "roc": next(
                    (a.get("roc") for a in record["attacks"] if a["name"] == row["attack"]), None
                ),
            }
        )
    rows = []
    for (dataset, model, defense, attack), measured in groups.items():
        row: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "defense": defense,
            "attack": attack,
            "seeds": len({m["seed"] for m in measured}),
        }
        for column in (*METRIC_COLUMNS, "test_accuracy", "seconds"):
            values = [m[column] for m in measured if m[column] is not None]
            row[column] = float(np.mean(values)) if values else None
        row["roc"] = mean_roc([m["roc"] for m in measured if m["roc"] is not None])
        rows.append(row)
    return rows


def mean_roc(curves: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, list[float]] | None:
    """The seeds' stored ROCs (:func:`privbench.analysis.metrics.roc_points`) averaged, or None.

    Each stored curve is a step function (the best TPR at FPR <= x), so it is evaluated as one on
    the union of the seeds' FPR grids and the TPRs are averaged there: exact for a single seed,
    and no seed's curve is interpolated above what its attack achieved.
    """
    if not curves:
        return None
    # On use: privbench.analysis.metrics imports scikit-learn, and the CLI imports this
    # module at start-up.
    from privbench.analysis.metrics import tpr_on_grid

    grid = np.unique(np.concatenate([np.asarray(c["fpr"], dtype=np.float64) for c in curves]))
    tprs = [tpr_on_grid(curve["fpr"], curve["tpr"], grid) for curve in curves]
    return {"fpr": grid.tolist(), "tpr": np.mean(tprs, axis=0).tolist()}


def columns(by: str) -> list[str]:
    """The shown columns after the configuration's: the ranked metric first."""
    return [*TEXT_COLUMNS, "seeds", by, *(c for c in SHOWN if c != by), "test_accuracy", "seconds"]


def rank(rows: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    if by not in METRIC_COLUMNS:
        raise OptionError(f"cannot rank by '{by}' (metrics: {', '.join(METRIC_COLUMNS)})")
    return sorted(rows, key=lambda r: (r[by] is None, -(r[by] or 0.0), r["attack"]))
