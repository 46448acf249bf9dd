"""The few interfaces between privbench's core and its plugins.

Plugin kinds (each a class registered through a ``register_*`` hook, see
:mod:`privbench.plugins.hookspecs`). Every plugin is an attrs class with a unique ``name`` and
a one-line ``description`` (class variables); its attrs fields are its typed, validated options
(settable as ``--attack-opt key=value`` on the command line and as tables in suite files), so a
configured plugin is simply an instance::

    @attrs.frozen
    class LossAttack:
        name: ClassVar[str] = "loss"
        description: ClassVar[str] = "Yeom et al.: members have lower loss"
        access: ClassVar[Access] = Access.LOGITS
        temperature: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))

- :class:`DatasetSource` loads images and labels.
- :class:`ModelFactory` builds a timm-style network (``forward_features``, ``forward_head``,
  ``get_classifier``), which the core wraps in a :class:`Model` with its preprocessing.
- :class:`Defense` may change training (DP-SGD, distillation), the data (synthesis) or inference
  (feature noise).
- :class:`Scorer` computes one per-sample statistic of a model on a batch.
- :class:`Attack` turns what its threat model allows it to see into membership scores.

Threat model as data: an attack declares the :class:`Access` it needs and receives its target
only through a :class:`ModelView` that refuses anything beyond it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import attrs
import numpy as np
import torch
from torch import nn

from privbench.plugins.data import LoadedDataset, Model, TensorData, TrainingRecipe
from privbench.plugins.views import Access, ModelView

__all__ = [
    "Access", "Attack", "AttackContext", "DatasetSource", "Defense", "LoadedDataset", "Model",
    "ModelFactory", "ModelView", "ReconstructionAttack", "ReconstructionContext", "Scorer",
    "Signal", "TensorData", "Trainer", "TrainingRecipe",
]  # fmt: skip


@runtime_checkable
class DatasetSource(Protocol):
    """A dataset plugin. ``load`` reads local files only and never downloads.

    A source that needs files reads them from ``data_root`` (``--data-root`` or
    ``PRIVBENCH_DATA``) and raises :class:`privbench.DatasetNotFoundError` with a message that
    says where to put them when they are missing.
    """

    name: ClassVar[str]
    description: ClassVar[str]

    def load(self, data_root: str | None) -> LoadedDataset: ...


@runtime_checkable
class ModelFactory(Protocol):
    """A model plugin: builds an untrained network for an input shape and class count.

    The network follows timm's API: ``forward_features(x)``, ``forward_head(f, pre_logits=...)``
    and ``get_classifier()``, so that the core can read penultimate features.

    A network that cannot take small images (strided convolutions built for 28x28) says so with
    an optional ``min_input_size: ClassVar[int]`` (pixels of the shorter side): an audit on
    smaller images is then refused with one line before anything trains, and the contract
    checks build it at that size.
    """

    name: ClassVar[str]
    description: ClassVar[str]

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module: ...


class Trainer(Protocol):
    """The engine's standard training loop, handed to :meth:`Defense.fit`.

    A defense that trains differently (DP-SGD) uses the pieces; one that only changes the data
    calls :meth:`fit` on other data.
    """

    recipe: TrainingRecipe
    device: torch.device
    seed: int
    reference: TensorData | None
    """Public data from the same distribution that no model of the audit trains on and no attack
    scores (the train split outside the population), for defenses that learn from unlabelled
    reference data such as DMP's distillation; None when the population is the whole split."""

    def fit(self, model: Model, data: TensorData) -> dict[str, Any]:
        """Train ``model`` in place on ``data``; returns metadata (e.g. final train loss)."""
        ...

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer: ...

    def make_scheduler(
        self, optimizer: torch.optim.Optimizer
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The recipe's learning-rate schedule, stepped once per epoch."""
        ...

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The recipe's training objective on a batch (a scalar)."""
        ...

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...

    def declare_training_set(self, data: TensorData) -> None:
        """Say that the released model learns from *data* instead of the private set (distilled
        or synthesised images), so that reconstruction attacks are also scored against what the
        model actually saw. The engine stores it beside the model; it is never released."""
        ...


class Defense(Protocol):
    """A defense plugin: may change the architecture, training, training data or inference.

    The same defense applies to the target and to every shadow model (the attacker knows the
    training procedure, as in LiRA's threat model). The default methods do nothing, so a defense
    overrides only what it changes.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    trains_by_recipe: ClassVar[bool] = False
    """True when ``fit`` starts with exactly ``trainer.fit(model, data)`` on the data given and
    changes nothing before it: the engine may then train several models at once (an ensemble,
    :mod:`privbench.engine.ensemble`) and hand ``fit`` a trainer whose ``fit`` reports the
    training already done."""

    def prepare_model(self, model: Model) -> Model:
        """Change the architecture before training and before loading stored weights."""
        return model

    def fit(self, model: Model, data: TensorData, trainer: Trainer) -> dict[str, Any]:
        """Train ``model`` on the private ``data``; returns JSON metadata kept with the weights
        (a DP defense records its accountant's epsilon here)."""
        return trainer.fit(model, data)

    def release(self, model: Model) -> Model:
        """The model as the attacker can query it (an inference-time defense wraps it)."""
        return model


@attrs.frozen(eq=False)
class AttackContext:
    """What an attack receives for one target model.

    ``population`` holds the candidate samples, each a member of the target's training set or not
    (the attacker does not learn which). ``shadows`` are reference models the attacker trained
    itself with the same recipe and defense, each on a random half of the population recorded in
    ``shadow_keep`` (``S x N`` booleans), so the attacker has full access to them.
    """

    target: ModelView
    shadows: Sequence[ModelView]
    shadow_keep: np.ndarray
    population: TensorData
    num_classes: int
    seed: int
    hflip_preserves_label: bool = True
    """Whether mirrored queries (``population_logits("hflip")``) keep the label; where they do
    not (digits), asking for them raises an OptionError."""
    public: TensorData | None = None
    """Samples of the same distribution that no model of the pool trained on (the dataset's test
    split), which an attacker may use as known non-members (quantile regression); None where
    there are none (audits of outputs alone)."""


@attrs.frozen
class Signal:
    """A per-model statistic an attack reads from each model it is given: the population's
    logits under one query augmentation, or a registered scorer's values with its options.

    An attack may list its signals (``Attack.signals``) so that a suite computes them for every
    model as jobs of their own, one scoring pass per model, in parallel, before the attack runs
    and reads them from the cache. Listing them is an optimisation, never a permission: the
    attack still reads through its views, which enforce its access.
    """

    kind: Literal["logits", "scores"]
    name: str
    """The augmentation (``none``, ``hflip``) for logits; the scorer's name for scores."""
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)

    @classmethod
    def logits(cls, augmentation: str = "none") -> Signal:
        return cls("logits", augmentation)

    @classmethod
    def scores(cls, scorer: str, **options: Any) -> Signal:
        return cls("scores", scorer, options)

    @classmethod
    def queries(cls, hflip: bool) -> tuple[Signal, ...]:
        """The logits of one query per sample, and of its mirror with *hflip*."""
        return (cls.logits("none"), cls.logits("hflip")) if hflip else (cls.logits("none"),)

    def read(self, view: ModelView) -> torch.Tensor:
        if self.kind == "logits":
            return view.population_logits(self.name)
        return view.population_scores(self.name, **self.options)


class Attack(Protocol):
    """An attack plugin: membership scores for every population sample, higher = member.

    ``access`` is the threat model: the target view refuses anything beyond it.
    ``min_shadows`` is how many shadow models the attack needs (0 for a threshold attack).
    The engine reads both on the configured instance, so either may be a property that depends
    on the options (LiRA online needs 2 shadows, offline 1).

    Optionally, ``signals(hflip_preserves_label) -> Sequence[Signal]`` lists what ``score``
    will read from every model (see :class:`Signal`); suites then compute those per model as
    separate jobs (``docs/scale.md``).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    access: Access
    min_shadows: int

    def score(self, context: AttackContext) -> np.ndarray: ...


@attrs.frozen(eq=False)
class ReconstructionContext:
    """What a reconstruction attack receives for one target model (white-box threat model).

    ``target`` is the trained model with ``parameters`` access; ``initial`` is the same network
    before training (the attacker of Haim et al. and Loo et al. knows the initialisation, or the
    seed it came from). ``train_size`` is how many images the target trained on (the attacker
    sizes its candidate set from it: Loo et al. optimise ``2 N`` candidates). The attacker does
    not see the training images; the engine compares the candidates with them afterwards.
    """

    target: ModelView
    initial: Model
    train_size: int
    num_classes: int
    input_shape: tuple[int, int, int]
    seed: int


class ReconstructionAttack(Protocol):
    """An attack plugin that recovers training images instead of scoring membership.

    ``reconstruct`` returns candidate images in ``[0, 1]``, ``K x C x H x W``; the engine
    matches them one-to-one to the target's training images and reports the match quality.
    Registered through ``register_attacks`` like any attack; the engine tells the two apart by
    the method they define (``score`` or ``reconstruct``).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    access: Access

    def reconstruct(self, context: ReconstructionContext) -> torch.Tensor: ...


class Scorer(Protocol):
    """A scorer plugin: one per-sample statistic of a model on a batch (``N`` values, or
    ``N x A`` with one column per query augmentation).

    ``access`` is what it needs of the model, as for attacks (it may depend on the options).
    A sample's value must not depend on the rest of its batch: per-sample losses, never means.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    access: Access

    def score(self, model: ModelView, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...
