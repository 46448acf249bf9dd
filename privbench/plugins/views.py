"""The threat model as data: what an attacker may observe of a target (:class:`Access`, ordered
``labels < logits < input-gradients < parameters``) and the :class:`ModelView` through which an
attack sees its target, which refuses anything beyond the access the attack declared.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import torch

from privbench.errors import AccessDeniedError
from privbench.plugins.data import Model


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
