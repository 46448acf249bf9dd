"""Hammersley-Chapman-Robbins (HCR) bounds on reconstructing an input from dithered features.

Tygert et al., "Hammersley-Chapman-Robbins bounds on the privacy of inference with dithered
features" (official code github facebookresearch/hcrbounds, ``codes/testers.py``). If the
features ``a(x)`` are released with ``N(0, sigma^2 I)`` noise (the ``feature-noise`` defense),
every unbiased estimator ``T`` of a scalar function ``g`` of the input satisfies, for every
perturbation ``eps``,

    Var T >= (g(x + eps) - g(x))^2 / (exp(||a(x + eps) - a(x)||^2 / sigma^2) - 1),

(the chi-square divergence between two Gaussians of equal covariance is
``exp(||mean difference||^2 / sigma^2) - 1``). As ``eps -> 0`` along the best direction this is
the Cramer-Rao bound ``sigma^2 c^T (J^T J)^+ c`` for ``g(x) = c^T x`` (``J``: the Jacobian of
``a``). Like the paper, ``g`` ranges over the coefficients of the orthonormal DCT-II of the
*normalised* input (the tensor the network sees, ``(x - mean) / std``) and the value is a bound
on the standard deviation (the square root). A large value: the noisy release hides that
coefficient well; each sample gets the mean bound over the ``coefficients x coefficients``
lowest frequencies of every channel (the paper's "filtered" summary keeps the 8x8 lowest).

Two ways to choose ``eps`` (``method``):

- ``draws`` (the paper's): start from a random feature-space step ``z`` of norm
  ``step * sigma`` (the paper scales a noise draw by ``1 / (sqrt(d) * diffdiv)``, i.e.
  ``step = 1 / diffdiv``; ``diffdiv`` = 200 on MNIST, 500 elsewhere, 1000 for its Cramer-Rao
  ``--limit``), solve ``J eps = z`` by LSQR, re-linearise at ``x + eps`` and solve again with
  the achieved feature change rescaled to norm ``step * sigma`` (``passes`` times; the paper's
  ``num_pits``), then bound every coefficient with the exact ``a(x + eps) - a(x)``; the value
  per coefficient is the maximum over ``draws`` (25 in the paper). Each draw is a valid lower
  bound, but a random direction reaches only a fraction of the Cramer-Rao value.
- ``optimal``: for each reported coefficient ``c`` the maximising direction of the linearised
  problem, ``eps = (J^T J)^+ c``, found by two LSQR solves (``J^T w = c``, then ``J eps = w``),
  scaled to ``||J eps|| = step * sigma`` and bounded with the exact feature change: the HCR
  bound at that step, which tends to the Cramer-Rao bound as ``step -> 0`` (2 LSQR solves per
  coefficient, against one per draw and pass).

Both keep ``eps`` in the row space of ``J``, as the paper's minimum-norm LSQR solutions do:
where the features have fewer dimensions than the input, the directions ``J`` cannot see make
the unrestricted bound infinite.

Choices, and where they differ from the official code:

- LSQR (Paige and Saunders 1982) is written here in torch, batched with one set of scalars per
  sample and matrix-free (``torch.func.jvp`` and ``vjp``). The official code runs
  ``scipy.sparse.linalg.lsqr`` on the whole minibatch as one block-diagonal system, whose shared
  scalars and stopping rule make a sample's result depend on its batch; per-sample scalars solve
  each sample's own system, so a sample's value depends only on the sample. ``iterations`` caps
  each solve (scipy's default cap is ``2n``; the paper stops at a 2% residual).
- The random direction of a draw is shared by every sample of the batch (as the ``curvature``
  scorer shares probes), again so that a value does not depend on the batch.
- ``sigma = scale * RMS`` as in the defense (by default the defense's own ``scale``). The RMS is
  the model's ``feature_rms`` buffer when it has one (a ``feature-noise`` model: the RMS over its
  training data); otherwise that of the sample's own features, since a batch RMS would make a
  value depend on its batch.
- ``expm1`` instead of ``exp(.) - 1``, exact at small steps.
- Needs ``parameters`` access: the Jacobian of the features, not of the loss, so neither loss
  queries nor input gradients suffice.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import ClassVar, Literal

import attrs
import torch

from privbench import Access, Model, ModelView, hookimpl

Operator = Callable[[torch.Tensor], torch.Tensor]


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix (rows are frequencies), ``scipy.fft.dct(norm="ortho")``."""
    k = torch.arange(n, dtype=dtype)[:, None]
    i = torch.arange(n, dtype=dtype)[None, :]
    m = torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)) * (2.0 / n) ** 0.5
    m[0] /= 2.0**0.5
    return m


def lsqr(matvec: Operator, rmatvec: Operator, b: torch.Tensor, iterations: int) -> torch.Tensor:
    """Per-sample LSQR: minimum-norm least-squares ``x_i`` of ``A_i x_i = b_i`` (rows of ``b``).

    ``matvec`` and ``rmatvec`` apply every ``A_i`` and ``A_i^T`` at once to the rows of their
    argument. Scalars are per sample; a sample stops once ``||A^T r|| <= 1e-9 ||A^T b||`` or a
    Lanczos vector vanishes (its system is solved).
    """
    tiny = torch.finfo(b.dtype).tiny ** 0.5
    beta = b.norm(dim=1, keepdim=True)
    u = b / beta.clamp_min(tiny)
    v = rmatvec(u)
    alpha = v.norm(dim=1, keepdim=True)
    v = v / alpha.clamp_min(tiny)
    w, x = v.clone(), torch.zeros_like(v)
    phibar, rhobar = beta.clone(), alpha.clone()
    goal = 1e-9 * alpha * beta
    active = (alpha * beta) > tiny
    for _ in range(iterations):
        if not bool(active.any()):
            break
        u_new = matvec(v) - alpha * u
        beta_new = u_new.norm(dim=1, keepdim=True)
        u_new = u_new / beta_new.clamp_min(tiny)
        v_new = rmatvec(u_new) - beta_new * v
        alpha_new = v_new.norm(dim=1, keepdim=True)
        v_new = v_new / alpha_new.clamp_min(tiny)
        rho = torch.hypot(rhobar, beta_new).clamp_min(tiny)
        c, s = rhobar / rho, beta_new / rho
        phi = c * phibar
        x = torch.where(active, x + (phi / rho) * w, x)
        w = torch.where(active, v_new - (s * alpha_new / rho) * w, w)
        u = torch.where(active, u_new, u)
        v = torch.where(active, v_new, v)
        alpha = torch.where(active, alpha_new, alpha)
        rhobar = torch.where(active, -c * alpha_new, rhobar)
        phibar = torch.where(active, s * phibar, phibar)
        solved = (phibar * alpha * c.abs() <= goal) | (beta_new <= tiny) | (alpha_new <= tiny)
        active = active & ~solved & torch.isfinite(w).all(1, keepdim=True)
    return x


class _Features:
    """``u -> a(x + std * u)``: the features as a function of a perturbation ``u`` of the
    normalised input, with batched Jacobian products at a point ``u0``."""

    def __init__(self, model: Model, x: torch.Tensor) -> None:
        self.model, self.x, self.std = model, x, model.std.to(x)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return self.model.features(self.x + self.std * u).flatten(1)

    def operators(self, u0: torch.Tensor) -> tuple[Operator, Operator]:
        """``v -> J v`` (flat ``N x n`` to ``N x d``) and ``z -> J^T z`` at ``u0``.

        ``torch.func.linearize`` traces the forward-mode product once per point (0.2 s on
        ``small-cnn``); each product then costs a fifth of a fresh ``torch.func.jvp`` (5 ms
        against 26 ms for 400 digits), which matters over an LSQR solve's dozens of products.
        """
        shape = u0.shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # make_fx's notes while tracing
            _, jvp_fn = torch.func.linearize(self, u0)
        _, vjp_fn = torch.func.vjp(self, u0)

        def jvp(v: torch.Tensor) -> torch.Tensor:
            return jvp_fn(v.reshape(shape)).detach()

        def vjp(z: torch.Tensor) -> torch.Tensor:
            return vjp_fn(z)[0].detach().flatten(1)

        return jvp, vjp


def bound(coefficient_change: torch.Tensor, feature_change: torch.Tensor, sigma: torch.Tensor):
    """HCR bound on the standard deviation: ``|dg| / sqrt(expm1(||da||^2 / sigma^2))``."""
    divergence = torch.expm1(feature_change.square().sum(1) / sigma.square())
    shape = (-1,) + (1,) * (coefficient_change.ndim - 1)
    return coefficient_change.abs() / divergence.sqrt().clamp_min(1e-300).view(shape)


@attrs.frozen
class HCR:
    """Per-sample HCR lower bound on the standard deviation of any unbiased estimate of the
    input's lowest DCT coefficients from features released with Gaussian noise."""

    name: ClassVar[str] = "hcr"
    description: ClassVar[str] = (
        "Hammersley-Chapman-Robbins bound on reconstructing low DCT coefficients of the input "
        "from noisy features (Tygert et al.)"
    )
    access: ClassVar[Access] = Access.PARAMETERS

    scale: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    """Noise sigma, as a multiple of the features' RMS (None: the released model's own).
    None takes the scale of the ``feature-noise`` defense the model was released with (0.5 for
    a model without it)."""
    method: Literal["draws", "optimal"] = "draws"
    """``draws``: the paper's random starts; ``optimal``: the best direction per coefficient."""
    draws: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    """Random starts, maximum taken per coefficient (``draws`` only; 25 in the paper)."""
    passes: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    """Re-linearisations per draw (the paper's ``num_pits``: 10 on MNIST)."""
    iterations: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    """LSQR iterations per solve at most."""
    step: float = attrs.field(default=0.005, validator=attrs.validators.gt(0))
    """Feature change aimed at, ``||a(x + eps) - a(x)|| / sigma`` (the paper's 1 / diffdiv)."""
    coefficients: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    """Report the mean bound over the k x k lowest DCT frequencies of each channel (1: DC)."""
    seed: int = 0
    """Seed of the random starts (same seed, same directions on every model)."""

    def sigma(self, model: Model, f0: torch.Tensor) -> torch.Tensor:
        scale = self.scale
        if scale is None:
            released = getattr(model, "scale", None)
            scale = float(released) if isinstance(released, float | int) and released > 0 else 0.5
        rms = getattr(model, "feature_rms", None)
        if isinstance(rms, torch.Tensor) and float(rms) > 0:
            return scale * rms.to(f0).expand(f0.shape[0])
        return scale * f0.square().mean(1).sqrt()

    def score(self, model: ModelView, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        net = model.model
        dtype = net.std.dtype
        x = x.to(model.device, dtype)
        fn = _Features(net, x)
        n, c, h, w = x.shape
        k = min(self.coefficients, h, w)
        rows, cols = dct_matrix(h, dtype)[:k].to(x), dct_matrix(w, dtype)[:k].to(x)
        with torch.no_grad():
            f0 = fn(torch.zeros_like(x))
        sigma = self.sigma(net, f0)
        target = (self.step * sigma)[:, None]

        def dct(u: torch.Tensor) -> torch.Tensor:
            return torch.einsum("ih,nchw,jw->ncij", rows, u.reshape(x.shape), cols).flatten(1)

        def exact_change(eps: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return fn(eps.reshape(x.shape)) - f0

        if self.method == "optimal":
            jvp, vjp = fn.operators(torch.zeros_like(x))
            values = []
            for ch in range(c):
                for i in range(k):
                    for j in range(k):
                        basis = torch.zeros_like(x)
                        basis[:, ch] = torch.outer(rows[i], cols[j])
                        wvec = lsqr(vjp, jvp, basis.flatten(1), self.iterations)
                        eps = lsqr(jvp, vjp, wvec, self.iterations)
                        eps = eps * target / wvec.norm(dim=1, keepdim=True).clamp_min(1e-300)
                        coefficient = (eps * basis.flatten(1)).sum(1)
                        values.append(bound(coefficient, exact_change(eps), sigma))
            return torch.stack(values, 1).mean(1).detach().cpu()

        g = torch.Generator().manual_seed(self.seed)
        best = torch.zeros(n, c * k * k, dtype=dtype, device=x.device)
        for _ in range(self.draws):
            direction = torch.randn(f0.shape[1], generator=g, dtype=torch.float64).to(x)
            change = direction.expand_as(f0)
            eps = torch.zeros_like(x).flatten(1)
            for _ in range(self.passes):
                z = change * target / change.norm(dim=1, keepdim=True).clamp_min(1e-300)
                jvp, vjp = fn.operators(eps.reshape(x.shape))
                eps = lsqr(jvp, vjp, z, self.iterations)
                change = exact_change(eps)
            best = torch.maximum(best, bound(dct(eps), change, sigma))
        return best.mean(1).detach().cpu()


@hookimpl
def register_scorers(register):
    register(HCR)
