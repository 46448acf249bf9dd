"""Input loss curvature: how sharply each sample's own loss bends around its input.

Input loss curvature is the trace of the Hessian of a sample's loss with respect to its input,
``tr(H)`` with ``H = d^2 L(x, y) / dx^2`` (Garg et al. 2024, "Memorization through the lens of
curvature of loss function around samples"; Ravikumar et al., ICML 2024, "Unveiling Privacy,
Memorization, and Input Curvature Links"; Ravikumar et al., NeurIPS 2024, "Curvature Clues").
Training samples sit in flatter regions than held-out ones, which is the membership signal of
the ``curvature`` attack. Three estimators, by what they need of the model:

- ``zero-order`` (``logits`` access; the black-box estimate of Curvature Clues): loss queries
  only, see :func:`zero_order_round`.
- ``finite-difference`` (``input-gradients``; Garg et al. and the ICML 2024 paper): input
  gradients at ``x`` and at ``x + h v``, see :func:`finite_difference`.
- ``exact`` (``input-gradients``): Hutchinson's estimator with exact Hessian-vector products
  (double backward), see :func:`exact`.

Choices shared by all three, and where they differ from the official code
(github DeepakTatachar/Curvature-Clues, ``precompute_scores/precompute_cifar10_scores.py``;
DeepakTatachar/Privacy-Memorization-Curvature, ``utils/loss_curve_score.py`` and
``private_model_curve_scorer.py``):

- Per-sample loss, always. The ICML 2024 code differentiates ``nn.CrossEntropyLoss()`` with its
  default mean reduction, which divides every score by the batch size (and so makes a score
  depend on the batch it was computed in); we differentiate the sum of per-sample losses, whose
  gradient is each sample's own gradient because samples are independent in eval mode.
- Probes are Rademacher vectors (entries +-1) drawn from a ``torch.Generator`` seeded by
  ``seed``, one probe per round shared by every sample of the batch. A sample's value then
  depends only on the sample, the model and the options, not on its batch or on how the engine
  chunks the population, and the target and every shadow model are probed in the same
  directions (common random numbers, which removes probe noise from their comparison). The
  official code draws per-sample probes from the global RNG and adds ``1e-7`` to them
  (``h * (v + 1e-7)``); we use exactly ``+-h``.
- Perturbed images are not clamped to ``[0, 1]``: the official code does not clamp either.
  It perturbs the *normalised* tensor, whereas a privbench model normalises inside and a view
  below ``parameters`` access cannot read the mean and std, so ``h`` here is in pixel units:
  ``h`` pixels is ``h / std`` in the official code's units (``1e-3`` here is about ``5e-3``
  there on CIFAR). A constant rescaling of the curvature is a constant shift of the attack's
  log-curvature, which its Gaussian likelihood ratio ignores.
- ``hflip`` (default on): Curvature Clues scores the image and its horizontal mirror (the two
  query transformations of ``precompute_cifar10_scores.py``). By default the two values are
  averaged; ``columns=True`` returns them side by side (``N x 2``: image, mirror), which the
  attack uses to fit one Gaussian per query as the official notebooks do. The ICML 2024 code
  scores the image alone (``hflip=false``). Where mirroring changes the class (digits) the
  mirrored query is a mislabelled image: turn ``hflip`` off there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import attrs
import torch

from privbench import Access, ModelView, hookimpl

Method = Literal["zero-order", "finite-difference", "exact"]
Form = Literal["auto", "norm", "trace", "trace-of-square"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_FORMS: dict[str, tuple[str, ...]] = {
    "zero-order": (),
    "finite-difference": ("norm", "trace"),
    "exact": ("trace", "trace-of-square"),
}


def method_access(method: str) -> Access:
    """Loss queries suffice for the zero-order estimate; the others differentiate the loss."""
    return Access.LOGITS if method == "zero-order" else Access.INPUT_GRADIENTS


def rademacher(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Entries +-1 with probability 1/2 each (float64 on the CPU; cast by the caller)."""
    return torch.randint(0, 2, tuple(shape), generator=generator).double() * 2 - 1


QUERY_ELEMENTS = 1 << 26
"""At most this many input elements (256 MiB in float32) of zero-order queries per model call."""


def zero_order_round(
    loss: LossFn, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, h: float
) -> torch.Tensor:
    """One signed round of the zero-order estimate, per sample (Curvature Clues, official
    ``get_curvature_for_batch_zo_v2``): ``(t1 - t2 - t3 + t4) / (4 h)`` with
    ``t1..t4 = L(x + v + u), L(x - v + u), L(x + v - u), L(x - v - u)`` and ``u, v`` of entries
    ``+-h`` (broadcast over the batch, or one row per sample).

    By Taylor expansion the first- and third-order terms cancel and
    ``t1 - t2 - t3 + t4 = 4 u^T H v + O(h^4)``, so a round is ``u^T H v / h = h r_u^T H r_v``
    (``r = u / h``) up to ``O(h^3)``, exactly so for a quadratic loss. The division by ``4h``
    rather than ``4h^2`` is the official code's; it scales every score by ``h``. The four
    queries go to the model as one batch.
    """
    n = x.shape[0]
    queries = torch.cat([x + v + u, x - v + u, x + v - u, x - v - u])
    t = loss(queries, y.repeat(4)).reshape(4, n)
    return (t[0] - t[1] - t[2] + t[3]) / (4 * h)


def zero_order(
    loss: LossFn, x: torch.Tensor, y: torch.Tensor, h: float, rounds: int, g: torch.Generator
) -> torch.Tensor:
    """Mean over rounds of ``|zero_order_round|`` (the official code's ``torch.abs`` then mean).

    Not the trace: for independent Rademacher ``r_u, r_v``, ``E[r_u^T H r_v] = 0`` and
    ``E[(r_u^T H r_v)^2] = ||H||_F^2 = tr(H^2)``, so this measures the Hessian's Frobenius
    magnitude (about ``h sqrt(2/pi) ||H||_F`` in high dimension), which is what the attack uses.

    Precision: ``ModelView.loss`` answers in float32 (as the official code computes), so a round
    carries a rounding error of about ``6e-8 L / (4h)``; it stays below the signal while
    ``h^2 |r_u^T H r_v|`` is well above ``1e-7 L``. A larger ``h`` trades it for ``O(h^2)``
    truncation.
    """
    n = x.shape[0]
    total = torch.zeros(n, dtype=x.dtype, device=x.device)
    # Several rounds' 4 n queries go to the model as one call (the model view batches them into
    # full forward batches); the cap bounds the memory of the copies for large images.
    per_call = max(1, QUERY_ELEMENTS // (4 * x.numel()))
    for first in range(0, rounds, per_call):
        count = min(per_call, rounds - first)
        probes = [h * rademacher(x.shape[1:], g).to(x) for _ in range(2 * count)]
        u, v = torch.stack(probes[0::2])[:, None], torch.stack(probes[1::2])[:, None]
        queries = torch.stack([x + v + u, x - v + u, x + v - u, x - v - u], 1)  # R x 4 x n x ...
        t = loss(queries.flatten(0, 2), y.repeat(4 * count)).reshape(count, 4, n)
        rounds_values = (t[:, 0] - t[:, 1] - t[:, 2] + t[:, 3]) / (4 * h)
        total += rounds_values.to(total).abs().sum(0)
    return total / rounds


def input_gradient(loss: LossFn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each sample's gradient of its own loss: the gradient of the *sum* of per-sample losses."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(x, y).sum(), x)
    return grad


def finite_difference(
    loss: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    h: float,
    probes: int,
    g: torch.Generator,
    form: str,
    squared: bool,
) -> torch.Tensor:
    """Mean over probes ``r`` of a function of ``d = grad L(x + h r) - grad L(x) = h H r + O(h^2)``.

    - ``norm``: ``||d||^2`` with ``squared`` (Garg et al. and the ICML 2024 paper square the
      norm; its expectation is ``h^2 tr(H^2) + O(h^3)``), ``||d||`` without (the ICML 2024 code's
      ``regularizer``; about ``h E||H r||``). Like the papers, no division by ``h``.
    - ``trace``: ``r^T d / h``, Hutchinson's trace estimator with a finite-difference
      Hessian-vector product: ``r^T H r + O(h)``, unbiased for ``tr(H)`` up to ``O(h)``. The
      ICML 2024 code's ``eigs`` omits the ``/ h`` (and has the mean reduction's ``1 / batch``),
      i.e. it is ``h^2`` times this.
    """
    base = input_gradient(loss, x, y)
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(probes):
        r = rademacher(x.shape[1:], g).to(x)
        diff = (input_gradient(loss, x + h * r, y) - base).flatten(1)
        if form == "trace":
            total += (diff * r.flatten()).sum(1) / h
        else:
            norm = diff.norm(dim=1)
            total += norm.square() if squared else norm
    return total / probes


def hessian_vector_product(
    loss: LossFn, x: torch.Tensor, y: torch.Tensor, r: torch.Tensor
) -> torch.Tensor:
    """Per-sample exact ``H_i r_i``: the input gradient of ``sum_i grad L_i(x_i) . r_i``.

    The gradient of the summed per-sample loss is the batch of per-sample gradients (samples are
    independent), so one double-backward pass gives every sample's own product. Reverse over
    reverse rather than ``torch.func.jvp`` of ``torch.func.grad`` (forward over reverse): both
    agree to 1e-10, but on the CPU the former ran 3-10x faster per product on ``small-cnn``
    (0.15 s against 0.4-1.8 s for 256 digits) and the first ``torch.func`` call costs seconds.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(x, y).sum(), x, create_graph=True)
        (hvp,) = torch.autograd.grad((grad * r).sum(), x)
    return hvp.detach()


def exact(
    loss: LossFn, x: torch.Tensor, y: torch.Tensor, probes: int, g: torch.Generator, form: str
) -> torch.Tensor:
    """Hutchinson's estimator with exact Hessian-vector products (Hutchinson 1990).

    ``trace``: mean of ``r^T H r``, unbiased for ``tr(H)``, the curvature as the papers define
    it; ``trace-of-square``: mean of ``||H r||^2 = r^T H^2 r``, unbiased for
    ``tr(H^2) = ||H||_F^2`` (what the squared finite-difference norm estimates, times ``h^2``).
    """
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(probes):
        r = rademacher(x.shape[1:], g).to(x)
        hvp = hessian_vector_product(loss, x, y, r.expand_as(x)).flatten(1)
        total += (hvp * r.flatten()).sum(1) if form == "trace" else hvp.square().sum(1)
    return total / probes


@attrs.frozen
class Curvature:
    """Per-sample input loss curvature by one of three estimators (see the module docstring).

    ``access`` depends on ``method``: ``logits`` for ``zero-order``, ``input-gradients``
    otherwise; it is an instance property, read on the configured scorer.
    """

    name: ClassVar[str] = "curvature"
    description: ClassVar[str] = (
        "input loss curvature per sample: zero-order (loss queries), finite-difference or exact"
    )

    method: Method = "zero-order"
    """Estimator: ``zero-order``, ``finite-difference`` or ``exact``; it sets the access.
    zero-order: black box, loss queries (Curvature Clues); finite-difference: input-gradient
    differences (Garg et al., ICML 2024); exact: Hessian-vector products."""
    h: float = attrs.field(default=1e-3, validator=attrs.validators.gt(0))
    """Finite-difference step, in pixel units (inputs in [0, 1]); unused by ``exact``.
    1e-3 in both official codes, there in normalised units."""
    probes: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    """Rounds of the zero-order estimate, Rademacher probes otherwise (10 in both codes)."""
    form: Form = "auto"
    """What is estimated: ``norm`` ||H v||, ``trace`` tr(H), ``trace-of-square`` tr(H^2).
    finite-difference: ``norm`` (``auto``) or ``trace``; exact: ``trace`` (``auto``) or
    ``trace-of-square``; zero-order takes only ``auto``."""
    squared: bool = True
    """Square the finite-difference norm ``||H v||`` (``form=norm`` only), as the papers do.
    The ICML 2024 code does not."""
    hflip: bool = True
    """Also score the horizontal mirror (Curvature Clues queries both) and average the two."""
    columns: bool = False
    """One column per query (``N x 2`` with ``hflip``: image, mirror) instead of their mean."""
    seed: int = 0
    """Seed of the probes' generator: same seed, same probes, on every model."""
    bfloat16: bool = False
    """Hessian-vector products under bfloat16 autocast, for GPUs (``exact`` only).
    Measured against float32 on the same probes (``benchmarks/curvature_throughput.py``, CPU
    autocast): 1.2% median relative error for ``exact``, but 29% for ``finite-difference`` and
    2400% for ``zero-order``, whose loss differences at steps of 1e-3 bfloat16's 8-bit mantissa
    cannot hold; those two always run in float32."""

    def __attrs_post_init__(self) -> None:
        if self.bfloat16 and self.method != "exact":
            raise ValueError(
                f"bfloat16 is for method exact; {self.method} loses its signal in bfloat16"
            )
        allowed = _FORMS[self.method]
        if self.form != "auto" and self.form not in allowed:
            choices = ", ".join(allowed) or "no form"
            raise ValueError(f"method {self.method} takes {choices}, not form={self.form}")

    @property
    def access(self) -> Access:
        return method_access(self.method)

    @property
    def resolved_form(self) -> str | None:
        """The form in use: ``auto`` is the method's first (``None`` for zero-order)."""
        allowed = _FORMS[self.method]
        return self.form if self.form != "auto" else (allowed[0] if allowed else None)

    def _estimate(self, model: ModelView, x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
        if self.method == "zero-order":
            # ModelView.loss batches, moves to the model's device and returns the CPU.
            return zero_order(model.loss, x, y, self.h, self.probes, g)
        loss = model.loss_function()
        x, y = x.to(model.device), y.to(model.device)
        if self.method == "finite-difference":
            form = self.resolved_form or "norm"
            return finite_difference(loss, x, y, self.h, self.probes, g, form, self.squared)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):
            return exact(loss, x, y, self.probes, g, self.resolved_form or "trace")

    def score(self, model: ModelView, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        queries = [x, x.flip(-1)] if self.hflip else [x]
        values = torch.stack([self._estimate(model, q, y, g).detach().cpu() for q in queries], 1)
        return values if self.columns else values.mean(1)


@hookimpl
def register_scorers(register):
    register(Curvature)
