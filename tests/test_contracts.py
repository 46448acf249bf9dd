"""Every built-in plugin keeps the contract that privbench.testing checks for third parties."""

from __future__ import annotations

import pytest

from privbench import testing
from privbench.plugins import Registry

REGISTRY = Registry.from_environment()
# Datasets that read local files are covered with fake files in test_datasets.py.
NEEDS_FILES = {"cifar10", "cifar100", "mnist", "fashion-mnist", "imagefolder"}


def builtin(kind: str) -> list:
    return [c for c in REGISTRY.components(kind) if c.plugin.distribution == "privbench"]


@pytest.mark.parametrize("component", builtin("dataset"), ids=lambda c: c.name)
def test_dataset_contract(component):
    if component.name in NEEDS_FILES:
        testing.check_plugin_class(component.cls)
    else:
        testing.check_dataset(component.cls)


@pytest.mark.parametrize("component", builtin("model"), ids=lambda c: c.name)
def test_model_contract(component):
    options = {"arch": "test_resnet"} if component.name == "timm" else {}
    testing.check_model(component.cls, (3, 16, 16), **options)
    testing.check_model(component.cls, (1, 8, 8), **options)


@pytest.mark.parametrize("component", builtin("defense"), ids=lambda c: c.name)
def test_defense_contract(component):
    if component.name in ("bn-synthesis", "dataset-distillation"):
        # bn-synthesis needs a BatchNorm teacher and KIP's default support set more images per
        # class than check_defense's tiny data holds; their own test files run check_defense on
        # what they need (tests/test_bn_synthesis.py, tests/test_kip.py).
        testing.check_plugin_class(component.cls)
    else:
        testing.check_defense(component.cls)


@pytest.mark.parametrize("component", builtin("attack"), ids=lambda c: c.name)
def test_attack_contract(component):
    fast = {"steps": 20} if component.name == "reconstruction" else {}
    testing.check_attack(component.cls, registry=REGISTRY, **fast)


@pytest.mark.parametrize("component", builtin("scorer"), ids=lambda c: c.name)
def test_scorer_contract(component):
    testing.check_scorer(component.cls)


def test_the_kit_catches_a_batch_mean_scorer():
    import attrs

    from privbench import Access

    @attrs.frozen
    class BatchMean:
        name = "batch-mean"
        description = "the official code's mean reduction"
        access = Access.LOGITS

        def score(self, model, x, y):
            return model.loss(x, y).mean().expand(len(x))

    with pytest.raises(AssertionError, match="depends on its batch"):
        testing.check_scorer(BatchMean)


def test_the_kit_catches_a_broken_attack():
    import attrs
    import numpy as np

    from privbench import Access

    @attrs.frozen
    class TooFew:
        name = "too-few"
        description = "returns one score short"
        access = Access.LOGITS

        def score(self, context):
            return np.zeros(len(context.population) - 1)

    with pytest.raises(AssertionError, match="one score per sample"):
        testing.check_attack(TooFew)


def test_the_kit_catches_broken_reconstruction_attacks():
    import attrs
    import torch

    from privbench import Access

    @attrs.frozen
    class Raw:
        """Returns the candidates in the network's normalised space, not in pixels."""

        name = "raw"
        description = "forgets to map candidates back to [0, 1]"
        access = Access.PARAMETERS

        def reconstruct(self, context):
            context.target.model  # noqa: B018 (the access check)
            return 3 * torch.randn(2 * context.train_size, *context.input_shape)

    with pytest.raises(AssertionError, match="outside"):
        testing.check_attack(Raw)

    @attrs.frozen
    class Peeking(Raw):
        """Never asks for the parameters, so a logits-only view does not stop it."""

        name = "peeking"

        def reconstruct(self, context):
            return torch.rand(2 * context.train_size, *context.input_shape)

    with pytest.raises(AssertionError, match="without parameter access"):
        testing.check_attack(Peeking)


def test_an_attack_reading_a_signal_it_does_not_list_breaks_the_contract():
    import attrs

    from privbench import Access, Signal

    @attrs.frozen
    class Mirrored:
        """Lists the plain logits but also reads the mirrored ones."""

        name = "mirrored"
        description = "reads more than signals() says"
        access = Access.LOGITS
        min_shadows = 0

        def signals(self, hflip_preserves_label):
            return (Signal.logits("none"),)

        def score(self, context):
            plain = context.target.population_logits("none")
            mirrored = context.target.population_logits("hflip")
            return (plain + mirrored).max(1).values.numpy()

    with pytest.raises(AssertionError, match="signals\\(\\) does not list"):
        testing.check_attack(Mirrored)

    @attrs.frozen
    class Listed(Mirrored):
        def signals(self, hflip_preserves_label):
            return Signal.queries(hflip=True)

    assert testing.check_attack(Listed).shape == (20,)
