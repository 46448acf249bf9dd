"""The results database: one SQLite file per workspace (runs, their configs, metrics, versions).

The metric columns are there for SQL queries and leaderboards; the full record of a run (spec,
plugin versions, training metadata) is kept as JSON beside them and in the run's
``results.json``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Any

from privbench.errors import PrivbenchError, WorkspaceError

METRIC_COLUMNS = (
    "auc",
    "tpr_at_0_1_fpr",
    "tpr_at_1_fpr",
    "tpr_at_0_01_fpr",
    "balanced_accuracy",
    "balanced_accuracy_at_eer",
    "advantage",
    "epsilon_lower",
    "epsilon_estimate",
    "n_members",
    "n_nonmembers",
    "gdp_mu",
    "epsilon_gdp",
    "epsilon_gdp_low",
    "epsilon_gdp_high",
    "epsilon_bayes",
    "epsilon_bayes_low",
    "epsilon_bayes_high",
    "epsilon_one_run",
)

RECONSTRUCTION_COLUMNS = (
    "fraction_identified",
    "fraction_recovered",
    "chance_fraction_recovered",
    "mean_ssim",
    "mean_l2",
    "mean_psnr",
)
"""Summary metrics of a reconstruction attack kept as columns (the rest is in the record)."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    dataset TEXT NOT NULL,
    model TEXT NOT NULL,
    defense TEXT NOT NULL,
    train_accuracy REAL,
    test_accuracy REAL,
    seconds REAL,
    path TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attack TEXT NOT NULL,
    access TEXT NOT NULL,
    options TEXT NOT NULL,
    {", ".join(f"{c} REAL" for c in METRIC_COLUMNS)},
    seconds REAL,
    PRIMARY KEY (run_id, attack)
);
CREATE TABLE IF NOT EXISTS reconstructions (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attack TEXT NOT NULL,
    access TEXT NOT NULL,
    options TEXT NOT NULL,
    target INTEGER NOT NULL,
    train_size INTEGER NOT NULL,
    candidates INTEGER NOT NULL,
    {", ".join(f"{c} REAL" for c in RECONSTRUCTION_COLUMNS)},
    declared_fraction_identified REAL,
    seconds REAL,
    PRIMARY KEY (run_id, attack)
);
CREATE TABLE IF NOT EXISTS slices (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attack TEXT NOT NULL,
    slice TEXT NOT NULL,
    value TEXT NOT NULL,
    members INTEGER NOT NULL,
    non_members INTEGER NOT NULL,
    {", ".join(f"{c} REAL" for c in METRIC_COLUMNS)},
    PRIMARY KEY (run_id, attack, slice, value)
);
CREATE TABLE IF NOT EXISTS suite_cells (
    suite TEXT NOT NULL,
    cell TEXT NOT NULL,
    label TEXT NOT NULL,
    status TEXT NOT NULL,
    run_id TEXT REFERENCES runs(id) ON DELETE SET NULL,
    error TEXT,
    PRIMARY KEY (suite, cell)
);
"""
_COLUMNS = ", ".join(METRIC_COLUMNS)
_PLACEHOLDERS = ", ".join("?" * len(METRIC_COLUMNS))


_DAMAGE_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def is_damage(err: sqlite3.Error) -> bool:
    """Whether *err* says the database file is damaged (not merely busy or unreadable)."""
    code = getattr(err, "sqlite_errorcode", None)  # Python 3.11+; extended codes keep the low byte
    if code is not None:
        return (code & 0xFF) in _DAMAGE_CODES
    text = str(err)
    return "malformed" in text or "not a database" in text


def damaged_database(path: Path, detail: str) -> WorkspaceError:
    """The one line for a damaged results database: what is wrong and how to go on."""
    return WorkspaceError(
        f"the results database {path} is damaged ({detail}): move it aside (mv {path} "
        f"{path}.damaged) and run again; each run's folder in {path.parent / 'runs'} still "
        "holds its results.json"
    )


class ResultsDB:
    """A context manager around the workspace database; each ``with`` block is one transaction.
    A damaged database file raises :func:`damaged_database`'s one line, when opened or when a
    query inside the block finds the damage."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> ResultsDB:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WorkspaceError(
                f"cannot make the folder of the results database {self.path} "
                f"({err.strerror or err}): give --workspace/-w a folder you can write to"
            ) from None
        self.connection = sqlite3.connect(self.path, timeout=30)
        try:
            self.connection.row_factory = sqlite3.Row
            self.connection.execute("PRAGMA foreign_keys = ON")
            self.connection.executescript(_SCHEMA)
            # Databases from older versions lack newer metric columns: add them (NULL for old
            # runs).
            present = {row["name"] for row in self.connection.execute("PRAGMA table_info(results)")}
            for column in METRIC_COLUMNS:
                if column not in present:
                    self.connection.execute(f"ALTER TABLE results ADD COLUMN {column} REAL")
        except sqlite3.DatabaseError as err:
            self.connection.close()
            if is_damage(err):
                raise damaged_database(self.path, str(err)) from None
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.connection.commit()
            else:
                # Closing rolls back too, and the error on its way out says more.
                with contextlib.suppress(sqlite3.Error):
                    self.connection.rollback()
        except sqlite3.DatabaseError as err:
            if is_damage(err):
                raise damaged_database(self.path, str(err)) from None
            raise
        finally:
            self.connection.close()
        if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
            raise damaged_database(self.path, str(exc)) from None

    def insert_run(self, record: dict[str, Any], path: Path) -> None:
        spec = record["spec"]
        self.connection.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record["run_id"],
                record["created_at"],
                spec["dataset"]["name"],
                spec["model"]["name"],
                spec["defense"]["name"],
                record["utility"]["train_accuracy"],
                record["utility"]["test_accuracy"],
                record["seconds"],
                str(path),
                json.dumps(record, sort_keys=True),
            ),
        )
        for attack in record["attacks"]:
            metrics = attack["metrics"]
            self.connection.execute(
                f"INSERT INTO results (run_id, attack, access, options, {_COLUMNS}, seconds) "
                f"VALUES (?, ?, ?, ?, {_PLACEHOLDERS}, ?)",
                (
                    record["run_id"],
                    attack["name"],
                    attack["access"],
                    json.dumps(attack["options"], sort_keys=True),
                    *(metrics[c] for c in METRIC_COLUMNS),
                    attack["seconds"],
                ),
            )

        for attack in record["attacks"]:
            for part in attack.get("slices", ()):
                metrics = part["metrics"] or {}
                self.connection.execute(
                    f"INSERT INTO slices (run_id, attack, slice, value, members, non_members, "
                    f"{_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, {_PLACEHOLDERS})",
                    (
                        record["run_id"],
                        attack["name"],
                        part["slice"],
                        part["value"],
                        part["members"],
                        part["non_members"],
                        *(metrics.get(c) for c in METRIC_COLUMNS),
                    ),
                )

        for summary in record.get("reconstructions", []):
            metrics = summary["metrics"]
            declared = summary.get("declared_training_set", {}).get("metrics", {})
            columns = ", ".join(RECONSTRUCTION_COLUMNS)
            self.connection.execute(
                "INSERT INTO reconstructions (run_id, attack, access, options, target, train_size,"
                f" candidates, {columns}, declared_fraction_identified, seconds) VALUES "
                f"({', '.join('?' * (9 + len(RECONSTRUCTION_COLUMNS)))})",
                (
                    record["run_id"],
                    summary["name"],
                    summary["access"],
                    json.dumps(summary["options"], sort_keys=True),
                    summary["target"],
                    summary["train_size"],
                    summary["candidates"],
                    *(metrics.get(c) for c in RECONSTRUCTION_COLUMNS),
                    declared.get("fraction_identified"),
                    summary["seconds"],
                ),
            )

    def suite_cell(self, suite: str, cell: str) -> sqlite3.Row | None:
        """What an earlier ``privbench bench`` recorded for one cell of a suite, or None."""
        return self.connection.execute(
            "SELECT * FROM suite_cells WHERE suite = ? AND cell = ?", (suite, cell)
        ).fetchone()

    def record_suite_cell(
        self,
        suite: str,
        cell: str,
        label: str,
        status: str,
        run_id: str | None,
        error: str | None,
    ) -> None:
        self.connection.execute(
            "INSERT OR REPLACE INTO suite_cells VALUES (?, ?, ?, ?, ?, ?)",
            (suite, cell, label, status, run_id, error),
        )

    def failed_cells(self, suite: str) -> list[tuple[str, str]]:
        """``(label, error)`` of a suite's cells that failed, so a leaderboard shows its gaps."""
        return [
            (row["label"], row["error"] or "")
            for row in self.connection.execute(
                "SELECT label, error FROM suite_cells "
                "WHERE suite = ? AND status IN ('failed', 'partial') "
                "ORDER BY label",
                (suite,),
            )
        ]

    def runs(self, limit: int | None = None) -> list[sqlite3.Row]:
        """Runs, newest first, each with its attacks' names (membership, then reconstruction)
        and the best membership AUC."""
        query = """
            SELECT runs.*,
                   (SELECT group_concat(attack, ', ') FROM (
                        SELECT attack FROM results WHERE run_id = runs.id
                        UNION ALL
                        SELECT attack FROM reconstructions WHERE run_id = runs.id)) AS attacks,
                   (SELECT max(auc) FROM results WHERE run_id = runs.id) AS best_auc
            FROM runs ORDER BY runs.created_at DESC, runs.id DESC
        """
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return list(self.connection.execute(query))

    def find_run(self, prefix: str) -> dict[str, Any]:
        """The full record of the run whose id is or starts with *prefix* (``latest`` works)."""
        if prefix == "latest":
            rows = list(
                self.connection.execute(
                    "SELECT record FROM runs ORDER BY created_at DESC, id DESC LIMIT 1"
                )
            )
        else:
            rows = list(
                self.connection.execute(
                    "SELECT record FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id",
                    (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
                )
            )
        if not rows:
            raise PrivbenchError(
                f"no run '{prefix}' in {self.path}; list them with 'privbench runs'"
            )
        if len(rows) > 1:
            raise PrivbenchError(f"'{prefix}' matches {len(rows)} runs; give more of the id")
        return json.loads(rows[0]["record"])
