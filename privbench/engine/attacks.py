"""Running membership attacks: each target of the pool in turn, its shadows beside it, the
attack's scores pooled over targets into one ROC (K models give K x N evaluation points) and
also measured per target (Curvature Clues reports mean +- std over targets). In a one-run audit
the one model's canaries alone are measured, and their scores also give the one-run ε bound.

An attack's cost is its own work plus computing every signal it lists on every model it used,
wherever those signals were computed (here, in a suite's scoring pass, or by another attack).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from privbench.analysis.metrics import compute_metrics, roc, roc_points
from privbench.analysis.one_run import audit_canaries
from privbench.analysis.slices import slice_metrics
from privbench.engine.components import Configured
from privbench.engine.fitting import FittedPool
from privbench.engine.pool import Pool
from privbench.engine.progress import Callback
from privbench.engine.signals import SignalCache
from privbench.errors import PrivbenchError
from privbench.plugins.interfaces import Access, AttackContext
from privbench.plugins.options import config_dict
from privbench.results.parts import AttackResult, MembershipScores, Roc, Spread


def context_for(
    pool: Pool, fitted: FittedPool, cache: SignalCache, attack: Configured, target: int
) -> AttackContext:
    """What *attack* sees when pool model *target* is the target: the target through a view of
    the attack's declared access, its shadows (the attacker's own) with full access, and the
    dataset's test split as public non-members."""
    others = pool.shadows_of(target)
    return AttackContext(
        target=cache.view(target, fitted.models[target], attack.instance.access),
        shadows=[cache.view(k, fitted.models[k], Access.PARAMETERS) for k in others],
        shadow_keep=pool.masks[others],
        population=pool.population,
        num_classes=pool.dataset.num_classes,
        seed=pool.seed_of(10_000 + target),
        hflip_preserves_label=pool.dataset.hflip_preserves_label,
        public=pool.dataset.test if len(pool.dataset.test) else None,
    )


def spread(per_target: Sequence[dict[str, float]]) -> Spread:
    """Mean and sample standard deviation of each metric over target models."""
    keys = [k for k, v in per_target[0].items() if v is not None]  # a one-run bound is pooled
    values = {k: np.array([float(m[k]) for m in per_target]) for k in keys}
    with np.errstate(invalid="ignore"):  # an infinite bound's spread is undefined: NaN
        return Spread(
            mean={k: float(v.mean()) for k, v in values.items()},
            std={k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()},
        )


VULNERABLE = 16
"""How many of the members an attack was surest of a result lists."""


def most_vulnerable(scores: MembershipScores, count: int = VULNERABLE) -> tuple[int, ...]:
    """The sample ids of the members with the highest scores (each sample once)."""
    order = np.argsort(-scores.score[scores.member], kind="stable")
    ids = scores.sample[scores.member][order]
    _, first = np.unique(ids, return_index=True)
    return tuple(int(i) for i in ids[np.sort(first)][:count])


def run_attack(
    pool: Pool,
    fitted: FittedPool,
    cache: SignalCache,
    attack: Configured,
    callback: Callback,
    groups: Mapping[str, np.ndarray] | None = None,
) -> tuple[AttackResult, tuple[np.ndarray, np.ndarray]]:
    """One membership attack against every target; its result and its full ROC (fpr, tpr).
    *groups* (slice -> a group per pooled entry) adds its metrics per slice."""
    started = time.perf_counter()
    computed_before = cache.workspace.compute_seconds
    targets = pool.targets
    evaluated = pool.evaluated
    keep = np.arange(len(pool.population)) if evaluated is None else evaluated
    callback.on_attack_start(attack.name, len(targets))
    scores, truth, used = [], [], set()
    for done, target in enumerate(targets, 1):
        used.update([target, *pool.shadows_of(target)])
        context = context_for(pool, fitted, cache, attack, target)
        values = np.asarray(attack.instance.score(context), dtype=np.float64).reshape(-1)
        if values.shape[0] != len(pool.population):
            raise PrivbenchError(
                f"attack '{attack.name}' returned {values.shape[0]} scores for "
                f"{len(pool.population)} samples"
            )
        scores.append(values[keep])
        truth.append(pool.masks[target][keep])
        callback.on_attack_target(attack.name, done, len(targets))
    all_scores, all_truth = np.concatenate(scores), np.concatenate(truth)
    metrics = compute_metrics(all_scores, all_truth)
    one_run = audit_canaries(all_scores, all_truth) if evaluated is not None else None
    if one_run is not None:
        metrics = attrs.evolve(metrics, epsilon_one_run=one_run.epsilon)
    per_target = [compute_metrics(s, m).as_dict() for s, m in zip(scores, truth, strict=True)]
    fpr, tpr, _ = roc(all_scores, all_truth)
    seconds = time.perf_counter() - started
    signal_seconds = cache.seconds(attack.instance, sorted(used))
    if signal_seconds is not None:
        # Its cost from scratch: its own work plus every signal it reads, minus what it
        # computed itself (already in its wall time).
        seconds += signal_seconds - (cache.workspace.compute_seconds - computed_before)
    entries = MembershipScores(
        score=all_scores,
        member=all_truth,
        sample=np.tile(pool.indices[keep], len(targets)).astype(np.int64),
        target=np.repeat(np.asarray(targets, dtype=np.int64), len(keep)),
    )
    if groups and evaluated is not None:  # groups cover every sample of every target turn
        groups = {k: g.reshape(len(targets), -1)[:, keep].reshape(-1) for k, g in groups.items()}
    result = AttackResult(
        name=attack.name,
        access=attack.access_label,
        options=config_dict(attack.instance),
        metrics=metrics,
        per_target=spread(per_target),
        seconds=seconds,
        signal_seconds=signal_seconds or 0.0,
        roc=Roc.of(roc_points(fpr, tpr)),
        scores=entries,
        slices=slice_metrics(all_scores, all_truth, groups or {}),
        vulnerable=most_vulnerable(entries),
        one_run=one_run,
    )
    callback.on_attack_end(attack.name, metrics.auc, seconds)
    return result, (fpr, tpr)
