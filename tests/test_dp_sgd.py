"""The dp-sgd defense: contract, clean state dicts, accountant, batch norm, option errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from privbench_plugins.defenses.dp_sgd import DPSGD

from privbench import Model, OptionError, TrainingRecipe
from privbench.engine.training import StandardTrainer
from privbench.testing import check_defense

RECIPE = TrainingRecipe(epochs=3, batch_size=32)


def _train(registry, digits, defense, **model_options):
    torch.manual_seed(0)
    net = registry.create("model", "small-cnn", model_options).create(
        digits.input_shape, digits.num_classes
    )
    model = defense.prepare_model(Model(net, digits.mean, digits.std))
    trainer = StandardTrainer(RECIPE, seed=0, device=torch.device("cpu"))
    meta = defense.fit(model, digits.train.subset(np.arange(128)), trainer)
    return model, meta


def test_contract_and_state_dict_round_trip(registry, digits):
    check_defense(DPSGD)
    defense = DPSGD(noise_multiplier=1.0)
    model, meta = _train(registry, digits, defense)
    assert type(model) is Model and not any("_module" in k for k in model.state_dict())
    net = registry.create("model", "small-cnn").create(digits.input_shape, digits.num_classes)
    fresh = defense.prepare_model(Model(net, digits.mean, digits.std))
    fresh.load_state_dict(model.state_dict())  # strict: keys match
    assert {"epsilon", "delta", "noise_multiplier", "steps"} <= meta.keys()


def test_accountant_meets_target_and_more_noise_spends_less(registry, digits):
    _, meta = _train(registry, digits, DPSGD(epsilon=2.0))
    assert meta["epsilon"] <= 2.0 + 0.02
    _, low = _train(registry, digits, DPSGD(noise_multiplier=1.0))
    _, high = _train(registry, digits, DPSGD(noise_multiplier=2.0))
    assert high["epsilon"] < low["epsilon"]


def test_batchnorm_becomes_groupnorm(registry, digits):
    model, meta = _train(registry, digits, DPSGD(noise_multiplier=1.0), batchnorm=True)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "GroupNorm" in kinds and "BatchNorm2d" not in kinds
    assert np.isfinite(meta["final_train_loss"])


@pytest.mark.parametrize(
    "options",
    [{"epsilon": 1.0, "noise_multiplier": 1.0}, {"epsilon": -1.0}, {"max_grad_norm": 0}],
)
def test_bad_options_raise(registry, options):
    with pytest.raises(OptionError):
        registry.create("defense", "dp-sgd", options)


@pytest.mark.parametrize("mode", ["ew", "functorch"])
def test_every_opacus_mode_trains_several_steps_to_book_keepings_model(registry, digits, mode):
    """opacus' other modes take many steps (ew once refused the second forward pass while the
    first step's per-sample gradients were attached) and train book-keeping's model."""
    ours, ours_meta = _train(registry, digits, DPSGD(noise_multiplier=1.0))
    theirs, meta = _train(registry, digits, DPSGD(noise_multiplier=1.0, grad_sample_mode=mode))
    assert meta["steps"] > 1 and meta["grad_sample_mode"] == mode
    assert ours_meta["grad_sample_mode"] == "book-keeping"
    reference = theirs.state_dict()
    for name, value in ours.state_dict().items():
        torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-5, msg=name)
