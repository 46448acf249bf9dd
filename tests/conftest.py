"""Fixtures and helpers shared by several test modules: the installed plugins and digits, a
small CNN, the loss attack's AUC on a member / non-member split, a linear timm-style network,
the null defense that ignores members (every attack must fall to chance against it), a fake
installed plugin distribution, and the command line run in this process."""

from __future__ import annotations

import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from privbench import LoadedDataset, Model, TensorData, hookimpl
from privbench.cli import main
from privbench.helpers import TimmStyleNet
from privbench.plugins import Registry, set_registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The installed plugins, loaded once per test module (a module may add its own)."""
    return Registry.from_environment()


@pytest.fixture(scope="module")
def digits(registry: Registry) -> LoadedDataset:
    return registry.create("dataset", "digits").load(None)


def small_cnn(registry: Registry, data: LoadedDataset, seed: int = 0, **options: object) -> Model:
    """The built-in small CNN for *data*, initialised from *seed*."""
    torch.manual_seed(seed)
    net = registry.create("model", "small-cnn", options).create(data.input_shape, data.num_classes)
    return Model(net, data.mean, data.std)


def loss_auc(model: Model, members: TensorData, non_members: TensorData) -> float:
    """The loss attack (Yeom et al.): lower loss = member; its AUC."""
    with torch.no_grad():
        losses = torch.cat(
            [model.loss(members.x, members.y), model.loss(non_members.x, non_members.y)]
        )
    truth = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    return float(roc_auc_score(truth, -losses.numpy()))


def linear_features(weight: torch.Tensor, classes: int | None = None) -> TimmStyleNet:
    """A timm-style network whose pre-logits are ``W x`` of the flattened pixels (``d x n``
    *weight*), with a linear head to *classes* (None: the identity, logits = features)."""
    d, n = weight.shape
    lin = torch.nn.Linear(n, d, bias=False).to(weight.dtype)
    lin.weight.data = weight.clone()
    net = TimmStyleNet(torch.nn.Flatten(), d, classes or d, pool=lin)
    net.head = net.head.to(weight.dtype)
    if classes is None:
        net.head.weight.data = torch.eye(d, dtype=weight.dtype)
        net.head.bias.data.zero_()
    return net


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """The test sees the plugins of its own environment (``PRIVBENCH_PLUGINS``)."""
    set_registry(None)
    yield
    set_registry(None)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """For modules whose tensors are small (kernels of hundreds x hundreds, a reconstruction's
    candidates): on the two shared cores of a test machine a second intra-op thread mostly
    spins (measured 25x slower under load), so use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def label_only_context(target: Any, seed: int = 0, hflip: bool = False) -> Any:
    """What a label-only attack sees against *target* (a view): 30 random 8x8 images of 3
    classes, no shadows."""
    from privbench import AttackContext

    g = torch.Generator().manual_seed(0)
    population = TensorData(torch.rand(30, 1, 8, 8, generator=g), torch.arange(30) % 3)
    return AttackContext(
        target=target,
        shadows=[],
        shadow_keep=np.zeros((0, 30), dtype=bool),
        population=population,
        num_classes=3,
        seed=seed,
        hflip_preserves_label=hflip,
    )


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``privbench ARGS`` in-process: exit status, stdout, stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, err


@attrs.frozen
class IgnoreMembers:
    """An honest null: every model trains on seeded noise, never on its members, so the target's
    outputs are independent of membership (the keep-masks still are what they were)."""

    name: ClassVar[str] = "ignore-members"
    description: ClassVar[str] = "trains on seeded noise instead of the members"

    def prepare_model(self, model: Model) -> Model:
        return model

    def fit(self, model: Model, data: TensorData, trainer: Any) -> dict[str, Any]:
        g = torch.Generator().manual_seed(trainer.seed)
        noise = TensorData(
            torch.rand((64, *data.x.shape[1:]), generator=g), torch.randint(10, (64,), generator=g)
        )
        return trainer.fit(model, noise)

    def release(self, model: Model) -> Model:
        return model


def null_defense_plugin() -> types.ModuleType:
    """A plugin module registering :class:`IgnoreMembers` (load it into a registry)."""
    module = types.ModuleType("null_defense_plugin")

    @hookimpl
    def register_defenses(register: Any) -> None:
        register(IgnoreMembers)

    module.register_defenses = register_defenses  # type: ignore[attr-defined]
    return module


def install_distribution(
    root: Path, module: str, source: str, entry_point: str, version: str = "0.1"
) -> None:
    """*source* as module *module* of an installed distribution of that name and *version*,
    with *entry_point* in group ``privbench``: found once *root* is on ``sys.path``."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist = root / f"{module}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[privbench]\n{entry_point} = {module}\n")
