"""Recording an audit: its :class:`~privbench.results.result.AuditResult` assembled, its folder
written (per-sample scores, ``results.json``, the log-log ROC plot, CSV tables, reconstruction
grids) to a staging folder renamed into ``runs/<run id>``, then its rows inserted into the
workspace database in one transaction. A run is in the database or nowhere: nothing is
half-written when anything fails first.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privbench.analysis.theory import theoretical_maximum
from privbench.engine.caveats import caveats
from privbench.engine.components import Components
from privbench.engine.store import Workspace
from privbench.results.db import ResultsDB
from privbench.results.parts import (
    AttackResult,
    Failure,
    MemorizationSummary,
    PluginRecord,
    ReconstructionResult,
    RunSpec,
    ScorerSummary,
    Training,
    Utility,
)
from privbench.results.result import AuditResult
from privbench.results.runs import write_run
from privbench.version import __version__

Curves = Mapping[str, tuple[np.ndarray, np.ndarray]]
"""Attack name -> its full ROC (fpr, tpr), for the run's plot."""


def new_run_id() -> tuple[str, str]:
    """A fresh run id (time-ordered, with a random suffix) and its creation time."""
    created = dt.datetime.now(dt.timezone.utc)
    return created.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3), created.isoformat(
        timespec="seconds"
    )


def environment(components: Components) -> dict[str, Any]:
    """Versions of privbench, torch, Python and every loaded plugin."""
    return {
        "privbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "plugins": {
            info.name: {"distribution": info.distribution, "version": info.version}
            for info in components.registry.plugins.values()
            if info.status == "loaded"
        },
    }


def assemble(
    components: Components,
    *,
    population: int,
    attacks: Sequence[AttackResult],
    utility: Utility,
    metas: Sequence[dict[str, Any]],
    trained: int,
    training_seconds: float,
    seconds: float,
    scorers: Mapping[str, ScorerSummary],
    memorization: MemorizationSummary | None,
    reconstructions: Sequence[ReconstructionResult],
    notes: Sequence[str] = (),
    failures: Sequence[Failure] = (),
    num_classes: int = 0,
    references: int = 0,
    sample_names: Mapping[int, str] | None = None,
    canaries: int | None = None,
) -> AuditResult:
    spec = components.spec
    run_id, created_at = new_run_id()
    target_meta = {k: v for k, v in metas[0].items() if k not in {"index", "members"}}
    dp_bound = None
    if "epsilon" in target_meta:
        # A DP defense records its accountant's guarantee: show what it allows at most.
        dp_bound = theoretical_maximum(
            float(target_meta["epsilon"]), float(target_meta.get("delta", 0.0))
        )
    identity = components.identity
    paper_references = {
        a.name: getattr(a.instance, "paper_reference_models", 0) for a in components.attacks
    }
    return AuditResult(
        run_id=run_id,
        created_at=created_at,
        spec=RunSpec(
            dataset=PluginRecord.of(identity["dataset"]),
            model=PluginRecord.of(identity["model"]),
            defense=PluginRecord.of(identity["defense"]),
            recipe=spec.recipe,
            shadows=spec.shadows,
            targets=spec.target_count,
            population=population,
            seed=spec.seed,
            paired=spec.paired,
            device=str(components.device),
            target=(
                {k: metas[0][k] for k in ("weights", "sha256", "members")}
                if spec.target is not None
                else None
            ),
            one_run=(
                {"canaries": canaries, "canary_kind": spec.canary_kind}
                if canaries is not None
                else None
            ),
        ),
        attacks=tuple(attacks),
        utility=utility,
        training=Training(
            models=len(metas),
            trained=trained,
            reused=len(metas) - trained - (spec.target is not None),
            seconds=training_seconds,
            target_meta=target_meta,
        ),
        dp_bound=dp_bound,
        scorers=dict(scorers),
        memorization=memorization,
        reconstructions=tuple(reconstructions),
        environment=environment(components),
        seconds=seconds,
        notes=tuple(notes),
        failures=tuple(failures),
        warnings=caveats(attacks, utility, num_classes, references, paper_references),
        sample_names=dict(sample_names) if sample_names else None,
    )


def write(
    workspace: Workspace,
    result: AuditResult,
    curves: Curves,
    tables: Mapping[str, str],
    artifacts: Mapping[str, Callable[[Path], object]],
) -> AuditResult:
    """Write *result*'s folder into ``runs/`` atomically; sets and returns its ``path``."""
    from privbench.results.plots import plot_roc  # matplotlib on use: loading it takes a second

    run_dir = workspace.runs / result.run_id
    staging = Path(tempfile.mkdtemp(prefix=f".{result.run_id}-", dir=workspace.runs))
    try:
        if curves:
            spec = result.spec
            plot_roc(
                {a.name: (*curves[a.name], a.metrics.auc) for a in result.attacks},
                staging / "roc.png",
                title=f"{spec.dataset.name} / {spec.model.name} / defense {spec.defense.name}",
            )
        write_run(staging, result)
        for name, text in tables.items():
            (staging / name).write_text(text)
        for name, write_artifact in artifacts.items():
            write_artifact(staging / name)
        os.replace(staging, run_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.path = run_dir
    return result


def insert_run(
    workspace: Workspace, result: AuditResult, then: Callable[[ResultsDB], object] = id
) -> None:
    """Insert a written run into the database (and do *then* in the same transaction); a run
    whose insert fails loses its folder: a run is in the database or nowhere."""
    assert result.path is not None, "write the run before inserting it"
    try:
        with ResultsDB(workspace.database) as db:
            db.insert_run(result.to_record(), result.path)
            then(db)
    except BaseException:
        shutil.rmtree(result.path, ignore_errors=True)
        raise
