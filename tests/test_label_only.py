"""Label-only attacks (Choquette-Choo et al. 2021): the augmentations, the contract (labels
access only), and end to end: above chance on overfit digits pools, at chance where training
ignored membership or ran under strong DP-SGD."""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import pytest
import torch
from conftest import label_only_context, null_defense_plugin
from privbench_plugins.attacks.label_only import (
    AugmentationAttack,
    GapAttack,
    NoiseAttack,
    translate,
    translation_shifts,
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

# -- the augmentations -----------------------------------------------------------------------


@pytest.mark.parametrize("d", [0, 1, 2, 3])
def test_translations_are_the_4d_shifts_of_length_d_and_the_image(d):
    shifts = translation_shifts(d)
    assert len(shifts) == len(set(shifts)) == 4 * d + 1
    assert shifts[0] == (0, 0)
    assert all(abs(a) + abs(b) == d for a, b in shifts[1:])


def test_translate_moves_the_image_and_repeats_the_edge():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    down = translate(x, 1, 0)[0, 0]
    assert torch.equal(down[1:], x[0, 0, :3]) and torch.equal(down[0], x[0, 0, 0])
    left = translate(x, 0, -2)[0, 0]
    assert torch.equal(left[:, :2], x[0, 0, :, 2:])
    assert torch.equal(left[:, 2:], x[0, 0, :, 3:].expand(4, 2))
    assert torch.equal(translate(x, 0, 0), x)


# -- contract and access ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (GapAttack, {}),
        (AugmentationAttack, {}),
        (AugmentationAttack, {"d": 2, "hflip": True}),
        (NoiseAttack, {"queries": 8}),
    ],
)
def test_attack_contract(cls, options):
    assert cls.access == Access.LABELS and cls.min_shadows == 0
    torch.manual_seed(0)  # check_attack draws its population from the global generator
    scores = check_attack(cls, **options)  # the target's view grants labels access only
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    torch.manual_seed(0)
    assert np.array_equal(scores, check_attack(cls, **options)), "not deterministic"


def _context(access: Access, seed: int = 0, hflip: bool = True) -> AttackContext:
    return label_only_context(ModelView(tiny_linear_model(), access), seed, hflip)


def test_labels_access_suffices_and_logits_are_refused():
    view = _context(Access.LABELS).target
    with pytest.raises(AccessDeniedError):
        view.logits(torch.zeros(1, 1, 8, 8))
    for attack in (GapAttack(), AugmentationAttack(hflip=True), NoiseAttack(queries=4)):
        assert attack.score(_context(Access.LABELS)).shape == (30,)


def test_gap_is_correctness_and_augment_starts_from_it():
    context = _context(Access.LABELS)
    correct = (context.target.predict(context.population.x) == context.population.y).numpy()
    assert np.array_equal(GapAttack().score(context), correct.astype(float))
    assert np.array_equal(AugmentationAttack(d=0).score(context), correct.astype(float))
    assert AugmentationAttack(hflip=True).queries == 10 and AugmentationAttack(d=2).queries == 9


def test_noise_is_seeded_and_misclassified_samples_score_zero():
    attack = NoiseAttack(sigma=0.3, queries=16)
    first, again = attack.score(_context(Access.LABELS)), attack.score(_context(Access.LABELS))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, attack.score(_context(Access.LABELS, seed=1)))
    wrong = GapAttack().score(_context(Access.LABELS)) == 0
    assert wrong.any() and (first[wrong] == 0).all()


def test_mirrored_queries_are_refused_where_they_change_labels():
    with pytest.raises(OptionError, match="hflip"):
        AugmentationAttack(hflip=True).score(_context(Access.LABELS, hflip=False))


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("label-only-augment", {"d": -1}, "d"),
        ("label-only-noise", {"sigma": 0}, "sigma"),
        ("label-only-noise", {"queries": 0}, "queries"),
    ],
)
def test_bad_options_raise_option_errors(name, options, match):
    with pytest.raises(OptionError, match=match):
        get_registry().create("attack", name, options)


# -- end to end ------------------------------------------------------------------------------


def _registry() -> Registry:
    registry = Registry.from_environment()
    registry.load_module(null_defense_plugin())
    return registry


ATTACKS = {
    "gap": PluginChoice("gap"),
    "augment": PluginChoice("label-only-augment"),
    "noise": PluginChoice("label-only-noise", {"sigma": 0.2, "queries": 20}),
}

# An MLP on 60 digits per model (population 120, six models each a target in turn: 720 scored
# points) fits them exactly and generalises to about 0.8: the train-test gap the gap attack reads.
MLP_POOL: dict[str, Any] = {
    "model": PluginChoice("mlp", {"width": 64}),
    "population": 120,
    "shadows": 5,
    "recipe": TrainingRecipe(epochs=40, batch_size=32, lr=0.05),
}
# The paper's setting for its augmentation attack: a CNN trained with the augmentations it is
# queried on (random crops with 1-pixel padding on 8x8 images, i.e. shifts of up to d = 1).
CNN_POOL: dict[str, Any] = {
    "model": PluginChoice("small-cnn"),
    "population": 200,
    "shadows": 3,
    "recipe": TrainingRecipe(epochs=40, batch_size=32, lr=0.05, augment="crop"),
}


def _audit(pool: dict[str, Any], **changes: Any) -> dict[str, float]:
    """The AUC of every attack in ATTACKS on one pool (trained once, then read from the store)."""
    registry, aucs = _registry(), {}
    with tempfile.TemporaryDirectory() as root:
        workspace = Workspace(root)
        for label, choice in ATTACKS.items():
            spec = AuditSpec(
                dataset=PluginChoice("digits"), attacks=(choice,), device="cpu",
                **{**pool, **changes},
            )  # fmt: skip
            result = run_audit(spec, workspace, registry=registry)
            aucs[label] = result.attacks[0].metrics.as_dict()["auc"]
    return aucs


def test_label_only_attacks_beat_chance_on_an_overfit_mlp(one_thread):
    aucs = _audit(MLP_POOL)  # measured: gap 0.603, augment 0.588, noise 0.694
    assert aucs["gap"] > 0.55, aucs
    assert aucs["augment"] > 0.55, aucs
    # Robustness to noise separates members among the correctly classified: well above gap.
    assert aucs["noise"] > aucs["gap"] + 0.05, aucs


def test_augmentation_beats_gap_on_a_cnn_trained_with_those_augmentations(one_thread):
    aucs = _audit(CNN_POOL)  # measured: gap 0.584, augment 0.613 (seeds 1, 2: +0.02, +0.04)
    assert aucs["gap"] > 0.55, aucs
    assert aucs["augment"] > aucs["gap"], aucs


def test_no_label_only_attack_finds_membership_that_training_ignored(one_thread):
    for label, auc in _audit(MLP_POOL, defense=PluginChoice("ignore-members")).items():
        assert abs(auc - 0.5) < 0.06, (label, auc)


@pytest.mark.slow
def test_strong_dp_sgd_brings_label_only_attacks_to_chance(one_thread):
    # epsilon = 0.5 bounds any attack's AUC close to 0.5; 15 epochs keep opacus to ~15 s.
    recipe = TrainingRecipe(epochs=15, batch_size=32, lr=0.05)
    dp = PluginChoice("dp-sgd", {"epsilon": 0.5})
    aucs = _audit({**MLP_POOL, "recipe": recipe}, defense=dp)  # measured: 0.518, 0.505, 0.518
    for label, auc in aucs.items():
        assert abs(auc - 0.5) < 0.06, (label, auc)
