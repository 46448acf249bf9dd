"""Feature inversion: reconstruct the input from its noisy features by optimisation.

The attack that the ``hcr`` scorer's bound is about (Tygert et al., "Hammersley-Chapman-Robbins
bounds on the privacy of inference with dithered features"; official code github
facebookresearch/hcrbounds). Reported in the same units as ``hcr``, so a report can show the
bound and an actual reconstruction side by side.

Threat model: a white-box attacker (``parameters`` access) who knows the clean feature map
``a`` (``Model.features``; for a ``feature-noise`` model the map that gets the noise) observes
one release ``f = a(x) + N(0, sigma^2 I)`` of a private input ``x`` and tries to recover ``x``.
For each sample the scorer draws that release itself, then solves

    x_hat = argmin_{u}  mean((a(mean + std * u) - f)^2) / rms^2  + tv * TV(u) + l2 * mean(u^2)

over the *normalised* input ``u = (x - mean) / std`` (the tensor the network sees, where ``hcr``
measures) with Adam for ``steps`` iterations (cosine-decayed learning rate ``lr``), projecting
``u`` after every step onto the valid image range ``x in [0, 1]``. It starts from a neutral
image: the data set's mean colour (``u = 0``, ``start="mean"``) or mid-grey (``x = 0.5``).
``rms`` (the features' RMS, see below) only makes the data term unit-free, so that the prior
weights mean the same on every model; both weights default to 0 (no prior).

What it reports per sample (``output``):

- ``dct-rmse`` (default): the root-mean-square error of the reconstruction over the
  ``coefficients x coefficients`` lowest frequencies of the orthonormal DCT-II of every channel
  of the normalised input: exactly the coefficients whose bounds ``hcr`` averages, with the same
  option and default. ``hcr`` reports the mean over those coefficients of a lower bound on the
  standard deviation of any unbiased estimator; for an unbiased estimator the expected squared
  RMS error over the coefficients is at least the mean squared bound, which is at least the
  squared mean bound, so the two numbers are comparable (one realised error here against one
  bound there: compare averages over samples, not single samples).
- ``pixel-mse``: the mean squared error in ``[0, 1]`` pixel space over every pixel and channel.

The bound and the attack are not the same kind of statement. HCR bounds the error of *unbiased*
estimators only. This attack is biased: it starts from a neutral image, stops after finitely
many steps, projects onto the image range (a strong prior when the noise is large: its error
can never exceed that of guessing within ``[0, 1]``), and may add a smoothness or shrinkage
prior. So its error can and does fall below the HCR bound, most visibly at large noise, where
the bound grows with ``sigma`` without limit while the projected reconstruction's error
saturates, and wherever the prior matches the data. Near zero noise, on a locally injective
feature map, it is close to the least-squares estimate, which for a linear map is unbiased and
attains the Cramer-Rao value that ``hcr`` approaches. A value below the bound is therefore not
a contradiction; a value far above it says only that this attack is weak, not that the release
is safe. The attack is also a local optimisation of a non-convex problem for a deep network: it
is an upper bound on what an attacker can do only in the weak sense that some attacker does at
least this well.

Choices, and how they keep a sample's value independent of its batch (``check_scorer``):

- ``sigma = scale * RMS`` exactly as ``hcr`` determines it (``HCR.sigma``): by default the
  ``feature-noise`` defense's own scale (0.5 for a model without it); the RMS is the model's
  ``feature_rms`` buffer when it has one, else that of the sample's own clean features. Unlike
  ``hcr``, ``scale=0`` is allowed (a noiseless release: the pure inversion).
- The noise of each sample comes from its own ``torch.Generator`` seeded by ``seed`` and a hash
  of the sample's pixels. A sample's noise so depends on the sample alone (not on its batch or
  on how the engine chunks the population), every model sees the same noise for the same sample
  (common random numbers between target and shadows), and different samples get independent
  noise, so an average over samples is also an average over noise. (``hcr`` shares one random
  direction across a batch; shared *noise* here would make every sample's error come from the
  same draw, so an average over samples would not average over the noise.)
- The loss is the *sum* of per-sample losses and Adam's moments are element-wise, so each
  sample's reconstruction follows its own gradient alone.
- Needs ``parameters`` access: the clean feature map and its gradients (neither loss queries
  nor input gradients of the loss reveal ``a``).
"""

from __future__ import annotations

import hashlib
import math
from typing import ClassVar, Literal

import attrs
import torch

from privbench import Access, Model, ModelView, hookimpl
from privbench_plugins.scorers.hcr import HCR, dct_matrix


def sample_noise(x: torch.Tensor, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise of ``shape`` for each row of ``x`` (``N x shape``, float64, CPU),
    from a generator seeded by ``seed`` and the row's pixel values: batch-independent."""
    rows = x.detach().cpu().double().contiguous()
    draws = []
    for row in rows:
        key = hashlib.sha256(f"feature-inversion/{seed}/".encode() + row.numpy().tobytes())
        generator = torch.Generator().manual_seed(int.from_bytes(key.digest()[:8], "little"))
        draws.append(torch.randn(shape, generator=generator, dtype=torch.float64))
    return torch.stack(draws) if draws else torch.empty(0, *shape, dtype=torch.float64)


def total_variation(u: torch.Tensor) -> torch.Tensor:
    """Per-sample anisotropic total variation: mean absolute difference of neighbours."""
    tv = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
    if u.shape[-2] > 1:
        tv = tv + (u[..., 1:, :] - u[..., :-1, :]).abs().flatten(1).mean(1)
    if u.shape[-1] > 1:
        tv = tv + (u[..., :, 1:] - u[..., :, :-1]).abs().flatten(1).mean(1)
    return tv


@attrs.frozen
class FeatureInversion:
    """Per-sample error of reconstructing the input from one noisy release of its features by
    optimisation, in the units of the ``hcr`` bound."""

    name: ClassVar[str] = "feature-inversion"
    description: ClassVar[str] = (
        "Reconstruction error of inverting noisy features by optimisation, beside the HCR bound "
        "(Tygert et al.)"
    )
    access: ClassVar[Access] = Access.PARAMETERS

    scale: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    """Noise sigma, as a multiple of the features' RMS (None: the released model's; 0: none).
    As for ``hcr``: None takes the scale of the ``feature-noise`` defense the model was
    released with (0.5 for a model without it)."""
    steps: int = attrs.field(default=200, validator=attrs.validators.ge(1))
    """Adam iterations of the reconstruction."""
    lr: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    """Adam's initial learning rate (normalised input units), cosine-decayed to 0."""
    start: Literal["mean", "grey"] = attrs.field(
        default="mean", validator=attrs.validators.in_(("mean", "grey"))
    )
    """Initial image: the data set's mean colour (0 in normalised space) or mid-grey 0.5."""
    tv: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    """Weight of a total-variation prior on the normalised reconstruction (0: none)."""
    l2: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    """Weight of an L2 prior pulling the normalised reconstruction to the mean (0: none)."""
    coefficients: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    """``dct-rmse`` over the k x k lowest DCT frequencies of each channel (1: DC), as ``hcr``.
    The coefficients ``hcr`` averages with the same option."""
    output: Literal["dct-rmse", "pixel-mse"] = attrs.field(
        default="dct-rmse", validator=attrs.validators.in_(("dct-rmse", "pixel-mse"))
    )
    """Reported error: ``dct-rmse`` (in ``hcr``'s units) or ``pixel-mse`` (pixels in [0, 1])."""
    seed: int = 0
    """Seed of the noise (mixed with a hash of each sample: same sample, same noise)."""

    def sigma(self, model: Model, f0: torch.Tensor) -> torch.Tensor:
        """``scale * RMS`` per sample, as ``hcr`` computes it (0 where ``scale`` is 0)."""
        if self.scale == 0:
            return torch.zeros(f0.shape[0], dtype=f0.dtype, device=f0.device)
        return HCR(scale=self.scale).sigma(model, f0)

    def reconstruct(self, net: Model, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``x_hat`` in ``[0, 1]`` of each sample of ``x`` (on the model's
        device, in its dtype) from one noisy release of its features."""
        dtype = x.dtype
        mean, std = net.mean.to(x), net.std.to(x)

        def features(u: torch.Tensor) -> torch.Tensor:
            return net.features(mean + std * u).flatten(1)

        with torch.no_grad():
            f0 = net.features(x).flatten(1)
        sigma = self.sigma(net, f0)
        noise = sample_noise(x, tuple(f0.shape[1:]), self.seed).to(f0)
        release = f0 + sigma[:, None] * noise
        # Unit-free data term: the RMS of the clean features as hcr measures it (buffer or own).
        rms = HCR(scale=1.0).sigma(net, f0).clamp_min(torch.finfo(dtype).eps)

        low, high = (0.0 - mean) / std, (1.0 - mean) / std
        grey = self.start == "grey"
        u0 = ((0.5 - mean) / std).expand_as(x) if grey else torch.zeros_like(x)
        u = torch.max(torch.min(u0.clone(), high), low).requires_grad_(True)
        optimizer = torch.optim.Adam([u], lr=self.lr)
        for step in range(self.steps):
            for group in optimizer.param_groups:
                group["lr"] = self.lr * 0.5 * (1.0 + math.cos(math.pi * step / self.steps))
            loss = (features(u) - release).square().mean(1) / rms.square()
            if self.tv > 0:
                loss = loss + self.tv * total_variation(u)
            if self.l2 > 0:
                loss = loss + self.l2 * u.square().flatten(1).mean(1)
            (grad,) = torch.autograd.grad(loss.sum(), u)
            u.grad = grad
            optimizer.step()
            with torch.no_grad():
                u.copy_(torch.max(torch.min(u, high), low))
        return (mean + std * u.detach()).clamp(0.0, 1.0)

    def score(self, model: ModelView, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        net = model.model
        x = x.to(model.device, net.std.dtype)
        x_hat = self.reconstruct(net, x)
        if self.output == "pixel-mse":
            return (x_hat - x).square().flatten(1).mean(1).detach().cpu()
        error = (x_hat - x) / net.std.to(x)  # in the normalised input space, as hcr
        h, w = x.shape[-2:]
        k = min(self.coefficients, h, w)
        rows, cols = dct_matrix(h, x.dtype)[:k].to(x), dct_matrix(w, x.dtype)[:k].to(x)
        coefficients = torch.einsum("ih,nchw,jw->ncij", rows, error, cols).flatten(1)
        return coefficients.square().mean(1).sqrt().detach().cpu()


@hookimpl
def register_scorers(register):
    register(FeatureInversion)
