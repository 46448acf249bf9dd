"""The contracts the engine relies on, checked: does a plugin class keep the promises the
engine's audit assumes (one finite score per sample through the declared access only, per-sample
scorer values, timm's feature/head API, a defense that trains and releases a classifier, data in
[0, 1] with integer labels)?

Each check builds the plugin with its default options, exercises it on tiny synthetic inputs on
the CPU and raises ``AssertionError`` with the broken promise. ``privbench plugins --check``
runs them; plugin authors use them through the test kit, :mod:`privbench.testing`; privbench
runs them on every built-in plugin.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
import numpy as np
import torch

from privbench.engine.signals import run_scorer, scorer_for
from privbench.engine.training import StandardTrainer
from privbench.errors import AccessDeniedError
from privbench.plugins import Registry, get_registry
from privbench.plugins.interfaces import (
    Access,
    AttackContext,
    LoadedDataset,
    Model,
    ModelView,
    ReconstructionContext,
    Signal,
    TensorData,
    TrainingRecipe,
)
from privbench.plugins.options import describe_options


def check_plugin_class(cls: type) -> None:
    """Name, description, attrs options with defaults that describe themselves."""
    assert isinstance(getattr(cls, "name", None), str) and cls.name, "needs a 'name' ClassVar"
    assert cls.name == cls.name.strip() and " " not in cls.name, "names are single words"
    assert isinstance(getattr(cls, "description", None), str) and cls.description, (
        f"{cls.name}: needs a one-line 'description' ClassVar"
    )
    assert "\n" not in cls.description, f"{cls.name}: description must be one line"
    assert attrs.has(cls), f"{cls.name}: must be an attrs class (its fields are its options)"
    describe_options(cls)  # annotations must resolve


def tiny_linear_model(shape: tuple[int, int, int] = (1, 8, 8), classes: int = 3) -> Model:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), classes))
    net.forward_features = lambda x: x.flatten(1)  # type: ignore[attr-defined]
    net.forward_head = lambda f, pre_logits=False: f if pre_logits else net[1](f)  # type: ignore[attr-defined]
    net.get_classifier = lambda: net[1]  # type: ignore[attr-defined]
    return Model(net, [0.5] * shape[0], [0.5] * shape[0]).eval()


def check_dataset(cls: type, data_root: str | None = None, **options: Any) -> LoadedDataset:
    """``load`` returns float images in [0, 1] of one shape, int64 labels in range, stats."""
    check_plugin_class(cls)
    data = cls(**options).load(data_root)
    assert isinstance(data, LoadedDataset), f"{cls.name}: load must return a LoadedDataset"
    for split in ("train", "test"):
        part: TensorData = getattr(data, split)
        assert len(part) > 0, f"{cls.name}: empty {split} split"
        assert part.x.dtype == torch.float32 and part.x.ndim == 4, (
            f"{cls.name}: N x C x H x W float32"
        )
        assert part.y.dtype == torch.int64, f"{cls.name}: labels must be int64"
        assert float(part.x.min()) >= 0.0 and float(part.x.max()) <= 1.0, (
            f"{cls.name}: pixels in [0, 1]"
        )
        assert int(part.y.min()) >= 0 and int(part.y.max()) < data.num_classes, (
            f"{cls.name}: label range"
        )
    assert data.test.x.shape[1:] == data.train.x.shape[1:], f"{cls.name}: splits differ in shape"
    channels = data.input_shape[0]
    assert len(data.mean) == len(data.std) == channels, f"{cls.name}: one mean/std per channel"
    assert all(s > 0 for s in data.std), f"{cls.name}: std must be positive"
    return data


def check_model(cls: type, input_shape: tuple[int, int, int] = (3, 16, 16), **options: Any) -> None:
    """timm's API: logits of the right shape, and the head applied to the penultimate features
    gives the same logits (what feature-level defenses and scorers rely on)."""
    check_plugin_class(cls)
    torch.manual_seed(0)
    net = cls(**options).create(input_shape, 5)
    model = Model(net, [0.5] * input_shape[0], [0.5] * input_shape[0]).eval()
    x = torch.rand(3, *input_shape)
    with torch.no_grad():
        logits = model(x)
        again = model.classify_features(model.features(x))
    assert logits.shape == (3, 5), f"{cls.name}: logits of shape {tuple(logits.shape)}"
    assert torch.allclose(logits, again, atol=1e-4), f"{cls.name}: head(features) != logits"
    x.requires_grad_(True)
    model.loss(x, torch.tensor([0, 1, 2])).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), f"{cls.name}: input gradients"


def check_defense(cls: type, **options: Any) -> None:
    """A defense trains a model through ``fit`` and releases something that classifies."""
    check_plugin_class(cls)
    defense = cls(**options)
    model = defense.prepare_model(tiny_linear_model())
    data = TensorData(torch.rand(16, 1, 8, 8), torch.arange(16) % 3)
    trainer = StandardTrainer(
        TrainingRecipe(epochs=1, batch_size=8), seed=0, device=torch.device("cpu")
    )
    meta = defense.fit(model, data, trainer)
    assert isinstance(meta, dict), f"{cls.name}: fit must return a dict of JSON metadata"
    released = defense.release(model)
    with torch.no_grad():
        assert released(data.x).shape == (16, 3), f"{cls.name}: released model must classify"


def check_scorer(cls: type, **options: Any) -> torch.Tensor:
    """One value (or one row per query augmentation) per sample, through a view limited to the
    declared access, and per-sample: scoring a batch equals scoring each sample alone."""
    check_plugin_class(cls)
    scorer = cls(**options)
    assert isinstance(scorer.access, Access), f"{cls.name}: 'access' must be an Access"
    torch.manual_seed(0)
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 3
    view = ModelView(tiny_linear_model(), scorer.access)
    values = torch.as_tensor(scorer.score(view, x, y))
    assert values.shape[0] == 6 and values.ndim in (1, 2), f"{cls.name}: N or N x A values"
    assert torch.isfinite(values).all(), f"{cls.name}: non-finite values"
    alone = torch.cat(
        [torch.as_tensor(scorer.score(view, x[i : i + 1], y[i : i + 1])) for i in range(6)]
    )
    assert torch.allclose(values, alone, rtol=1e-3, atol=1e-6), (
        f"{cls.name}: a sample's value depends on its batch (a batch-mean loss?)"
    )
    return values


def check_attack(
    cls: type, shadows: int | None = None, registry: Registry | None = None, **options: Any
) -> np.ndarray:
    """``score`` returns one finite score per population sample using only declared access,
    and reads no per-model signal that its ``signals()`` (if it has one) leaves out. The context
    holds 20 candidates, *shadows* shadow models and 16 public non-members (``public``).

    Scorers an attack asks for by name are looked up in *registry* (the installed plugins by
    default), as the engine does. An attack that defines ``reconstruct`` instead is handed to
    :func:`check_reconstruction_attack` (and the scores returned are its candidates' pixels).
    """

    if callable(getattr(cls, "reconstruct", None)):
        return check_reconstruction_attack(cls, **options).flatten().numpy()
    registry = registry or get_registry()
    check_plugin_class(cls)
    attack = cls(**options)
    assert isinstance(attack.access, Access), f"{cls.name}: 'access' must be an Access"
    count = max(getattr(attack, "min_shadows", 0), 4 if shadows is None else shadows)
    rng = np.random.default_rng(0)
    population = TensorData(torch.rand(20, 1, 8, 8), torch.arange(20) % 3)
    public_rng = torch.Generator().manual_seed(1)  # known non-members

    read: list[Signal] = []

    def view(model: Model, access: Access) -> ModelView:
        cache: dict[str, torch.Tensor] = {}

        def population_logits(augmentation: str) -> torch.Tensor:
            read.append(Signal.logits(augmentation))
            if augmentation not in cache:
                x = population.x.flip(-1) if augmentation == "hflip" else population.x
                cache[augmentation] = ModelView(model, Access.LOGITS).logits(x)
            return cache[augmentation]

        def population_signal(
            requester: ModelView, name: str, opts: dict[str, Any]
        ) -> torch.Tensor:
            read.append(Signal.scores(name, **opts))
            return run_scorer(scorer_for(registry, requester, name, opts), requester, population)

        return ModelView(
            model,
            access,
            population_logits=population_logits,
            population_signal=population_signal,
        )

    context = AttackContext(
        target=view(tiny_linear_model(), attack.access),
        shadows=[view(tiny_linear_model(), Access.PARAMETERS) for _ in range(count)],
        shadow_keep=rng.random((count, 20)) < 0.5,
        population=population,
        num_classes=3,
        seed=0,
        public=TensorData(torch.rand(16, 1, 8, 8, generator=public_rng), torch.arange(16) % 3),
    )
    scores = np.asarray(attack.score(context), dtype=np.float64)
    assert scores.shape == (20,), f"{cls.name}: one score per sample, got {scores.shape}"
    assert not np.isnan(scores).any(), f"{cls.name}: NaN scores"
    declared = getattr(attack, "signals", None)
    if callable(declared):
        listed = list(declared(context.hflip_preserves_label))
        missing = [signal for signal in read if signal not in listed]
        assert not missing, (
            f"{cls.name}: score() read {missing[0]}, which signals() does not list "
            "(a suite would not compute it ahead)"
        )
    return scores


def check_reconstruction_attack(cls: type, train_size: int = 4, **options: Any) -> torch.Tensor:
    """``reconstruct`` returns at least ``train_size`` finite candidate images of the data's
    shape in [0, 1], leaves the target's parameters alone, and is refused the parameters when
    its view grants less than ``parameters`` access."""
    check_plugin_class(cls)
    attack = cls(**options)
    assert attack.access == Access.PARAMETERS, (
        f"{cls.name}: reconstruction from a model needs 'parameters' access"
    )
    shape, classes = (1, 8, 8), 3
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, classes)
    )
    initial = Model(net, [0.5], [0.5]).eval()
    trained = copy.deepcopy(initial)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = [p.clone() for p in trained.parameters()]
    context = ReconstructionContext(
        target=ModelView(trained, Access.PARAMETERS),
        initial=initial,
        train_size=train_size,
        num_classes=classes,
        input_shape=shape,
        seed=0,
    )
    candidates = torch.as_tensor(attack.reconstruct(context))
    assert candidates.ndim == 4 and tuple(candidates.shape[1:]) == shape, (
        f"{cls.name}: candidates must be K x {' x '.join(map(str, shape))}, "
        f"got {tuple(candidates.shape)}"
    )
    assert candidates.shape[0] >= train_size, f"{cls.name}: fewer candidates than images"
    assert torch.isfinite(candidates).all(), f"{cls.name}: non-finite candidates"
    assert candidates.min() >= 0 and candidates.max() <= 1, f"{cls.name}: pixels outside [0, 1]"
    assert all(torch.equal(a, b) for a, b in zip(before, trained.parameters(), strict=True)), (
        f"{cls.name}: the target's parameters changed"
    )
    blind = attrs.evolve(context, target=ModelView(trained, Access.LOGITS))
    try:
        attack.reconstruct(blind)
    except AccessDeniedError:
        pass
    else:
        raise AssertionError(f"{cls.name}: reconstructed from a view without parameter access")
    return candidates.detach().float().cpu()


def check_model_shapes(cls: type, **options: Any) -> None:
    """:func:`check_model` on colour 16x16 and grey 8x8 images (each side raised to the class's
    ``min_input_size``, where it declares one)."""
    least = int(getattr(cls, "min_input_size", 0))
    for channels, side in ((3, 16), (1, 8)):
        check_model(cls, (channels, max(side, least), max(side, least)), **options)


def check_component(component: Any, registry: Registry | None = None) -> str:
    """The contract check of a registered component's kind, with its default options (what
    ``privbench plugins --check`` runs). Returns a note on what was checked; raises
    ``AssertionError`` (or the plugin's own error) on a broken promise."""
    from privbench.errors import DatasetNotFoundError

    cls = component.cls
    if component.kind == "attack":
        check_attack(cls, registry=registry)
    elif component.kind == "scorer":
        check_scorer(cls)
    elif component.kind == "model":
        check_model_shapes(cls)
    elif component.kind == "defense":
        check_defense(cls)
    else:
        try:
            check_dataset(cls)
        except DatasetNotFoundError:
            check_plugin_class(cls)
            return "class checked; its data is not here (--data-root) to load"
    return "contract kept"
