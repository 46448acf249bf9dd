"""Leaderboards: every recorded attack result of a suite (or of a workspace), ranked.

One row per configuration, its metrics averaged over the seeds (cells) that measured it, beside
the defended model's clean test accuracy (the privacy/utility trade-off) and the attack's cost
in seconds (its own work plus computing the signals it reads, wherever that happened: see
``Audit.signal_seconds``). Ranked by TPR at 0.1% FPR unless told otherwise.

Rows. A configuration is everything a run's spec records that decides its results: the dataset,
model and defense with their options (the plugin's defaults filled in, so a record that leaves
an option out equals one that spells it out), their versions and checksummed files, the
training recipe, the pool (shadows, targets, population, paired masks), a brought target's
checksum and members, and the attack with its options. Left out are the seed, which is what a
row averages over (each seed weighs the same, however many runs measured it), and what does not
change an attack's metrics: the device, and what the spec does not record (data root,
workspace, slices, memorization). Rows under one visible label (dataset, model(options),
defense(options)) whose runs differ in anything else get a ``config``: the settings that differ
among them, and only those (``epochs=5, population=200``). Where nothing differs it is empty
and Markdown and HTML show no config column (CSV always has one), so the leaderboard of a suite,
whose cells differ only in what the labels show and in the seed, reads as it always did.

Warnings. A TPR at FPR x measured on N non-members with N * x < 1 allows no false positive: it
is the TPR at zero false positives (TPR at 0.01% FPR below 10,000 non-members, at 0.1% below
1,000, at 1% below 100; the run's own caveat in :mod:`privbench.engine.caveats`). A row carries
the fewest non-members any run it merges evaluated (``n_nonmembers``, over every target turn;
``n_members`` likewise) and the TPR metrics that this makes TPRs at zero false positives
(``tpr_at_zero_fp``); the tables mark those values with ``†`` and say why beneath.

Ranking. By the metric asked for, flagged values included, ties by attack name and then in the
order the runs were recorded: deterministic, and the same order whichever rows are flagged (a
fallback metric for flagged rows would rank rows by different measures in one list). A flagged
value does not overstate the leakage (no false positive allowed is the stricter operating
point), and the tables say how many rows it ranks on such values (the HTML page in its
header, Markdown first beneath the table).

This module gathers and ranks the rows; :mod:`~privbench.results.leaderboard.text` writes
them as Markdown, CSV or JSON and :mod:`~privbench.results.leaderboard.html` as a
self-contained page with plots.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from privbench.errors import OptionError, PrivbenchError
from privbench.plugins import get_registry
from privbench.plugins.data import TrainingRecipe
from privbench.results.db import METRIC_COLUMNS, ResultsDB

TEXT_COLUMNS = ("dataset", "model", "defense", "attack")
SHOWN = (
    "tpr_at_0_1_fpr", "tpr_at_1_fpr", "auc", "balanced_accuracy", "epsilon_lower", "epsilon_gdp",
    "epsilon_bayes",
)  # fmt: skip
ONE_RUN = "epsilon_one_run"
"""Shown where some row is from a one-run audit (``--audit one-run``), and always in CSV."""
COUNT_COLUMNS = ("n_members", "n_nonmembers")
"""Sample counts: a row keeps the fewest of any run it merges (what its warnings rest on)."""

ZERO_FP_NONMEMBERS = {"tpr_at_0_01_fpr": 10_000, "tpr_at_0_1_fpr": 1_000, "tpr_at_1_fpr": 100}
"""Below this many non-members a TPR metric's FPR allows no false positive. (The 1,000 of
``privbench.engine.caveats.LOW_FPR_NONMEMBERS``, not imported from there: that module pulls in
scikit-learn, and the CLI imports this one at start-up.)"""
ZERO_FP_NAMES = {
    "tpr_at_0_01_fpr": "TPR at 0.01% FPR",
    "tpr_at_0_1_fpr": "TPR at 0.1% FPR",
    "tpr_at_1_fpr": "TPR at 1% FPR",
}
MARK = "†"
"""How the tables mark a TPR at zero false positives."""

_RECIPE_DEFAULTS = {
    f.name: f.default for f in attrs.fields(TrainingRecipe) if f.default is not attrs.NOTHING
}
"""Recipe fields a record may lack (added after it was written) read as their defaults, as
``RunSpec.of`` reads them."""
_SHA256 = re.compile("[0-9a-f]{64}")


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


def _label(name: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """``name(option=value, ...)`` with only the options that differ from the defaults."""
    changed = {k: v for k, v in options.items() if k not in defaults or defaults[k] != v}
    if not changed:
        return name
    return f"{name}(" + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) + ")"


def _canonical(value: Any) -> str:
    """*value* as text that is equal exactly when the values are (dict order aside)."""
    return json.dumps(value, sort_keys=True, default=str)


def _digest(value: Any) -> str:
    """A short checksum, to tell long values (a target's member list) apart in a label."""
    return hashlib.sha256(_canonical(value).encode()).hexdigest()[:12]


def _settings(spec: Mapping[str, Any], options: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What decides a run's results besides the seed, its dataset's name and the attack, by the
    name a ``config`` shows it under (*options*: each plugin's options, defaults filled in).
    Model and defense options are here too, though their labels show them, so two runs that
    differ in anything are told apart even when two option values print alike. Settings an old
    record lacks are None (``?`` in a config)."""
    out: dict[str, Any] = {}
    for kind in ("dataset", "model", "defense"):
        plugin = spec[kind]
        out.update({f"{kind}.{k}": v for k, v in sorted(options[kind].items())})
        out[f"{kind}.version"] = plugin.get("version")
        # The checksums of files its options name (a checkpoint): other bytes, other results.
        out.update({f"{kind}.file.{k}": v for k, v in sorted(plugin.get("files", {}).items())})
    for field in ("population", "shadows", "targets"):
        out[field] = spec.get(field)
    out["paired"] = spec.get("paired", False)
    out.update({**_RECIPE_DEFAULTS, **spec.get("recipe", {})})
    if (one_run := spec.get("one_run")) is not None:
        out.update({"audit": "one-run", **one_run})
    if (target := spec.get("target")) is not None:
        # Its checksum and its members decide it; where its weights file lies does not.
        out["target"] = target.get("sha256")
        out["target.members"] = _digest(target.get("members"))
    return out


def _nonmembers(recorded: float | None, spec: Mapping[str, Any]) -> int | None:
    """The non-members an attack's metrics rest on, over every target turn: as recorded, else
    (a database from before the count was kept) each target's half of the population left out
    of its training; None when that is unknown too (a brought target's split)."""
    if recorded is not None:
        return int(recorded)
    population, targets = spec.get("population"), spec.get("targets")
    if spec.get("target") is not None or population is None or targets is None:
        return None
    return int(targets) * (int(population) - int(population) // 2)


def collect(db: ResultsDB, suite: str | None = None) -> list[dict[str, Any]]:
    """Rows of the leaderboard: the runs a suite recorded (or every run), one per configuration,
    averaged over seeds (see the module's docstring)."""
    query = """
        SELECT runs.id, runs.record, runs.test_accuracy, results.*
        FROM results JOIN runs ON runs.id = results.run_id
    """
    params: tuple[Any, ...] = ()
    if suite is not None:
        # A partial cell recorded the results of the attacks that did not fail: they count.
        query += (
            " WHERE runs.id IN (SELECT run_id FROM suite_cells"
            " WHERE suite = ? AND status IN ('done', 'partial'))"
        )
        params = (suite,)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    labels: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in db.connection.execute(query, params):
        record = json.loads(row["record"])
        spec = record["spec"]
        options, shown = {}, {}
        for kind in ("dataset", "model", "defense"):
            name, given = spec[kind]["name"], spec[kind].get("options", {})
            defaults = _defaults(kind, name)
            options[kind] = {**defaults, **given}
            shown[kind] = _label(name, given, defaults)
        attack_defaults = _defaults("attack", row["attack"])
        attack_options = {**attack_defaults, **json.loads(row["options"])}
        settings = _settings(spec, options)
        label = (
            spec["dataset"]["name"],
            shown["model"],
            shown["defense"],
            _label(row["attack"], attack_options, attack_defaults),
        )
        key = (*label, _canonical(settings), _canonical(attack_options))
        labels[key] = {"label": label, "settings": settings}
        groups[key].append(
            {
                **{c: row[c] for c in METRIC_COLUMNS},
                "n_nonmembers": _nonmembers(row["n_nonmembers"], spec),
                "test_accuracy": row["test_accuracy"],
                "seconds": row["seconds"],
                "seed": spec["seed"],
                # Runs recorded before ROCs were stored have none: their curve is left out.
                "roc": next(
                    (a.get("roc") for a in record["attacks"] if a["name"] == row["attack"]), None
                ),
            }
        )
    configs = _configs({key: value["settings"] for key, value in labels.items()})
    rows = []
    for key, measured in groups.items():
        dataset, model, defense, attack = labels[key]["label"]
        # Each seed weighs the same: a seed measured twice (a rerun) is not counted twice.
        runs_per_seed: defaultdict[Any, int] = defaultdict(int)
        for m in measured:
            runs_per_seed[m["seed"]] += 1
        for m in measured:
            m["weight"] = 1.0 / runs_per_seed[m["seed"]]
        row: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "defense": defense,
            "attack": attack,
            "config": configs[key],
            "seeds": len(runs_per_seed),
            "runs": len(measured),
        }
        for column in (*METRIC_COLUMNS, "test_accuracy", "seconds"):
            known = [m for m in measured if m[column] is not None]
            if not known:
                row[column] = None
            elif column in COUNT_COLUMNS:
                row[column] = int(min(m[column] for m in known))
            else:
                values, weights = [m[column] for m in known], [m["weight"] for m in known]
                row[column] = float(np.average(values, weights=weights))
        row["tpr_at_zero_fp"] = zero_fp(row)
        curves = [m for m in measured if m["roc"] is not None]
        row["roc"] = mean_roc([m["roc"] for m in curves], [m["weight"] for m in curves])
        rows.append(row)
    return rows


def _configs(settings: Mapping[tuple[str, ...], Mapping[str, Any]]) -> dict[tuple[str, ...], str]:
    """Each row key's ``config``: among the runs under its visible (dataset, model, defense)
    label, the settings that differ, with this row's values; empty where none differ. Chosen
    per run label rather than per row so that every attack of one run reads the same config
    (and a run's attacks share its ROC figure); two rows whose labels, attack included, are
    equal come from runs whose settings differ, which their configs then show."""
    by_label: dict[tuple[str, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for key, values in settings.items():
        by_label[key[:3]].append(values)
    differing: dict[tuple[str, ...], list[str]] = {}
    for label, group in by_label.items():
        names = list(dict.fromkeys(name for values in group for name in values))
        differing[label] = [
            name for name in names if len({_canonical(v.get(name)) for v in group}) > 1
        ]
    return {
        key: ", ".join(f"{name}={_shown(values.get(name))}" for name in differing[key[:3]])
        for key, values in settings.items()
    }


def _shown(value: Any) -> str:
    """A setting's value in a config: as a label shows options, ``?`` where unrecorded."""
    if value is None:
        return "?"
    if isinstance(value, str):
        # A SHA-256 (a checkpoint, a brought target): its start tells files apart.
        return value[:12] if _SHA256.fullmatch(value) else value
    return _canonical(value) if isinstance(value, list | dict) else str(value)


def zero_fp(row: Mapping[str, Any]) -> list[str]:
    """The TPR metrics of *row* that are TPRs at zero false positives: measured on fewer
    non-members than their FPR needs to allow one (none when the count is unknown)."""
    count = row.get("n_nonmembers")
    if count is None:
        return []
    return [
        metric
        for metric, needed in ZERO_FP_NONMEMBERS.items()
        if count < needed and row.get(metric) is not None
    ]


def flagged(rows: Sequence[Mapping[str, Any]], metric: str) -> list[int]:
    """The 1-based ranks (positions in *rows*, ranked) whose *metric* is a TPR at zero false
    positives."""
    return [i for i, row in enumerate(rows, 1) if metric in row.get("tpr_at_zero_fp", ())]


def zero_fp_note(metric: str, rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The footnote for *metric* under the ranked *rows*, or None when no row's value of it is
    flagged (or it is no TPR metric)."""
    ranks = flagged(rows, metric) if metric in ZERO_FP_NONMEMBERS else []
    if not ranks:
        return None
    counts = sorted({rows[i - 1]["n_nonmembers"] for i in ranks})
    n = f"N = {counts[0]:,}" if len(counts) == 1 else f"N = {counts[0]:,} to {counts[-1]:,}"
    listed = ", ".join(map(str, ranks))
    return (
        f"{MARK} {ZERO_FP_NAMES[metric]} with N < {ZERO_FP_NONMEMBERS[metric]:,} non-members is "
        f"TPR at zero false positives (rank{'s' if len(ranks) > 1 else ''} {listed}: {n})."
    )


def ranking_note(by: str, rows: Sequence[Mapping[str, Any]]) -> str | None:
    """What a table of the ranked *rows* says of its order when some rows' ranked metric is a
    TPR at zero false positives, or None."""
    ranks = flagged(rows, by) if by in ZERO_FP_NONMEMBERS else []
    if not ranks:
        return None
    return (
        f"Ranked by {ZERO_FP_NAMES[by]}, which {len(ranks)} of {len(rows)} rows ({MARK}) "
        f"measure on fewer than {ZERO_FP_NONMEMBERS[by]:,} non-members, at zero false "
        "positives: read their order with AUC and the other TPRs."
    )


def mean_roc(
    curves: Sequence[Mapping[str, Sequence[float]]], weights: Sequence[float] | None = None
) -> dict[str, list[float]] | None:
    """The seeds' stored ROCs (:func:`privbench.analysis.metrics.roc_points`) averaged, or None
    (*weights*: each curve's, equal by default).

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
    return {"fpr": grid.tolist(), "tpr": np.average(tprs, axis=0, weights=weights).tolist()}


def columns(
    by: str, rows: Sequence[Mapping[str, Any]] = (), *, one_run: bool | None = None
) -> list[str]:
    """The shown columns: the configuration's (``config`` only where some of *rows* has one),
    the seeds, the ranked metric first, then the others (``epsilon_one_run`` where *one_run*
    says, by default where some row is from a one-run audit or it is ranked by)."""
    config = ["config"] if any(row.get("config") for row in rows) else []
    if one_run is None:
        one_run = by == ONE_RUN or any(row.get(ONE_RUN) is not None for row in rows)
    return [
        *TEXT_COLUMNS,
        *config,
        "seeds",
        by,
        *(c for c in (*SHOWN, *([ONE_RUN] if one_run else [])) if c != by),
        "test_accuracy",
        "seconds",
    ]


def csv_columns(by: str) -> list[str]:
    """CSV's columns: the same whatever the rows (a file's readers expect its columns), so
    ``config`` always, and the warnings' inputs before the metrics, which stay the last
    columns."""
    metrics = columns(by, one_run=True)[len(TEXT_COLUMNS) + 1 :]  # after "seeds"
    return [*TEXT_COLUMNS, "config", "seeds", "n_nonmembers", "tpr_at_zero_fp", *metrics]


def rank(rows: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    if by not in METRIC_COLUMNS:
        raise OptionError(f"cannot rank by '{by}' (metrics: {', '.join(METRIC_COLUMNS)})")
    return sorted(rows, key=lambda r: (r[by] is None, -(r[by] or 0.0), r["attack"]))
