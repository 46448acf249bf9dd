"""One audit, end to end: spec -> components -> pool -> fitted models -> signals -> attacks and
analyses -> recorded result. Each arrow is a module of :mod:`privbench.engine`; this one only
puts them in order, and offers the jobs a suite splits an audit into (train some models, score
one model, run the rest).

Everything the spec names is validated (:func:`prepare`) before any data is loaded or any model
trained. An attack, scorer or analysis that raises is recorded as failed beside the others'
results, which are kept. Results are written only when every attack has finished: files
atomically, then one database transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from privbench.engine import analyses, attacks, fitting, reconstruct, recording
from privbench.engine.components import Components, resolve
from privbench.engine.pool import Pool
from privbench.engine.preflight import check_workspace
from privbench.engine.progress import Callback
from privbench.engine.signals import SignalCache, check_queries
from privbench.engine.slicing import slice_groups
from privbench.engine.spec import AuditSpec
from privbench.engine.store import Workspace
from privbench.plugins import Registry, get_registry
from privbench.plugins.interfaces import Signal
from privbench.results.parts import Failure
from privbench.results.result import VULNERABLE_IMAGES, AuditResult


def prepare(spec: AuditSpec, registry: Registry | None = None) -> Components:
    """*spec*'s plugins resolved and validated (nothing is loaded or trained)."""
    return resolve(spec, registry or get_registry())


def plan(spec: AuditSpec, registry: Registry | None = None) -> Pool:
    """*spec*'s pool: its data loaded, masks drawn, store keys computed (nothing trained)."""
    return Pool.plan(prepare(spec, registry))


def train_models(
    spec: AuditSpec, workspace: Workspace, indices: Sequence[int], registry: Registry | None = None
) -> int:
    """Train the models *indices* of *spec*'s pool into *workspace* (a suite's training job)."""
    return fitting.train_models(plan(spec, registry), workspace, indices)


def score_model(
    spec: AuditSpec,
    workspace: Workspace,
    index: int,
    wanted: Sequence[Signal],
    target: bool,
    registry: Registry | None = None,
) -> None:
    """Compute the signals *wanted* for stored model *index* into the cache, and a *target*'s
    test logits (a suite's scoring job), so that the audit finds them there."""
    pool = plan(spec, registry)
    model, _ = fitting.load_or_train(pool, workspace, index)
    released = pool.components.defense.instance.release(model.to(pool.components.device).eval())
    SignalCache(pool, workspace).compute(index, released, wanted, target)


def _vulnerable_images(pool: Pool, results: Sequence[Any]) -> Callable[[Any], None]:
    """Writes the images of the members each attack was surest of, by attack name."""
    position = {int(sample): k for k, sample in enumerate(pool.indices)}
    chosen = {r.name: [position[s] for s in r.vulnerable] for r in results if r.vulnerable}

    def write(path: Any) -> None:
        from safetensors.torch import save_file

        save_file({name: pool.population.x[rows].contiguous() for name, rows in chosen.items()},
                  str(path))  # fmt: skip

    return write


def run_audit(
    spec: AuditSpec | Components,
    workspace: Workspace,
    *,
    registry: Registry | None = None,
    callback: Callback | None = None,
    insert: bool = True,
    notes: Sequence[str] = (),
) -> AuditResult:
    """The whole audit. With ``insert=False`` the run folder is written but the database is
    left to the caller (a suite's driver inserts what its workers return). *notes* (settings
    filled in for the caller) are kept with the result."""
    check_workspace(workspace.root, database=insert)
    callback = callback or Callback()
    started = time.perf_counter()
    components = spec if isinstance(spec, Components) else prepare(spec, registry)
    pool = Pool.plan(components)
    pool.check_model()
    check_queries(pool)
    workspace.create()  # only once the audit can start: bad input leaves no folders behind
    workspace.on_repair = callback.on_store_repair
    callback.on_audit_start(components.spec, len(pool), len(pool.missing(workspace)))
    fitted = fitting.fit_pool(pool, workspace, callback)
    cache = SignalCache(pool, workspace)
    failures: list[Failure] = []

    def failed(kind: str, name: str, err: Exception) -> None:
        failures.append(Failure.of(kind, name, err))
        callback.on_failure(failures[-1])

    def contained(kind: str, name: str, run: Callable[..., Any], *args: Any) -> Any:
        """*run*'s outcome, or None when it raised: then it is recorded as failed and the
        audit goes on, so one broken attack does not throw away the others' results."""
        try:
            return run(*args)
        except Exception as err:  # any plugin error; KeyboardInterrupt still stops
            failed(kind, name, err)
            return None

    def analysis(name: str, run: Callable[..., Any], *args: Any) -> Any:
        callback.on_analysis_start(name)
        begun = time.perf_counter()
        outcome = run(pool, fitted, cache, *args)
        callback.on_analysis_end(name, time.perf_counter() - begun)
        return outcome

    utility = analysis("utility", analyses.utility)
    tables: dict[str, str] = {}
    memorization = None
    if components.spec.memorization:
        outcome = contained("memorization", "memorization", analysis, "memorization",
                            analyses.memorization_of)  # fmt: skip
        if outcome is not None:
            memorization, tables["memorization.csv"] = outcome
    scorers = {}
    for choice, scorer in zip(components.spec.scorers, components.scorers, strict=True):
        outcome = contained("scorer", scorer.name, analysis, f"scorer {scorer.name}",
                            analyses.scorer_report, scorer, dict(choice.options))  # fmt: skip
        if outcome is not None:
            scorers[scorer.name], tables[f"scores-{scorer.name}.csv"] = outcome
    groups = slice_groups(components.spec.slices, pool, fitted.models, cache)
    results, curves = [], {}
    for attack in components.attacks:
        outcome = contained("attack", attack.name, attacks.run_attack,
                            pool, fitted, cache, attack, callback, groups)  # fmt: skip
        if outcome is not None:
            results.append(outcome[0])
            curves[attack.name] = outcome[1]
    artifacts: reconstruct.Artifacts = {}
    if any(result.vulnerable for result in results):
        # Tensors only: an audit draws no figure for them; the run's page does.
        artifacts[VULNERABLE_IMAGES] = _vulnerable_images(pool, results)
    reconstructions = []
    if components.reconstructions:
        reconstructions = analysis(
            "reconstruction", reconstruct.reconstruct, artifacts,
            lambda name, err: failed("reconstruction", name, err),
        )  # fmt: skip
    result = recording.assemble(
        components,
        population=len(pool.population),
        attacks=results,
        utility=utility,
        metas=fitted.metas,
        trained=fitted.trained,
        training_seconds=fitted.seconds,
        seconds=time.perf_counter() - started,
        scorers=scorers,
        memorization=memorization,
        reconstructions=reconstructions,
        notes=notes,
        failures=failures,
        num_classes=pool.dataset.num_classes,
        references=len(pool.shadows_of(pool.targets[0])),
        canaries=len(pool.canaries.positions) if pool.canaries is not None else None,
        sample_names=(
            {int(i): pool.dataset.train_names[i] for i in pool.indices}
            if pool.dataset.train_names is not None
            else None
        ),
    )
    recording.write(workspace, result, curves, tables, artifacts)
    if insert:
        recording.insert_run(workspace, result)
    callback.on_audit_end(result)
    return result
