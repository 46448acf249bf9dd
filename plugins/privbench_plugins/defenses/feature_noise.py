"""Feature noise (dithering): Gaussian noise on the penultimate features at inference.

Tygert et al. ("Hammersley-Chapman-Robbins bounds on the privacy of inference with dithered
features"; official code github facebookresearch/hcrbounds, ``codes/testers.py``) release a
classifier's features ``a(x)`` plus ``N(0, sigma^2 I)`` noise and pass the noisy features to the
classification head; the ``hcr`` scorer bounds how well any unbiased estimator could recover the
input from such a release. As in the official code:

- training is standard (the noise is an inference-time defense only);
- ``sigma = scale * RMS`` where ``RMS = sqrt(mean of a(x)^2)`` over every entry of the features
  of a data set (the official code measures it on the evaluated split; we measure it on the
  private training data at fit time, so the defense needs no extra data).

The RMS must survive the store: the engine calls :meth:`FeatureNoise.fit` only when it trains,
and on reuse only ``prepare_model``, loading the stored weights and ``release``. So
``prepare_model`` registers a ``feature_rms`` buffer (0 = not measured yet), ``fit`` fills it,
and it travels in the state dict. A model released without a measured RMS measures it on the
first batch it answers.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any, ClassVar, Literal

import attrs
import torch

from privbench import Defense, Model, TensorData, Trainer, hookimpl

Layer = Literal["pre-logits", "pre-pooling"]


def released_map(model: Model, x: torch.Tensor, layer: Layer) -> torch.Tensor:
    """The clean representation that gets the noise: timm's pre-logits (after global pooling)
    or the pre-pooling feature map (``forward_features``, the paper's other choice)."""
    if layer == "pre-pooling":
        return model.net.forward_features(model.normalize(x))
    return Model.features(model, x)


@torch.no_grad()
def feature_rms(
    model: Model, x: torch.Tensor, batch_size: int = 512, layer: Layer = "pre-logits"
) -> float:
    """``sqrt(mean(a(x)^2))`` over every entry (the official code's ``variance`` before the
    square root), in eval mode, batched on the model's device."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        f = released_map(model, x[start : start + batch_size].to(device), layer).double()
        total += float(f.square().sum())
        count += f.numel()
    return (total / max(count, 1)) ** 0.5


class NoisyFeatureModel(Model):
    """A released model: ``forward`` is ``head(a(x) + N(0, sigma^2 I))``.

    It shares the network and buffers of the trained model (same state-dict keys). Logits,
    losses, predictions and input gradients all go through the noise; ``features`` stays the
    clean map ``a(x)``, the quantity whose release the noise protects and what the ``hcr``
    scorer differentiates (only ``parameters`` access reaches it, and a white-box attacker knows
    ``a`` anyway). Noise comes from a CPU generator seeded at release, advancing by one draw per
    query: the same sequence of queries gets the same answers, while repeated queries of one
    input get independent noise, as the paper's dithering does.
    """

    def __init__(self, inner: Model, scale: float, seed: int, layer: Layer = "pre-logits") -> None:
        super().__init__(inner.net, [0.0], [1.0])
        self.layer: Layer = layer
        self.mean = inner.mean  # shared tensors: same device, same values, same keys
        self.std = inner.std
        self.register_buffer("feature_rms", inner.feature_rms)
        self.scale = scale
        self.seed = seed
        self._generator: torch.Generator | None = None
        self.train(inner.training)

    @property
    def noise_std(self) -> float:
        """``sigma = scale * RMS`` (0 until the RMS is known)."""
        return self.scale * float(self.feature_rms)

    def _noise(self, f: torch.Tensor) -> torch.Tensor:
        if self._generator is None:
            # Seeded by the option and the model's own RMS: the target and each shadow model get
            # independent noise, so the attacker's shadows do not share the target's draws.
            rms_bits = struct.pack("<f", float(self.feature_rms))
            key = hashlib.sha256(f"{self.seed}".encode() + rms_bits).digest()
            self._generator = torch.Generator().manual_seed(int.from_bytes(key[:8], "little"))
        noise = torch.randn(f.shape, generator=self._generator, dtype=torch.float64)
        return (self.noise_std * noise).to(f)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The clean released map ``a(x)`` at the noised layer (pre-logits by default)."""
        return released_map(self, x, self.layer)

    def classify_features(self, features: torch.Tensor) -> torch.Tensor:
        if self.layer == "pre-pooling":
            return self.net.forward_head(features)
        return super().classify_features(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if float(self.feature_rms) == 0.0:
            with torch.no_grad():  # not measured at fit time: the first batch seen sets it
                self.feature_rms.fill_(f.detach().double().square().mean().sqrt().item())
        if self.scale > 0:
            f = f + self._noise(f)
        return self.classify_features(f)


@attrs.frozen
class FeatureNoise(Defense):
    """Tygert et al.'s dithering: release head(features + Gaussian noise), trained normally."""

    name: ClassVar[str] = "feature-noise"
    description: ClassVar[str] = (
        "Gaussian noise on the penultimate features at inference (Tygert et al., HCR bounds)"
    )
    trains_by_recipe: ClassVar[bool] = True  # fit trains normally, then measures features

    scale: float = attrs.field(
        default=0.5, validator=[attrs.validators.ge(0), attrs.validators.lt(math.inf)]
    )
    """Noise standard deviation, as a multiple of the features' RMS on the training data.
    The official code's ``sigma_scale``: 1 on MNIST, 5 on CIFAR-10, 2-3 on ImageNet."""
    seed: int = 0
    """Seed of the noise generator (mixed with each model's RMS)."""
    layer: Layer = attrs.field(
        default="pre-logits", validator=attrs.validators.in_(("pre-logits", "pre-pooling"))
    )
    """Where the noise goes: ``pre-logits`` (pooled penultimate features) or ``pre-pooling``.
    pre-logits (timm's) is the paper's default; pre-pooling, the feature map before global
    pooling, its other setting (the ``hcr`` scorer then bounds reconstruction from that map)."""

    def prepare_model(self, model: Model) -> Model:
        """Add the ``feature_rms`` buffer, so it is stored and loaded with the weights."""
        if "feature_rms" not in dict(model.named_buffers(recurse=False)):
            model.register_buffer("feature_rms", torch.zeros((), device=model.mean.device))
        return model

    def fit(self, model: Model, data: TensorData, trainer: Trainer) -> dict[str, Any]:
        meta = dict(trainer.fit(model, data))
        was_training = model.training
        model.eval()
        rms = feature_rms(model, data.x, layer=self.layer)
        model.train(was_training)
        model.feature_rms.fill_(rms)
        meta.update(feature_rms=rms, noise_std=self.scale * rms)
        return meta

    def release(self, model: Model) -> Model:
        self.prepare_model(model)  # a model not prepared here still gets the buffer
        return NoisyFeatureModel(model, self.scale, self.seed, self.layer)


@hookimpl
def register_defenses(register):
    register(FeatureNoise)
