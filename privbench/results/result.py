"""The typed result of an audit: what ``privbench.audit(...)`` returns and ``privbench.load_run``
reads back.

An :class:`AuditResult` is written as the run's ``results.json`` (its :meth:`~AuditResult.
to_record`, also kept in the workspace database) plus ``membership-scores.safetensors``, the
per-sample scores of every attack, whose SHA-256 the record holds so that a changed file is
refused when read (:mod:`privbench.results.runs`). :meth:`AuditResult.from_record` reads
records of older runs too (fields they lack are empty), so an old run loads as the same kind of
object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import attrs
import numpy as np

from privbench.analysis.theory import TheoreticalMaximum
from privbench.errors import PrivbenchError
from privbench.results.parts import (
    AttackResult,
    Failure,
    MembershipScores,
    MemorizationSummary,
    ReconstructionResult,
    RunSpec,
    ScorerSummary,
    Training,
    Utility,
)

RECORD_FORMAT = 2
"""Version of ``results.json``: 2 added per-sample scores, per-target utility and notes."""
SCORES_FILE = "membership-scores.safetensors"
VULNERABLE_IMAGES = "vulnerable-images.safetensors"
"""Where a run keeps the images of each attack's most vulnerable members (tensors by attack
name; the run's page draws them)."""


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)


@attrs.define(eq=False)
class AuditResult:
    """Everything one audit measured. Equal results have equal records and per-sample scores
    (where it lies, ``path``, is not part of what it is)."""

    run_id: str
    created_at: str
    spec: RunSpec
    attacks: tuple[AttackResult, ...]
    utility: Utility
    training: Training
    dp_bound: TheoreticalMaximum | None = None
    """The tight bounds the defense's DP guarantee puts on every metric, if it reports one."""
    scorers: dict[str, ScorerSummary] = attrs.field(factory=dict)
    memorization: MemorizationSummary | None = None
    reconstructions: tuple[ReconstructionResult, ...] = ()
    environment: dict[str, Any] = attrs.field(factory=dict)
    seconds: float = 0.0
    notes: tuple[str, ...] = ()
    """Settings filled in for the caller (a preset, an attack's victim setting)."""
    warnings: tuple[str, ...] = ()
    """Numbers that cannot be trusted as they read, and why (:mod:`privbench.engine.caveats`)."""
    sample_names: dict[int, str] | None = None
    """Each sample id's stable name, where the data has one (ImageFolder: the image's path)."""
    path: Path | None = None
    """The run's folder (``results.json``, plots, CSVs)."""
    scores_digest: str | None = None
    """SHA-256 of the run's per-sample scores file, as recorded."""
    failures: tuple[Failure, ...] = ()
    """The attacks, scorers and analyses that raised, with their errors (the rest is kept)."""

    @property
    def ok(self) -> bool:
        """Whether every part of the audit finished (no :attr:`failures`)."""
        return not self.failures

    # -- access ---------------------------------------------------------------------------------

    def attack(self, name: str) -> AttackResult:
        """The result of attack *name*."""
        for result in self.attacks:
            if result.name == name:
                return result
        known = ", ".join(a.name for a in self.attacks) or "none"
        raise KeyError(f"no attack '{name}' in run {self.run_id} (attacks: {known})")

    def scorer_values(self, name: str) -> MembershipScores:
        """Scorer *name*'s value on every (target, sample) of the run, read from its
        ``scores-<name>.csv`` (as ``score``, beside ``member``, ``sample`` and ``target``)."""
        if name not in self.scorers:
            known = ", ".join(self.scorers) or "none"
            raise KeyError(f"no scorer '{name}' in run {self.run_id} (scorers: {known})")
        path = (self.path or Path(".")) / f"scores-{name}.csv"
        try:
            table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        except (OSError, ValueError) as err:
            raise PrivbenchError(f"cannot read {path}: {err}") from None
        return MembershipScores(
            score=table[:, 4],
            member=table[:, 3].astype(bool),
            sample=table[:, 0].astype(np.int64),
            target=table[:, 2].astype(np.int64),
        )

    @property
    def files(self) -> dict[str, Path]:
        """The run's files by name (those that exist)."""
        if self.path is None:
            return {}
        return {p.name: p for p in sorted(self.path.iterdir()) if p.is_file()}

    def summary(self, file: IO[str] | None = None) -> None:
        """Print the table ``privbench run`` prints (to *file*, standard output by default)."""
        from privbench.results.tables import summary_text

        print(summary_text(self), file=file, end="")

    def __str__(self) -> str:
        from privbench.results.tables import summary_text

        return summary_text(self)

    def to_pandas(self) -> Any:
        """One row per attack: ``attack``, ``access``, every metric, the per-target AUC spread,
        the cost, the options, and the run's identity. Needs ``pip install
        'privbench[pandas]'``."""
        try:
            import pandas as pd
        except ImportError:
            raise PrivbenchError(
                "to_pandas() needs pandas: pip install 'privbench[pandas]'"
            ) from None
        rows = []
        for result in self.attacks:
            rows.append(
                {
                    "attack": result.name,
                    "access": result.access,
                    **result.metrics.as_dict(),
                    "auc_mean": result.per_target.mean.get("auc", math.nan),
                    "auc_std": result.per_target.std.get("auc", math.nan),
                    "seconds": result.seconds,
                    "signal_seconds": result.signal_seconds,
                    "options": result.options,
                    "dataset": self.spec.dataset.name,
                    "model": self.spec.model.name,
                    "defense": self.spec.defense.name,
                    "test_accuracy": self.utility.test_accuracy,
                    "run_id": self.run_id,
                }
            )
        return pd.DataFrame(rows, columns=list(rows[0]) if rows else ["attack", "auc"])

    # -- records --------------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """The run as ``results.json`` holds it (JSON-ready)."""
        record: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "spec": self.spec.to_record(),
            "utility": self.utility.to_record(),
            "training": attrs.asdict(self.training),
            "attacks": [a.to_record() for a in self.attacks],
            "environment": self.environment,
            "seconds": self.seconds,
        }
        if self.dp_bound is not None:
            record["dp_bound"] = self.dp_bound.as_dict()
        if self.scorers:
            record["scorers"] = {k: attrs.asdict(v) for k, v in self.scorers.items()}
        if self.memorization is not None:
            record["memorization"] = self.memorization.to_record()
        if self.reconstructions:
            record["reconstructions"] = [r.to_record() for r in self.reconstructions]
        if self.notes:
            record["notes"] = list(self.notes)
        if self.warnings:
            record["warnings"] = list(self.warnings)
        if self.sample_names:
            record["sample_names"] = {str(k): v for k, v in self.sample_names.items()}
        if self.failures:
            record["failures"] = [attrs.asdict(f) for f in self.failures]
        if self.scores_digest is not None:
            record["scores"] = {"file": SCORES_FILE, "sha256": self.scores_digest}
        return record

    @classmethod
    def from_record(
        cls,
        record: Mapping[str, Any],
        path: Path | None = None,
        scores: Mapping[str, MembershipScores] | None = None,
    ) -> AuditResult:
        """An audit result from a stored record (any format so far) and its attacks' scores."""
        try:
            return cls(
                run_id=record["run_id"],
                created_at=record["created_at"],
                spec=RunSpec.of(record["spec"]),
                attacks=tuple(
                    AttackResult.of(a, (scores or {}).get(a["name"])) for a in record["attacks"]
                ),
                utility=Utility.of(record["utility"]),
                training=Training(**record["training"]),
                dp_bound=TheoreticalMaximum(**record["dp_bound"]) if "dp_bound" in record else None,
                scorers={k: ScorerSummary(**v) for k, v in record.get("scorers", {}).items()},
                memorization=(
                    MemorizationSummary(**record["memorization"])
                    if "memorization" in record
                    else None
                ),
                reconstructions=tuple(
                    ReconstructionResult(**r) for r in record.get("reconstructions", ())
                ),
                environment=dict(record.get("environment", {})),
                seconds=record.get("seconds", 0.0),
                notes=tuple(record.get("notes", ())),
                warnings=tuple(record.get("warnings", ())),
                sample_names=(
                    {int(k): v for k, v in record["sample_names"].items()}
                    if record.get("sample_names")
                    else None
                ),
                path=path,
                scores_digest=record.get("scores", {}).get("sha256"),
                failures=tuple(Failure(**f) for f in record.get("failures", ())),
            )
        except (KeyError, TypeError) as err:
            where = f" in {path}" if path else ""
            raise PrivbenchError(
                f"the run record{where} is not a privbench result ({type(err).__name__}: {err})"
            ) from None

    def _canonical(self) -> str:
        # NaN compares unequal to itself; its JSON text does not.
        return json.dumps(self.to_record(), sort_keys=True, default=_plain)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AuditResult):
            return NotImplemented
        return self._canonical() == other._canonical() and [a.scores for a in self.attacks] == [
            a.scores for a in other.attacks
        ]

    __hash__ = None  # type: ignore[assignment]
