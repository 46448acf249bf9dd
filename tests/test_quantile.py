"""Quantile-regression MIA (Bertran et al. 2023): the losses and the pinball variant's level
read-out on hand-made numbers, the contract, the refusal without public data, no shadow model
trained for it, and end to end on an overfit digits pool and on a pool where membership carries
no information."""

from __future__ import annotations

import tempfile
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from conftest import null_defense_plugin
from privbench_plugins.attacks.quantile import (
    QuantileAttack,
    gaussian_nll,
    hinge_score,
    pinball_loss,
)

import privbench
from privbench import (
    Access,
    AttackContext,
    ModelView,
    OptionError,
    TensorData,
    TrainingRecipe,
)
from privbench.engine.audit import run_audit
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import Workspace
from privbench.plugins import Registry
from privbench.testing import check_attack


def test_hinge_score_is_the_true_logit_minus_the_largest_other():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [1.0, 1.0, 1.0]])
    scores = hinge_score(logits, torch.tensor([0, 0, 2]))
    assert scores.tolist() == [1.0, -5.0, 0.0]


def test_pinball_loss_weighs_under_and_over_predictions_by_the_level():
    levels = torch.tensor([0.9])
    under = pinball_loss(torch.tensor([[0.0]]), torch.tensor([1.0]), levels)
    over = pinball_loss(torch.tensor([[1.0]]), torch.tensor([0.0]), levels)
    assert under.item() == pytest.approx(0.9) and over.item() == pytest.approx(0.1)


def test_gaussian_nll_is_minimal_at_the_sample_mean_and_std():
    target = torch.tensor([1.0, 3.0])
    best = gaussian_nll(torch.full((2,), 2.0), torch.zeros(2), target).mean()
    for mean, log_std in [(2.5, 0.0), (2.0, 0.3), (2.0, -0.3)]:
        other = gaussian_nll(torch.full((2,), mean), torch.full((2,), log_std), target).mean()
        assert other > best


def test_pinball_read_out_is_monotone_in_the_score():
    attack = QuantileAttack(variant="pinball", quantiles=5)
    curve = torch.linspace(-1, 1, 5)[None].repeat(7, 1)
    score = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.7, 1.0, 4.0])
    levels = attack._reached_level(curve, score)
    assert torch.all(levels[1:] > levels[:-1])
    grid = attack._levels().double()
    assert levels[3] == pytest.approx(float(grid[2]))  # the middle head, met exactly


@pytest.mark.parametrize("options", [{}, {"variant": "pinball", "steps": 50}])
def test_attack_contract(options, one_thread):
    scores = check_attack(QuantileAttack, shadows=0, **options)
    assert np.isfinite(scores).all()


def test_it_needs_public_non_members():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    model = privbench.Model(net, [0.5], [0.5]).eval()
    population = TensorData(torch.rand(10, 1, 8, 8), torch.arange(10) % 3)
    view = ModelView(
        model,
        Access.LOGITS,
        population_logits=lambda _: ModelView(model, Access.LOGITS).logits(population.x),
    )
    context = AttackContext(
        target=view,
        shadows=[],
        shadow_keep=np.zeros((0, 10), dtype=bool),
        population=population,
        num_classes=3,
        seed=0,
    )
    with pytest.raises(OptionError, match="needs public non-member data"):
        QuantileAttack().score(context)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"variant": "median"}, "variant"),
        ({"validation": 1.0}, "validation"),
        ({"quantiles": 1}, "quantiles"),
    ],
)
def test_bad_options_raise_option_errors(options, match):
    with pytest.raises(OptionError, match=match):
        Registry.from_environment().create("attack", "quantile", options)


# -- end to end ------------------------------------------------------------------------------


def _spec(**changes: Any) -> AuditSpec:
    base = AuditSpec(
        dataset=PluginChoice("digits"),
        model=PluginChoice("mlp"),
        recipe=TrainingRecipe(epochs=40, batch_size=32, lr=0.05),
        shadows=0,
        population=300,
        device="cpu",
    )
    return attrs.evolve(base, **changes)


def _audit(registry: Registry, **changes: Any) -> dict[str, dict]:
    """Metrics of the loss attack and both quantile variants on one pool (trained once)."""
    attacks = {
        "loss": PluginChoice("loss"),
        "gaussian": PluginChoice("quantile"),
        "pinball": PluginChoice("quantile", {"variant": "pinball"}),
    }
    metrics = {}
    with tempfile.TemporaryDirectory() as root:
        workspace = Workspace(root)
        for label, choice in attacks.items():
            result = run_audit(_spec(attacks=(choice,), **changes), workspace, registry=registry)
            assert result.training.models == 1
            metrics[label] = result.attacks[0].metrics.as_dict()
    return metrics


def test_the_engine_trains_no_shadow_model_for_it(one_thread):
    with tempfile.TemporaryDirectory() as root:
        result = privbench.audit(
            attacks="quantile",
            dataset="digits",
            model="mlp",
            population=100,
            epochs=2,
            device="cpu",
            workspace=root,
        )
    assert result.training.models == 1
    assert np.isfinite(result.attacks[0].metrics.auc)


def test_it_beats_chance_on_an_overfit_pool(one_thread):
    overfit = _audit(Registry.from_environment())
    # Measured (seeds 0-3): gaussian 0.57-0.65, pinball 0.59-0.64, the loss attack 0.58-0.66.
    assert overfit["gaussian"]["auc"] > 0.55, overfit
    assert overfit["pinball"]["auc"] > 0.55, overfit


def test_it_falls_to_chance_when_training_ignores_membership(one_thread):
    registry = Registry.from_environment()
    registry.load_module(null_defense_plugin())
    null = _audit(registry, defense=PluginChoice("ignore-members"))
    for label, metrics in null.items():
        assert abs(metrics["auc"] - 0.5) < 0.06, (label, metrics["auc"])
