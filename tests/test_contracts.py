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


def _class_only(self: testing._Contract) -> None:
    testing.check_plugin_class(self.plugin_class)


# Each built-in gets the contract classes a third party's tests use (privbench.testing), with
# the few exceptions explained: the classes are generated here so that a new built-in is
# covered without a line of test code.
CONTRACTS = {
    "dataset": testing.DatasetContract,
    "model": testing.ModelContract,
    "defense": testing.DefenseContract,
    "attack": testing.AttackContract,
    "scorer": testing.ScorerContract,
}
SPECIAL: dict[tuple[str, str], dict] = {
    # Datasets that read local files: covered with fake files in test_datasets.py.
    **{("dataset", name): {"check": _class_only} for name in NEEDS_FILES},
    ("model", "timm"): {"options": {"arch": "test_resnet"}},
    # bn-synthesis needs a BatchNorm teacher and KIP's default support set more images per class
    # than check_defense's tiny data holds; tests/test_bn_synthesis.py and tests/test_kip.py
    # run check_defense on what they need.
    ("defense", "bn-synthesis"): {"check": _class_only},
    ("defense", "dataset-distillation"): {"check": _class_only},
    ("attack", "reconstruction"): {"options": {"steps": 20}},
}
for _kind, _contract in CONTRACTS.items():
    for _component in builtin(_kind):
        _name = f"Test{_kind.capitalize()}{_component.name.title().replace('-', '')}Contract"
        globals()[_name] = type(
            _name,
            (_contract,),
            {"plugin_class": _component.cls, **SPECIAL.get((_kind, _component.name), {})},
        )


def test_every_builtin_has_its_contract_class():
    generated = {n for n in globals() if n.startswith("Test") and n.endswith("Contract")}
    assert len(generated) == sum(len(builtin(kind)) for kind in CONTRACTS) >= 20


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
