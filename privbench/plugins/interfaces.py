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

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import attrs
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from privbench.errors import AccessDeniedError


class Access(enum.IntEnum):
    """What an attacker may observe of the target model; each level includes those below it."""

    LABELS = 1
    """Hard-label queries: the predicted class of any input it chooses."""
    LOGITS = 2
    """Score queries: logits, hence probabilities and the loss of any (input, label) pair."""
    INPUT_GRADIENTS = 3
    """Gradients (and higher derivatives) of the loss with respect to the input."""
    PARAMETERS = 4
    """White box: the parameters and the architecture."""

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> Access:
        return cls[text.strip().upper().replace("-", "_")]


@attrs.frozen(eq=False)
class TensorData:
    """Images in ``[0, 1]`` (``N x C x H x W``, float32) with integer labels (``N``, int64)."""

    x: torch.Tensor
    y: torch.Tensor

    def __attrs_post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.x.shape[0]} images but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray | torch.Tensor | Sequence[int]) -> TensorData:
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return TensorData(self.x[index], self.y[index])


@attrs.frozen(eq=False)
class LoadedDataset:
    """What a :class:`DatasetSource` returns.

    ``train`` is the pool from which the membership population is drawn; ``test`` is held out of
    every model's training and measures utility.
    """

    train: TensorData
    test: TensorData
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip_preserves_label: bool = True
    """False where mirroring changes the class (digits): the trainer then never flips."""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)


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
    """

    name: ClassVar[str]
    description: ClassVar[str]

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module: ...


class Model(nn.Module):
    """A classifier with its preprocessing: inputs in ``[0, 1]``, normalised inside.

    ``net`` is the timm-style network; ``mean`` and ``std`` are buffers, so they travel with the
    weights in the store.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images in ``[0, 1]``."""
        return self.net(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (timm's pre-logits) of images in ``[0, 1]``."""
        return self.net.forward_head(self.net.forward_features(self.normalize(x)), pre_logits=True)

    def classify_features(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from penultimate features: the classifier head alone."""
        return self.net.get_classifier()(features)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample cross-entropy (never the batch mean)."""
        return F.cross_entropy(self(x), y, reduction="none")


@attrs.frozen
class TrainingRecipe:
    """Everything about training that is not the data, the model or the defense."""

    epochs: int = attrs.field(default=30, validator=attrs.validators.ge(1))
    batch_size: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    optimizer: str = attrs.field(default="sgd", validator=attrs.validators.in_(("sgd", "adamw")))
    lr: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    momentum: float = attrs.field(default=0.9, validator=attrs.validators.ge(0))
    weight_decay: float = attrs.field(default=5e-4, validator=attrs.validators.ge(0))
    augment: str = attrs.field(
        default="none", validator=attrs.validators.in_(("none", "flip", "crop", "flip+crop"))
    )
    """Standard augmentation: random horizontal flip and/or random crop with 1/8 padding."""
    loss: str = attrs.field(
        default="cross-entropy", validator=attrs.validators.in_(("cross-entropy", "mse"))
    )
    """Training objective. ``mse``: half the squared error to one-hot targets minus ``1/C``,
    summed over classes and averaged over the batch: the kernel-regime setting of Loo et al.
    (ICLR 2024) in which reconstruction attacks are studied. Attacks still query cross-entropy."""
    schedule: str = attrs.field(
        default="cosine", validator=attrs.validators.in_(("cosine", "constant"))
    )
    """Learning-rate schedule over the epochs: cosine annealing to zero, or constant (full-batch
    gradient descent as in Loo et al. and Haim et al.: ``--batch-size`` at least the data size)."""


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


class ModelView:
    """A model as one threat model sees it: methods beyond ``access`` raise.

    All methods take images in ``[0, 1]`` and batch internally; results come back on the CPU.
    ``population_logits`` and ``population_scores`` read the engine's caches of this model's
    logits and scorer values on the population.
    """

    def __init__(
        self,
        model: Model,
        access: Access,
        *,
        device: torch.device | str = "cpu",
        batch_size: int = 512,
        population_logits: Callable[[str], torch.Tensor] | None = None,
        population_signal: Callable[[ModelView, str, dict[str, Any]], torch.Tensor] | None = None,
    ) -> None:
        self._model = model
        self.access = access
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._population_logits = population_logits
        self._population_signal = population_signal

    def _require(self, needed: Access, what: str) -> None:
        if self.access < needed:
            raise AccessDeniedError(
                f"{what} needs '{needed.label}' access but this attack declared "
                f"'{self.access.label}'"
            )

    def _batched(self, fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
        outputs = []
        for start in range(0, tensors[0].shape[0], self.batch_size):
            chunk = [t[start : start + self.batch_size].to(self.device) for t in tensors]
            out = fn(*chunk).detach().cpu()
            # Half precision (AMP) comes back as float32; float64 models keep their precision.
            outputs.append(out.float() if out.dtype in (torch.float16, torch.bfloat16) else out)
        return torch.cat(outputs) if outputs else torch.empty(0)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted labels (``labels`` access)."""
        self._require(Access.LABELS, "predict")
        return self._batched(lambda b: self._model(b).argmax(1), x).long()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (``logits`` access)."""
        self._require(Access.LOGITS, "logits")
        return self._batched(self._model, x)

    @torch.no_grad()
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample cross-entropy loss queries (``logits`` access)."""
        self._require(Access.LOGITS, "loss")
        return self._batched(self._model.loss, x, y)

    def loss_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The differentiable per-sample loss ``(x, y) -> loss`` on the model's device, for
        torch.func transforms (``input-gradients`` access)."""
        self._require(Access.INPUT_GRADIENTS, "loss_function")
        return self._model.loss

    def input_gradient(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient of each sample's own loss with respect to its input (``input-gradients``)."""
        self._require(Access.INPUT_GRADIENTS, "input_gradient")

        def grad(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            xb = xb.detach().requires_grad_(True)
            # Samples are independent in eval mode, so the gradient of the sum is per-sample.
            (g,) = torch.autograd.grad(self._model.loss(xb, yb).sum(), xb)
            return g

        return self._batched(grad, x, y)

    @property
    def model(self) -> Model:
        """The model itself, parameters included (``parameters`` access)."""
        self._require(Access.PARAMETERS, "model")
        return self._model

    def population_logits(self, augmentation: str = "none") -> torch.Tensor:
        """Cached logits on the population samples, ``N x C`` (``logits`` access).

        ``augmentation`` is ``"none"`` or ``"hflip"`` (the mirrored images).
        """
        self._require(Access.LOGITS, "population_logits")
        if self._population_logits is None:
            raise RuntimeError("this view has no population cache")
        return self._population_logits(augmentation)

    def population_scores(self, scorer: str, **options: Any) -> torch.Tensor:
        """The registered scorer *scorer* (with *options*) on every population sample: ``N``
        (or ``N x A``, one column per query augmentation), cached by the engine.

        The scorer runs on this view, so it cannot exceed this view's access: a scorer that
        needs more raises :class:`~privbench.errors.AccessDeniedError`.
        """
        if self._population_signal is None:
            raise RuntimeError("this view has no population cache")
        return self._population_signal(self, scorer, options)


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
