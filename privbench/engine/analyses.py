"""Analyses of a fitted pool beside the attacks: the targets' utility, Feldman-Zhang memorization
of every sample from the pool itself, and scorer plugins' values on the targets for members and
non-members. Each returns its typed summary and, where it has per-sample values, a CSV table.
"""

from __future__ import annotations

import numpy as np
import torch

from privbench.analysis.memorization import memorization, rank_correlation
from privbench.engine.components import Configured
from privbench.engine.fitting import FittedPool
from privbench.engine.pool import Pool
from privbench.engine.signals import SignalCache
from privbench.plugins.interfaces import Access
from privbench.plugins.options import config_dict
from privbench.results.parts import MemorizationSummary, ScorerSummary, TargetUtility, Utility


def utility(pool: Pool, fitted: FittedPool, cache: SignalCache) -> Utility:
    """Accuracy of the released target models on their own members and on the test split."""
    per_target = []
    test_y = pool.dataset.test.y
    for t in pool.targets:
        view = cache.view(t, fitted.models[t], Access.LOGITS)
        predictions = view.population_logits("none").argmax(1)
        members = torch.from_numpy(pool.masks[t])
        train = float((predictions == pool.population.y)[members].float().mean())
        test = float((cache.test_logits(t, view).argmax(1) == test_y).float().mean())
        per_target.append(TargetUtility(t, train, test))
    train_acc = float(np.mean([u.train_accuracy for u in per_target]))
    test_acc = float(np.mean([u.test_accuracy for u in per_target]))
    return Utility(train_acc, test_acc, train_acc - test_acc, tuple(per_target))


def memorization_of(
    pool: Pool, fitted: FittedPool, cache: SignalCache
) -> tuple[MemorizationSummary, str]:
    """Feldman-Zhang memorization of every population sample from the pool (no extra training)
    and, where a ``curvature`` scorer is installed, its rank correlation with the mean
    input-loss curvature over the models that trained on the sample (the empirical link of
    Ravikumar et al., ICML 2024, Sec. 6.3)."""
    population, masks = pool.population, pool.masks
    views = [cache.view(k, m, Access.PARAMETERS) for k, m in enumerate(fitted.models)]
    correct = np.stack(
        [(v.population_logits("none").argmax(1) == population.y).numpy() for v in views]
    )
    estimate = memorization(correct, masks)
    rho = p_value = None
    curvature = np.full(len(population), np.nan)
    if "curvature" in pool.components.registry.names("scorer"):
        values = np.stack(
            [v.population_scores("curvature", method="finite-difference").numpy() for v in views]
        )
        with np.errstate(invalid="ignore"):
            curvature = np.where(masks, values, 0.0).sum(0) / masks.sum(0)
        rho, p_value = rank_correlation(estimate.score, curvature)
    summary = MemorizationSummary(
        models=len(fitted.models),
        mean=float(np.nanmean(estimate.score)),
        above_0_5=int(np.nansum(estimate.score > 0.5)),
        spearman_curvature=rho,
        spearman_p_value=p_value,
    )
    lines = [
        "index,label,memorization,standard_error,accuracy_in,accuracy_out,n_in,n_out,curvature_in"
    ]
    for i in range(len(population)):
        lines.append(
            f"{pool.indices[i]},{int(population.y[i])},{estimate.score[i]:.6g},"
            f"{estimate.standard_error[i]:.6g},{estimate.accuracy_in[i]:.6g},"
            f"{estimate.accuracy_out[i]:.6g},{estimate.n_in[i]},{estimate.n_out[i]},"
            f"{curvature[i]:.6g}"
        )
    return summary, "\n".join(lines) + "\n"


def _stats(part: np.ndarray) -> dict[str, float]:
    finite = part[np.isfinite(part)]
    if finite.size == 0:
        return {"mean": float("nan"), "median": float("nan")}
    return {"mean": float(finite.mean()), "median": float(np.median(finite))}


def scorer_report(
    pool: Pool, fitted: FittedPool, cache: SignalCache, scorer: Configured, options: dict
) -> tuple[ScorerSummary, str]:
    """A scorer on every target model: its values (mean over query augmentations) summarised
    for members and non-members, with the AUC of the value as a membership score (0.5: the
    statistic does not separate them; below 0.5: members score lower)."""
    from sklearn.metrics import roc_auc_score

    values, member = [], []
    lines = ["index,label,target,member,value"]
    population = pool.population
    for t in pool.targets:
        view = cache.view(t, fitted.models[t], scorer.instance.access)
        raw = view.population_scores(scorer.name, **options).double()
        value = (raw.mean(1) if raw.ndim == 2 else raw).numpy()
        values.append(value)
        member.append(pool.masks[t])
        lines.extend(
            f"{pool.indices[i]},{int(population.y[i])},{t},{int(pool.masks[t][i])},{float(value[i])!r}"
            for i in range(len(population))
        )
    value, is_member = np.concatenate(values), np.concatenate(member)
    finite = np.isfinite(value)
    separable = finite.any() and 0 < is_member[finite].sum() < finite.sum()
    summary = ScorerSummary(
        options=config_dict(scorer.instance),
        access=scorer.access_label,
        members=_stats(value[is_member]),
        non_members=_stats(value[~is_member]),
        membership_auc=(
            float(roc_auc_score(is_member[finite], value[finite])) if separable else float("nan")
        ),
    )
    return summary, "\n".join(lines) + "\n"
