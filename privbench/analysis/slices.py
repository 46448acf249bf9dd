"""Membership metrics per slice of the samples (TF Privacy's ``SlicingSpec``): by class, by
whether the target classified the sample correctly, or by any per-sample group a user gives.

A slice's metrics are those of the attack's scores restricted to the slice's entries (pooled
over target turns like the attack's own). A slice without both members and non-members has no
metrics, only its counts. Hanley and McNeil's (1982) standard error of an AUC of 0.5 gives the
noise level an AUC below chance must exceed to mean anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs
import numpy as np

from privbench.analysis.metrics import AttackMetrics, compute_metrics

SLICES = ("class", "correct")
"""Slices the engine derives itself; others come from the user, one group per sample."""


@attrs.frozen
class SliceResult:
    """An attack's metrics on one slice of the samples: ``slice`` is what was sliced by
    (``class``, ``correct``, or a user's column), ``value`` the group (``"3"``, ``"true"``)."""

    slice: str
    value: str
    members: int
    non_members: int
    metrics: AttackMetrics | None
    """None where the slice lacks members or non-members."""

    def to_record(self) -> dict:
        record = attrs.asdict(self, recurse=False)
        record["metrics"] = self.metrics.as_dict() if self.metrics is not None else None
        return record

    @classmethod
    def of(cls, record: Mapping) -> SliceResult:
        metrics = record.get("metrics")
        return cls(
            slice=record["slice"],
            value=record["value"],
            members=record["members"],
            non_members=record["non_members"],
            metrics=AttackMetrics(**metrics) if metrics is not None else None,
        )


def _label(value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value.item() if isinstance(value, np.generic) else value)


def slice_metrics(
    scores: np.ndarray, member: np.ndarray, groups: Mapping[str, np.ndarray]
) -> tuple[SliceResult, ...]:
    """Metrics of *scores* (with their *member* truth) within every group of every slice of
    *groups* (slice name -> one group value per entry), groups in sorted order."""
    out = []
    for name, values in groups.items():
        values = np.asarray(values)
        if values.shape != scores.shape:
            raise ValueError(f"slice '{name}' has {len(values)} values for {len(scores)} scores")
        for value in np.unique(values):
            inside = values == value
            members = int(member[inside].sum())
            non_members = int(inside.sum()) - members
            metrics = (
                compute_metrics(scores[inside], member[inside]) if members and non_members else None
            )
            out.append(SliceResult(name, _label(value), members, non_members, metrics))
    return tuple(out)


def chance_auc_noise(members: int, non_members: int) -> float:
    """The standard error of the AUC of a score that does not separate the two groups
    (Hanley and McNeil 1982 at AUC 0.5): ``sqrt((m + n + 1) / (12 m n))``."""
    return math.sqrt((members + non_members + 1) / (12 * members * non_members))
