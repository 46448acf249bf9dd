"""A suite as waves of jobs: every missing model trained once however many cells share it (wave
1), one scoring pass per model computing the signals the cells' attacks list (wave 2), then one
audit per cell (wave 3). Jobs go to an executor (:mod:`privbench.bench.executors`); they read
and write only the shared store, and the driver alone records each cell in the database, in the
same transaction as its run, so that a rerun does no finished work and a failing job fails only
the cells that need it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from privbench.bench.executors import Executor, InlineExecutor
from privbench.bench.suite import Cell, Suite
from privbench.engine import audit, fitting
from privbench.engine.preflight import check_workspace
from privbench.engine.recording import insert_run
from privbench.engine.signals import wanted_signals
from privbench.engine.spec import AuditSpec
from privbench.engine.store import Workspace
from privbench.plugins import Registry, get_registry
from privbench.plugins.interfaces import Signal
from privbench.results.db import ResultsDB
from privbench.results.result import AuditResult


@attrs.frozen
class CellOutcome:
    cell: Cell
    status: str
    """done (run now), cached (recorded by an earlier bench), partial (run now and recorded,
    but some of its attacks or analyses failed: *error* says which) or failed."""
    run_id: str | None = None
    error: str | None = None


@attrs.frozen
class TrainingJob:
    """Models of one cell's pool missing from the store: a job of the first wave. One model,
    or several that train as one ensemble (small models under a defense that trains by the
    recipe: :mod:`privbench.engine.ensemble`)."""

    spec: AuditSpec
    indices: tuple[int, ...]
    keys: tuple[str, ...]
    workspace: str


@attrs.frozen
class ScoringJob:
    """One scoring pass: the signals the pending cells' attacks will read from one stored
    model (and a target's test logits), computed into the cache. A job of the second wave."""

    spec: AuditSpec
    index: int
    key: str
    signals: tuple[Signal, ...]
    target: bool
    workspace: str


@attrs.frozen
class CellJob:
    """One cell's audit on its stored pool: a job of the third wave."""

    cell: Cell
    workspace: str


def train_models(job: TrainingJob, registry: Registry | None = None) -> int:
    """Run one training job (in whichever process the executor chose)."""
    return audit.train_models(job.spec, Workspace(job.workspace), job.indices, registry)


def score_model(job: ScoringJob, registry: Registry | None = None) -> None:
    """Run one scoring job."""
    audit.score_model(
        job.spec, Workspace(job.workspace), job.index, job.signals, job.target, registry
    )


def run_cell(job: CellJob, registry: Registry | None = None) -> AuditResult:
    """Run one cell's audit; its run folder is written, the database is left to the driver."""
    return audit.run_audit(job.cell.spec, Workspace(job.workspace), registry=registry,
                           insert=False)  # fmt: skip


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


@attrs.frozen
class SuitePlan:
    """What a bench would do now: the cells already recorded, the jobs of each wave."""

    recorded: list[CellOutcome]
    pending: list[Cell]
    """Cells to run (wave 3), each after its models are stored."""
    training: list[TrainingJob]
    """Models missing from the store (wave 1), each once however many cells share it."""
    scoring: list[ScoringJob]
    """One scoring pass per model the pending cells use (wave 2), before the cells (wave 3)."""
    needs: dict[str, list[str]]
    """Cell key -> the store keys of its pool's models."""
    models: int
    """Distinct models the pending cells use, stored or not."""
    unplanned: list[tuple[Cell, str]]
    """Pending cells whose pool could not be laid out (their data failed to load), and why."""


def plan_suite(
    suite: Suite,
    workspace: Workspace,
    registry: Registry | None = None,
    *,
    retry_failed: bool = False,
) -> SuitePlan:
    """Expand the matrix into jobs against what *workspace* holds (reads, writes nothing)."""
    registry = registry or get_registry()
    recorded, pending = [], []
    previous_of: dict[str, Any] = {}
    if workspace.database.is_file():
        with ResultsDB(workspace.database) as db:
            previous_of = {cell.key: db.suite_cell(suite.name, cell.key) for cell in suite.cells}
    for cell in suite.cells:
        previous = previous_of.get(cell.key)
        if previous is not None and (previous["status"] == "done" or not retry_failed):
            status = "cached" if previous["status"] == "done" else previous["status"]
            recorded.append(CellOutcome(cell, status, previous["run_id"], previous["error"]))
        else:
            pending.append(cell)
    jobs: list[TrainingJob] = []
    planned: set[str] = set()
    scoring: dict[str, ScoringJob] = {}
    needs: dict[str, list[str]] = {}
    unplanned = []
    root = str(workspace.root)
    for cell in list(pending):
        try:
            pool = audit.plan(cell.spec, registry)
            keys, wanted = pool.keys, wanted_signals(pool)
        except Exception as err:
            pending.remove(cell)
            unplanned.append((cell, _error(err)))
            continue
        needs[cell.key] = keys
        targets = cell.spec.targets if cell.spec.targets is not None else len(keys)
        missing = [
            index
            for index, key in enumerate(keys)
            if key not in planned and not workspace.has_model(key)
        ]
        planned.update(keys[index] for index in missing)
        together = fitting.ensemble_size(pool) if len(missing) > 1 else 1
        for first in range(0, len(missing), together):
            chunk = tuple(missing[first : first + together])
            jobs.append(TrainingJob(cell.spec, chunk, tuple(keys[i] for i in chunk), root))
        for index, key in enumerate(keys):
            target = index < targets
            known = scoring.get(key)
            if known is None:
                scoring[key] = ScoringJob(cell.spec, index, key, tuple(wanted), target, root)
            else:  # another cell on the same pool: the union of what both read
                more = tuple(s for s in wanted if s not in known.signals)
                scoring[key] = attrs.evolve(
                    known, signals=known.signals + more, target=known.target or target
                )
    models = len({key for keys in needs.values() for key in keys})
    return SuitePlan(recorded, pending, jobs, list(scoring.values()), needs, models, unplanned)


def run_suite(
    suite: Suite,
    workspace: Workspace,
    registry: Registry | None = None,
    *,
    executor: Executor | None = None,
    retry_failed: bool = False,
    on_plan: Callable[[SuitePlan], None] | None = None,
    on_model: Callable[[TrainingJob, BaseException | None], None] | None = None,
    on_score: Callable[[ScoringJob, BaseException | None], None] | None = None,
) -> Iterator[CellOutcome]:
    """Run every cell not yet recorded for this suite in *workspace*, in three waves on
    *executor* (in this process by default): every missing model of every pending cell, each
    trained once however many cells share it; one scoring pass per model (the signals the
    attacks declared); then every pending cell's attacks. A failing job fails the cells that
    need it, with its error, and the others go on. *on_plan* hears the plan before any job
    starts; *on_model* and *on_score* hear each training and scoring job as it finishes."""
    check_workspace(workspace.root)
    registry = registry or get_registry()
    executor = executor or InlineExecutor()
    workspace.create()
    plan = plan_suite(suite, workspace, registry, retry_failed=retry_failed)
    yield from plan.recorded

    def finish(outcome: CellOutcome, result: AuditResult | None = None) -> CellOutcome:
        def record(db: ResultsDB) -> None:
            db.record_suite_cell(suite.name, outcome.cell.key, outcome.cell.label,
                                 outcome.status, outcome.run_id, outcome.error)  # fmt: skip

        if result is not None:
            insert_run(workspace, result, then=record)  # the run and its cell: one transaction
        else:
            with ResultsDB(workspace.database) as db:
                record(db)
        return outcome

    for cell, error in plan.unplanned:
        yield finish(CellOutcome(cell, "failed", error=error))
    if on_plan is not None:
        on_plan(plan)

    def runnable(function: Callable[..., Any]) -> Callable[..., Any]:
        # In this process jobs use this registry (it may hold plugins loaded by hand);
        # elsewhere each worker loads its own.
        return functools.partial(function, registry=registry) if executor.in_process else function

    # Wave 1: the missing models.
    failed: dict[str, str] = {}
    for job, result in executor.map(runnable(train_models), plan.training):
        error = result if isinstance(result, BaseException) else None
        if error is not None:
            which = ", ".join(map(str, job.indices))
            for key in job.keys:
                failed[key] = f"model(s) {which} of its pool did not train: {_error(error)}"
        if on_model is not None:
            on_model(job, error)

    # Wave 2: one scoring pass per model. Only a head start: a pass that fails leaves its
    # signals to the cell, which computes them itself or fails with the reason.
    stored = [job for job in plan.scoring if job.key not in failed]
    for job, result in executor.map(runnable(score_model), stored):
        if on_score is not None:
            on_score(job, result if isinstance(result, BaseException) else None)

    # Wave 3: every cell whose models are all stored.
    cell_jobs = []
    for cell in plan.pending:
        broken = [failed[key] for key in plan.needs[cell.key] if key in failed]
        if broken:
            yield finish(CellOutcome(cell, "failed", error=broken[0]))
        else:
            cell_jobs.append(CellJob(cell, str(workspace.root)))
    for job, result in executor.map(runnable(run_cell), cell_jobs):
        if isinstance(result, BaseException):
            yield finish(CellOutcome(job.cell, "failed", error=_error(result)))
        elif result.failures:  # recorded with the results it has; --retry-failed reruns it
            error = "; ".join(failure.line for failure in result.failures)
            status = "partial" if result.attacks or result.reconstructions else "failed"
            yield finish(CellOutcome(job.cell, status, result.run_id, error), result)
        else:
            yield finish(CellOutcome(job.cell, "done", result.run_id), result)
