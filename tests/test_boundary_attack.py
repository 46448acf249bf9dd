"""The decision-boundary label-only attack (Choquette-Choo et al. 2021, HopSkipJump within a query
budget): its estimator on boundaries known in closed form, the budget and the access it keeps
to, and end to end: above chance on an overfit digits pool, at chance where training ignored
membership."""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import pytest
import torch
from conftest import label_only_context, null_defense_plugin
from privbench_plugins.attacks.boundary import (
    BoundaryAttack,
    LabelOracle,
    bisect,
    bisection_steps,
    hop_skip_jump,
)

from privbench import (
    Access,
    AccessDeniedError,
    AttackContext,
    ModelView,
    OptionError,
    TrainingRecipe,
)
from privbench.engine.audit import run_audit
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import Workspace
from privbench.plugins import Registry, get_registry
from privbench.testing import check_attack, tiny_linear_model

# -- the estimator on boundaries known in closed form ----------------------------------------


def test_bisection_finds_a_threshold_within_its_tolerance_one_query_a_step():
    # One dimension, label 1 beyond 0.3137; three segments crossing it at different fractions.
    oracle = LabelOracle(
        lambda z: (z.flatten(1)[:, 0] > 0.3137).long(), (1,), torch.zeros(3, dtype=torch.long), 12
    )
    x = torch.tensor([[0.0], [0.2], [-1.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0], [0.5], [0.32]], dtype=torch.float64)
    found = bisect(oracle, torch.arange(3), x, adv, steps=12)[:, 0]
    assert (found > 0.3137).all() and (found - 0.3137 <= 2.0**-12 * (adv - x)[:, 0]).all()
    assert oracle.used.tolist() == [12, 12, 12]
    with pytest.raises(RuntimeError, match="12 label queries"):
        bisect(oracle, torch.tensor([0]), x[:1], adv[:1], steps=1)
    assert bisection_steps(64) == 9  # HopSkipJump's tolerance 64 ** -1.5 = 2 ** -9


def _linear(n: int = 24, dim: int = 64) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 2-class linear model on flat inputs, ``(z - 1/2) . w > 0`` with ``|w| = 1``; samples of
    class 0 at known distances ``0.05 ... 0.3`` from its boundary, and starting points of class 1
    elsewhere on the other side (so that the segment between them is not the shortest path)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    w /= w.norm()

    def on_plane() -> torch.Tensor:
        noise = 0.1 * torch.randn(n, dim, generator=g, dtype=torch.float64)
        return 0.5 + noise - (noise @ w)[:, None] * w

    true = 0.05 + 0.25 * torch.rand(n, generator=g, dtype=torch.float64)
    x, start = on_plane() - true[:, None] * w, on_plane() + 0.2 * w
    assert x.min() > 0 and x.max() < 1 and start.min() > 0 and start.max() < 1
    return (lambda z: ((z.flatten(1) - 0.5) @ w > 0).long()), x, start, true


def test_hop_skip_jump_bounds_a_linear_boundary_from_above_and_converges_to_it(one_thread):
    predict, x, start, true = _linear()
    medians = []
    for budget in (30, 100, 300, 800):
        oracle = LabelOracle(predict, (64,), torch.zeros(len(x), dtype=torch.long), budget)
        found = hop_skip_jump(oracle, x, start, torch.Generator().manual_seed(1), 50)
        assert (oracle.used <= budget).all() and (oracle.used > budget - 20).all()
        ratio = found / true  # the true distance is |w.x + b| / |w|
        assert (ratio >= 1 - 1e-9).all(), "found a point closer than the boundary"
        medians.append(float(ratio.median()))
    # measured medians: 2.72, 1.62, 1.22, 1.08 (from the starting points: 8.0)
    assert medians == sorted(medians, reverse=True) and medians[-1] < 1.12, medians


# -- contract, access and budget -------------------------------------------------------------


def test_attack_contract():
    assert BoundaryAttack.access == Access.LABELS and BoundaryAttack.min_shadows == 0
    torch.manual_seed(0)  # check_attack draws its population from the global generator
    scores = check_attack(BoundaryAttack, queries=40)  # the view grants labels access only
    assert np.isfinite(scores).all() and (scores >= 0).all() and (scores > 0).any()
    torch.manual_seed(0)
    assert np.array_equal(scores, check_attack(BoundaryAttack, queries=40)), "not deterministic"


class _LabelsOnly(ModelView):
    """A labels view that counts the images it labels and fails the test on any other call."""

    def __init__(self) -> None:
        super().__init__(tiny_linear_model(), Access.LABELS, batch_size=64)
        self.asked = 0

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.asked += len(x)
        return super().predict(x)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the boundary attack asked for more than labels")

    logits = loss = loss_function = input_gradient = population_logits = _refuse
    population_scores = _refuse


def _context(target: ModelView, seed: int = 0) -> AttackContext:
    return label_only_context(target, seed)


def test_labels_suffice_and_logits_are_refused():
    view = ModelView(tiny_linear_model(), Access.LABELS)
    with pytest.raises(AccessDeniedError):
        view.logits(torch.zeros(1, 1, 8, 8))
    assert BoundaryAttack(queries=30).score(_context(view)).shape == (30,)
    assert BoundaryAttack(queries=30).score(_context(_LabelsOnly())).shape == (30,)


@pytest.mark.parametrize("queries", [1, 2, 10, 37, 300])
def test_no_sample_is_queried_beyond_the_budget(queries):
    view = _LabelsOnly()
    context = _context(view)
    distance, used = BoundaryAttack(queries=queries).distances(context)
    assert view.asked == used.sum(), "the per-sample count misses queries"
    assert used.max() <= queries and used.min() >= 1
    wrong = (view.predict(context.population.x) != context.population.y).numpy()
    assert wrong.any() and (~wrong).any()
    assert (distance[wrong] == 0).all() and (used[wrong] == 1).all()
    assert (distance[~wrong] > 0).all()
    if queries >= 10:  # the budget is spent, not only bounded
        assert (used[~wrong] > queries - 20).all()


def test_one_query_scores_the_nearest_image_labelled_otherwise():
    view = _LabelsOnly()
    context = _context(view)
    x, y = context.population.x.flatten(1), context.population.y
    predicted = view.predict(context.population.x)
    gaps = torch.cdist(x, x).masked_fill(predicted[None] == y[:, None], np.inf).min(1).values
    expected = torch.where(predicted == y, gaps, 0.0).double().numpy()
    assert np.allclose(BoundaryAttack(queries=1).score(context), expected)
    # More queries only move each correctly classified sample's estimate closer.
    assert (BoundaryAttack(queries=60).score(context) <= expected + 1e-6).all()


def test_scores_follow_the_seed():
    first = BoundaryAttack(queries=30).score(_context(_LabelsOnly()))
    assert np.array_equal(first, BoundaryAttack(queries=30).score(_context(_LabelsOnly())))
    assert not np.array_equal(first, BoundaryAttack(queries=30).score(_context(_LabelsOnly(), 1)))


@pytest.mark.parametrize(
    ("options", "match"), [({"queries": 0}, "queries"), ({"gradient_queries": 1}, "gradient")]
)
def test_bad_options_raise_option_errors(options, match):
    with pytest.raises(OptionError, match=match):
        get_registry().create("attack", "label-only-boundary", options)


# -- end to end ------------------------------------------------------------------------------

# The overfit MLP pool of test_label_only.py: 60 digits per model, fitted exactly, about 0.8 on
# the rest (population 120, six models each a target in turn: 720 scored points).
MLP_POOL: dict[str, Any] = {
    "model": PluginChoice("mlp", {"width": 64}),
    "population": 120,
    "shadows": 5,
    "recipe": TrainingRecipe(epochs=40, batch_size=32, lr=0.05),
}


def _aucs(**changes: Any) -> dict[str, float]:
    registry = Registry.from_environment()
    registry.load_module(null_defense_plugin())
    aucs = {}
    with tempfile.TemporaryDirectory() as root:
        workspace = Workspace(root)
        for name in ("gap", "label-only-boundary"):
            spec = AuditSpec(
                dataset=PluginChoice("digits"), attacks=(PluginChoice(name),), device="cpu",
                **{**MLP_POOL, **changes},
            )  # fmt: skip
            result = run_audit(spec, workspace, registry=registry)
            aucs[name] = result.attacks[0].metrics.as_dict()["auc"]
    return aucs


def test_boundary_distance_beats_chance_and_gap_on_an_overfit_mlp(one_thread):
    aucs = _aucs()  # measured: gap 0.603, boundary 0.671
    assert aucs["label-only-boundary"] > 0.63, aucs
    # The distance separates members among the correctly classified, which gap cannot.
    assert aucs["label-only-boundary"] > aucs["gap"] + 0.03, aucs


def test_boundary_distance_finds_no_membership_that_training_ignored(one_thread):
    auc = _aucs(defense=PluginChoice("ignore-members"))["label-only-boundary"]
    assert abs(auc - 0.5) < 0.06, auc
