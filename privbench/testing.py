"""The test kit for plugin authors: privbench's contract checks, contract classes that turn them
into pytest tests, and fixtures. Use it in your plugin's tests::

    pytest_plugins = ["privbench.testing"]      # the fixtures below

    from privbench.testing import AttackContract, check_attack
    from my_plugin import MyAttack

    class TestMyAttack(AttackContract):
        plugin_class = MyAttack

    def test_contract():
        check_attack(MyAttack)

The checks themselves live in :mod:`privbench.engine.contracts` (the command line runs them as
``privbench plugins --check``); they are re-exported here, the kit's one front door.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from privbench.engine.contracts import (
    check_attack,
    check_component,
    check_dataset,
    check_defense,
    check_model,
    check_model_shapes,
    check_plugin_class,
    check_reconstruction_attack,
    check_scorer,
    tiny_linear_model,
)
from privbench.plugins import Registry, get_registry
from privbench.plugins.interfaces import LoadedDataset, Model, TensorData

__all__ = [
    "AttackContract",
    "DatasetContract",
    "DefenseContract",
    "ModelContract",
    "ScorerContract",
    "check_attack",
    "check_component",
    "check_dataset",
    "check_defense",
    "check_model",
    "check_model_shapes",
    "check_plugin_class",
    "check_reconstruction_attack",
    "check_scorer",
]


# -- contract classes and fixtures for plugin test suites -----------------------------------------


class _Contract:
    """Subclass one of the contracts below in a test module (name it ``Test...``), set
    ``plugin_class`` (and ``options``), and pytest runs every check as a test of its own.
    ``discoverable = False`` skips the installed-registry check for a plugin under development
    that is not installed."""

    kind: ClassVar[str]
    plugin_class: ClassVar[type]
    options: ClassVar[dict[str, Any]] = {}
    discoverable: ClassVar[bool] = True

    def check(self) -> Any:  # the kind's contract check, once
        raise NotImplementedError

    def test_is_a_plugin_class(self) -> None:
        check_plugin_class(self.plugin_class)

    def test_is_discovered_by_the_registry(self) -> None:
        if not self.discoverable:
            return
        component = get_registry().get(self.kind, self.plugin_class.name)  # type: ignore[arg-type]
        assert component.cls is self.plugin_class, (
            f"'{self.plugin_class.name}' resolves to {component.cls!r} from plugin "
            f"'{component.plugin.name}', not to this class: is the package installed?"
        )

    def test_options_round_trip(self) -> None:
        from privbench.plugins.options import config_dict, configure

        cls = self.plugin_class
        first = configure(cls, self.options, what=f"{self.kind} '{cls.name}'")
        stored = config_dict(first)  # what results and store keys record
        again = configure(cls, stored, what=cls.name)  # as a suite file gives them
        assert config_dict(again) == stored, f"{cls.name}: options do not survive a round trip"

    def test_keeps_its_contract(self) -> None:
        self.check()


class AttackContract(_Contract):
    """An attack: one finite score per sample, only through its declared access, reading only
    signals it lists, and the same scores for the same seed."""

    kind = "attack"

    def check(self) -> Any:
        return check_attack(self.plugin_class, **self.options)

    def test_is_deterministic_under_a_seed(self) -> None:
        first, second = self.check(), self.check()
        assert np.array_equal(np.asarray(first), np.asarray(second)), (
            f"{self.plugin_class.name}: different scores for the same seed"
        )


class ScorerContract(_Contract):
    """A scorer: per-sample values, independent of the batch, through its declared access."""

    kind = "scorer"

    def check(self) -> Any:
        return check_scorer(self.plugin_class, **self.options)

    def test_is_deterministic_under_a_seed(self) -> None:
        assert torch.equal(self.check(), self.check()), (
            f"{self.plugin_class.name}: different values for the same seed"
        )


class ModelContract(_Contract):
    """A model: timm's API on colour and grey inputs (at its ``min_input_size`` at least),
    input gradients."""

    kind = "model"

    def check(self) -> Any:
        check_model_shapes(self.plugin_class, **self.options)


class DefenseContract(_Contract):
    """A defense: trains through ``fit``, returns JSON metadata, releases a classifier."""

    kind = "defense"

    def check(self) -> Any:
        check_defense(self.plugin_class, **self.options)


class DatasetContract(_Contract):
    """A dataset: float images in [0, 1], int64 labels in range, consistent splits."""

    kind = "dataset"
    data_root: ClassVar[str | None] = None

    def check(self) -> Any:
        return check_dataset(self.plugin_class, self.data_root, **self.options)


try:  # the fixtures need pytest; the checks above do not (privbench plugins --check uses them)
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def tiny_model() -> Model:
        """A linear classifier of 1 x 8 x 8 images into 3 classes, in eval mode."""
        return tiny_linear_model()

    @pytest.fixture
    def tiny_dataset() -> LoadedDataset:
        """24 training and 12 test images of 1 x 8 x 8 in [0, 1], 3 classes, seeded."""
        g = torch.Generator().manual_seed(0)

        def split(n: int) -> TensorData:
            return TensorData(torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 3)

        return LoadedDataset(
            train=split(24), test=split(12), num_classes=3, mean=(0.5,), std=(0.25,)
        )

    @pytest.fixture
    def plugin_registry() -> Registry:
        """A registry that loads no installed plugin: load yours with ``load_module``."""
        return Registry()

    @pytest.fixture
    def privbench_cli(capsys: Any) -> Any:
        """``privbench_cli(*args) -> (exit status, stdout, stderr)``, in this process, on the
        installed plugins (the registry is rebuilt for the call)."""
        from privbench.cli import main
        from privbench.plugins import set_registry

        def run(*args: str) -> tuple[int, str, str]:
            set_registry(None)
            try:
                main(list(args))
                code = 0
            except SystemExit as exit_info:
                code = exit_info.code if isinstance(exit_info.code, int) else 0
            finally:
                set_registry(None)
            out, err = capsys.readouterr()
            return code, out, err

        return run
