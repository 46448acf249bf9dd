"""Dataset distillation with Kernel Inducing Points (KIP) as a privacy defense: the released model
trains only on a small learned support set, never on a private image.

Threat model. The private training set is what the audit protects; the attacker queries (or
holds) the released model, as for every defense. Membership-inference and reconstruction attacks
can then only find what the model memorised, the distilled images, which the defense may
additionally keep at a chosen L2 distance from every private image.

KIP (Nguyen, Chen and Lee, "Dataset Meta-Learning from Kernel Ridge-Regression", ICLR 2021)
learns support images ``x_s`` with labels ``y_s`` such that kernel ridge regression (KRR) on them
predicts the private (target) data ``(x_t, y_t)`` well::

    loss = mean_t || y_t - K_ts (K_ss + reg * tr(K_ss) / n_s * I)^-1 y_s ||^2

on random batches of the private data, with Adam on ``x_s`` (and on ``y_s`` when
``learn_labels``). The kernel is the closed-form infinite-width NTK of a fully connected ReLU
network (:func:`relu_ntk`). Loo et al. ("Understanding Reconstruction Attacks with the Neural
Tangent Kernel and Dataset Distillation", ICLR 2024; github yolky/understanding_reconstruction)
relate reconstruction attacks on networks near the NTK regime to dataset distillation and use
KIP-distilled data against them: what an attack can reconstruct from a model trained only on
distilled data is the distilled images.

Choices we follow: support images initialised as random private images of each class (KIP's
default; ``init=noise`` draws uniform noise instead), ``per_class`` of them; labels one-hot minus
``1/C`` (Loo et al.'s zero-mean convention), fixed unless ``learn_labels``; ridge ``reg`` relative
to the mean diagonal of ``K_ss`` (KIP's colab: ``1e-6``); the NTK parameterisation with
``weight_var=2``, ``bias_var=0`` (He scaling, so the kernel's diagonal is preserved by depth).

Where we differ:

- Input space: the kernel sees flattened images minus the private data's per-pixel mean, the
  images themselves stay in ``[0, 1]`` pixels and are clamped there after every Adam step (KIP
  and Loo et al. learn in standardised or ZCA-whitened space). With ``bias_var=0`` the ReLU
  NTK is positively homogeneous and the ridge is relative to the trace, so dividing by a standard
  deviation would change nothing; centring matters, because the angle between inputs is what the
  arc-cosine kernel measures. The per-pixel mean is a statistic of the private data that shapes
  the distilled images; it is not released.
- Released model: Loo et al. retrain an MLP (and distil with RKIP, a reconstruction-based
  variant); we release whatever model the audit names, trained with cross-entropy by the engine's
  recipe (``trainer.fit``) on the distilled images with hard labels (the argmax of ``y_s``: the
  class each image was initialised for when labels are fixed). KIP's transfer from an infinite
  FC kernel to a finite CNN is approximate; ``fit`` reports the KRR accuracy for comparison.
- Privacy term (``min_distance``, ``distance_weight``): a squared-hinge penalty
  ``distance_weight * mean_s sum_k relu(min_distance - ||x_s - x_(k)||_2)^2`` over the ``k = 8``
  private images nearest to each support image (found afresh each step over the whole private
  set, without gradient; distances in ``[0, 1]`` pixel units). Every private image closer than
  ``min_distance`` is eventually among the nearest, so the term pushes each distilled image at
  least ``min_distance`` from every private image. The form of this penalty is ours. Without
  it, real-initialised images may stay close to the private images they started from (on
  digits, 300 steps move them about as far as a held-out digit lies from its nearest training
  digit, but not all of them): compare ``initial_nearest_private_distance_*`` with
  ``nearest_private_distance_*`` in the metadata.

Not a guarantee: KIP fits the private set it distils from (from 200 private digits, its KRR
loss ends at 0.0001 on them against 0.18 on held-out digits), so the released model still leaks
some membership. On 200 digits the loss attack's AUC falls from 0.60 to 0.55 on a small CNN
(test accuracy 0.95 to 0.85; tests/test_kip.py), not to chance; DP-SGD is the defense with a
guarantee.

Everything is seeded by ``trainer.seed`` and runs on ``trainer.device`` in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import attrs
import torch
from torch.nn import functional as F

from privbench import Defense, Model, PrivbenchError, TensorData, Trainer, hookimpl
from privbench.helpers import count_classes

_NEIGHBOURS = 8
"""Private images per support image that the distance penalty looks at in each step."""
_CHUNK = 4096


def relu_ntk(
    x1: torch.Tensor,
    x2: torch.Tensor,
    depth: int,
    weight_var: float = 2.0,
    bias_var: float = 0.0,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NNGP and NTK (each ``len(x1) x len(x2)``) of an infinitely wide fully connected ReLU
    network with ``depth`` hidden layers and one linear readout, on flattened inputs.

    NTK parameterisation: layer ``l`` computes ``sqrt(weight_var / n_(l-1)) W h + sqrt(bias_var)
    b`` with standard normal ``W``, ``b``. With ``Sigma^0(x, x') = weight_var x.x' / d +
    bias_var`` and ``Theta^0 = Sigma^0``, each hidden layer applies (Cho and Saul, "Kernel Methods
    for Deep Learning", NeurIPS 2009: the arc-cosine kernels of degree 1 and 0; Jacot, Gabriel and
    Hongler, "Neural Tangent Kernel", NeurIPS 2018; Arora et al., "On Exact Computation with an
    Infinitely Wide Neural Net", NeurIPS 2019, eq. for fully connected nets)::

        theta     = arccos(Sigma(x, x') / sqrt(Sigma(x, x) Sigma(x', x')))
        Sigma'    = weight_var sqrt(Sigma(x, x) Sigma(x', x')) (sin theta + (pi - theta)
                    cos theta) / (2 pi) + bias_var
        Sigma_dot = weight_var (pi - theta) / (2 pi)
        Theta'    = Theta Sigma_dot + Sigma'

    and returns ``(Sigma^depth, Theta^depth)``: the readout's NNGP and the network's NTK. The
    diagonals follow ``Sigma'(x, x) = weight_var Sigma(x, x) / 2 + bias_var`` exactly.

    Differentiable in both inputs: values use the exact cosine, gradients flow through the
    cosine clamped to ``[-1 + eps, 1 - eps]``, where the derivative of arccos is finite (on the
    diagonal, and for inputs within about ``sqrt(2 eps)`` radians of each other, the clamp is
    active and no gradient flows through the angle: the true derivative there is unbounded).
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    a, b = x1.flatten(1), x2.flatten(1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"inputs of {a.shape[1]} and {b.shape[1]} features")
    d = a.shape[1]
    cov = weight_var * (a @ b.T) / d + bias_var
    var1 = weight_var * a.square().sum(1) / d + bias_var
    var2 = weight_var * b.square().sum(1) / d + bias_var
    ntk = cov
    for _ in range(depth):
        # The floor keeps sqrt's gradient finite for an all-zero input without bias.
        norm = (var1[:, None] * var2[None, :]).clamp_min(1e-30).sqrt()
        raw = cov / norm
        safe = raw.clamp(-1.0 + eps, 1.0 - eps)
        exact = raw.detach().clamp(-1.0, 1.0)
        # Exact values (the diagonal stays exact) with the gradients of the clamped cosine,
        # where arccos' and sqrt(1 - c^2)'s derivatives are finite.
        theta = torch.arccos(safe)
        theta = theta + (torch.arccos(exact) - theta).detach()
        sin = (1.0 - safe.square()).sqrt()
        sin = sin + ((1.0 - exact.square()).sqrt() - sin).detach()
        cos = safe + (exact - safe).detach()
        cov = weight_var * norm * (sin + (math.pi - theta) * cos) / (2 * math.pi) + bias_var
        ntk = ntk * (weight_var * (math.pi - theta) / (2 * math.pi)) + cov
        var1 = weight_var * var1 / 2 + bias_var
        var2 = weight_var * var2 / 2 + bias_var
    return cov, ntk


def kip_labels(y: torch.Tensor, classes: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """One-hot minus ``1/C`` (Loo et al.): zero-mean regression targets."""
    return F.one_hot(y, classes).to(dtype) - 1.0 / classes


@attrs.frozen(eq=False)
class KernelSpace:
    """The kernel KIP and the KRR read-out share: the ReLU NTK of depth ``depth`` on flattened
    images minus ``center`` (a per-pixel mean), ridge ``reg`` relative to the mean diagonal."""

    center: torch.Tensor
    depth: int = 1
    reg: float = 1e-6

    def kernel(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        c = self.center.to(x1.device, torch.float64)
        return relu_ntk(x1.flatten(1).double() - c, x2.flatten(1).double() - c, self.depth)[1]

    def weights(self, x_s: torch.Tensor, y_s: torch.Tensor) -> torch.Tensor:
        """``(K_ss + reg tr(K_ss) / n_s I)^-1 y_s``."""
        k_ss = self.kernel(x_s, x_s)
        n = k_ss.shape[0]
        ridge = self.reg * torch.diagonal(k_ss).sum() / n
        eye = torch.eye(n, dtype=k_ss.dtype, device=k_ss.device)
        return torch.linalg.solve(k_ss + ridge * eye, y_s.to(k_ss.device, torch.float64))

    def predict(
        self, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, chunk: int = _CHUNK
    ) -> torch.Tensor:
        """KRR predictions on ``x_t`` from the support set (chunked over ``x_t``)."""
        alpha = self.weights(x_s, y_s)
        return torch.cat(
            [self.kernel(part.to(x_s.device), x_s) @ alpha for part in x_t.split(chunk)]
        )


@torch.no_grad()
def krr_evaluate(
    space: KernelSpace, x_s: torch.Tensor, y_s: torch.Tensor, data: TensorData, classes: int
) -> tuple[float, float]:
    """KIP loss (mean over samples of the squared error summed over classes) and accuracy of
    KRR from the support set on ``data``."""
    x_s = x_s.detach()
    prediction = space.predict(x_s, y_s.detach(), data.x)
    y = data.y.to(prediction.device)
    loss = (prediction - kip_labels(y, classes)).square().sum(1).mean()
    accuracy = (prediction.argmax(1) == y).double().mean()
    return float(loss), float(accuracy)


@torch.no_grad()
def nearest_private_distance(
    x: torch.Tensor, private: torch.Tensor, k: int = 1, chunk: int = _CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 distances (pixel units) from each image in ``x`` to its ``k`` nearest private images,
    and their indices: two ``len(x) x k`` tensors, nearest first."""
    flat = x.flatten(1).double()
    k = min(k, private.shape[0])
    best_d = torch.full((flat.shape[0], 0), math.inf, dtype=torch.float64, device=flat.device)
    best_i = torch.zeros((flat.shape[0], 0), dtype=torch.long, device=flat.device)
    for start in range(0, private.shape[0], chunk):
        part = private[start : start + chunk].flatten(1).double().to(flat.device)
        d = torch.cdist(flat, part)
        best_d = torch.cat([best_d, d], 1)
        best_i = torch.cat(
            [best_i, torch.arange(start, start + part.shape[0], device=d.device).expand_as(d)], 1
        )
        best_d, order = best_d.topk(k, dim=1, largest=False)
        best_i = best_i.gather(1, order)
    return best_d, best_i


def distance_penalty(
    x_s: torch.Tensor, private: torch.Tensor, min_distance: float, k: int = _NEIGHBOURS
) -> torch.Tensor:
    """``mean_s sum_k relu(min_distance - ||x_s - x_(k)||)^2`` over the ``k`` private images
    nearest to each support image (chosen without gradient)."""
    _, index = nearest_private_distance(x_s, private, k)
    near = private.flatten(1).to(x_s.device, x_s.dtype)[index]  # n_s x k x D
    diff = x_s.flatten(1)[:, None, :] - near
    # The floor keeps the gradient finite (zero) for an exact copy of a private image.
    distance = (diff.square().sum(-1) + 1e-12).sqrt()
    return F.relu(min_distance - distance).square().sum(1).mean()


@attrs.frozen(eq=False)
class Distilled:
    """What :func:`kip_distill` learns: images in [0, 1] (CPU, float32) and float64 labels."""

    x: torch.Tensor
    labels: torch.Tensor
    initial_x: torch.Tensor
    initial_labels: torch.Tensor
    space: KernelSpace
    losses: list[float]
    """The KIP loss of every step's target batch (without the distance penalty)."""

    @classmethod
    def of(
        cls,
        x: torch.Tensor,
        labels: torch.Tensor,
        initial_x: torch.Tensor,
        initial_labels: torch.Tensor,
        space: KernelSpace,
        losses: list[float],
    ) -> Distilled:
        """The result of an optimisation on any device, detached and moved to the CPU."""
        return cls(
            x=x.detach().float().cpu(),
            labels=labels.detach().cpu(),
            initial_x=initial_x.float(),
            initial_labels=initial_labels.cpu(),
            space=space,
            losses=losses,
        )

    @property
    def hard_labels(self) -> torch.Tensor:
        return self.labels.argmax(1).cpu()


def kip_distill(
    data: TensorData,
    classes: int,
    *,
    per_class: int = 10,
    steps: int = 300,
    lr: float = 0.01,
    batch_size: int = 256,
    depth: int = 1,
    reg: float = 1e-6,
    init: Literal["real", "noise"] = "real",
    learn_labels: bool = False,
    min_distance: float = 0.0,
    distance_weight: float = 10.0,
    objective: Literal["kip", "rkip"] = "kip",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Distilled:
    """KIP on ``data`` (see the module docstring); raises :class:`PrivbenchError` when ``init=real``
    asks for more images of a class than the private data holds."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    y_init = torch.arange(classes).repeat_interleave(per_class)
    if init == "real":
        counts = torch.bincount(data.y, minlength=classes)
        smallest = int(counts.argmin())
        if int(counts[smallest]) < per_class:
            raise PrivbenchError(
                f"defense 'dataset-distillation': per_class={per_class} but class {smallest} has "
                f"only {int(counts[smallest])} private images; give a smaller per_class (at most "
                f"{int(counts.min())}) or init=noise"
            )
        index = torch.cat(
            [
                torch.nonzero(data.y == c).flatten()[
                    torch.randperm(int(counts[c]), generator=generator)[:per_class]
                ]
                for c in range(classes)
            ]
        )
        x0 = data.x[index].double()
    else:
        x0 = torch.rand(len(y_init), *data.x.shape[1:], generator=generator, dtype=torch.float64)
    private = data.x.to(device)
    targets = data.y.to(device)
    space = KernelSpace(data.x.flatten(1).double().mean(0).to(device), depth, reg)
    x_s = x0.clone().to(device).requires_grad_(True)
    labels0 = kip_labels(y_init, classes).to(device)
    y_s = labels0.clone().requires_grad_(learn_labels)
    if objective == "rkip":
        return _rkip(data, classes, space, x0, labels0, steps, lr, min_distance, distance_weight)
    batch = min(batch_size, len(data))

    def kip_loss() -> torch.Tensor:
        index = torch.randperm(len(data), generator=generator)[:batch].to(device)
        prediction = space.kernel(private[index], x_s) @ space.weights(x_s, y_s)
        return (prediction - kip_labels(targets[index], classes)).square().sum(1).mean()

    extra = [y_s] if learn_labels else []
    losses = _optimise(x_s, extra, kip_loss, steps, lr, private, min_distance, distance_weight)
    return Distilled.of(x_s, y_s, x0, labels0, space, losses)


def _optimise(
    x_s: torch.Tensor,
    extra: list[torch.Tensor],
    objective: Callable[[], torch.Tensor],
    steps: int,
    lr: float,
    private: torch.Tensor,
    min_distance: float,
    distance_weight: float,
) -> list[float]:
    """Adam on the support images (and *extra* parameters) against *objective* plus the
    distance penalty, the images clamped to [0, 1] after every step; returns the objective's
    value at every step (without the penalty)."""
    optimizer = torch.optim.Adam([x_s, *extra], lr=lr)
    losses: list[float] = []
    for _ in range(steps):
        loss = objective()
        total = loss
        if min_distance > 0 and distance_weight > 0:
            total = total + distance_weight * distance_penalty(x_s, private, min_distance)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        with torch.no_grad():
            x_s.clamp_(0.0, 1.0)  # images stay images
        losses.append(float(loss.detach()))
    return losses


def _rkip(
    data: TensorData,
    classes: int,
    space: KernelSpace,
    x0: torch.Tensor,
    labels0: torch.Tensor,
    steps: int,
    lr: float,
    min_distance: float,
    distance_weight: float,
) -> Distilled:
    """RKIP: distillation by the reconstruction loss in the infinite-width limit.

    Loo et al. (ICLR 2024, Sec. 6) observe that the reconstruction attack is itself a dataset
    distillation method. A network trained to convergence on the private set ``T`` in the kernel
    regime moves its parameters by ``dtheta_T = J(X_T)^T alpha_T`` with ``alpha_T = (K_TT + ridge)
    ^-1 Y_T`` (``J`` the tangent features, ``K = J J^T`` the NTK). The reconstruction loss
    ``||dtheta_T - J(X_S)^T alpha_S||^2`` of support images ``X_S`` with free coefficients
    ``alpha_S`` is, in that limit, a function of the kernel alone::

        tr(alpha_T^T K_TT alpha_T) - 2 tr(alpha_T^T K_TS alpha_S) + tr(alpha_S^T K_SS alpha_S)

    which we minimise over ``X_S`` and ``alpha_S`` with Adam, divided by its first term (so 1
    means nothing explained and 0 the whole parameter change). The support labels released with
    the images are ``K_SS alpha_S``: the targets whose KRR (and kernel-regime training) gives
    back ``alpha_S``. The whole private set enters every step (no batches): ``K_TT`` is computed
    once. This is our reading of the paper's RKIP, not a port of its code.
    """
    device = space.center.device
    private = data.x.to(device)
    with torch.no_grad():
        alpha_t = space.weights(private, kip_labels(data.y.to(device), classes))
        k_tt = space.kernel(private, private)
        explained = float((alpha_t * (k_tt @ alpha_t)).sum())
    del k_tt
    x_s = x0.clone().to(device).requires_grad_(True)
    alpha_s = space.weights(x_s.detach(), labels0).clone().requires_grad_(True)

    def rkip_loss() -> torch.Tensor:
        cross = (alpha_t * (space.kernel(private, x_s) @ alpha_s)).sum()
        own = (alpha_s * (space.kernel(x_s, x_s) @ alpha_s)).sum()
        return (explained - 2 * cross + own) / explained

    losses = _optimise(x_s, [alpha_s], rkip_loss, steps, lr, private, min_distance, distance_weight)
    with torch.no_grad():
        labels = space.kernel(x_s, x_s) @ alpha_s
    return Distilled.of(x_s, labels, x0, labels0, space, losses)


@attrs.frozen
class KIPDefense(Defense):
    """Release a model trained only on a small KIP-distilled set (infinite-width ReLU NTK)."""

    name: ClassVar[str] = "dataset-distillation"
    description: ClassVar[str] = (
        "Train only on a small KIP-distilled set (Nguyen ICLR'21, ReLU NTK; Loo ICLR'24)"
    )

    per_class: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    """Distilled images per class."""
    steps: int = attrs.field(default=300, validator=attrs.validators.ge(0))
    """Adam steps of KIP (0: release a model trained on the initial images)."""
    lr: float = attrs.field(default=0.01, validator=attrs.validators.gt(0))
    """Adam learning rate on the images (in [0, 1] pixel units) and the labels."""
    batch_size: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    """Private (target) images per KIP step."""
    depth: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    """Hidden layers of the fully connected ReLU network whose NTK is the kernel."""
    reg: float = attrs.field(default=1e-6, validator=attrs.validators.gt(0))
    """Ridge, relative to the mean diagonal of the support kernel (KIP: 1e-6)."""
    init: Literal["real", "noise"] = attrs.field(
        default="real", validator=attrs.validators.in_(("real", "noise"))
    )
    """real: random private images of each class (KIP's default); noise: uniform in [0, 1]."""
    learn_labels: bool = False
    """Learn the support labels too (KIP's label learning); hard labels are their argmax."""
    min_distance: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    """Least L2 distance (pixel units) of every distilled image from every private one (0: off).
    For scale: a held-out digit lies 0.5-2 (mean 1.1) from its nearest training digit."""
    distance_weight: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    """Weight of the squared-hinge distance penalty."""
    objective: Literal["kip", "rkip"] = attrs.field(
        default="kip", validator=attrs.validators.in_(("kip", "rkip"))
    )
    """What the support set minimises: ``kip`` (KRR error) or ``rkip`` (reconstruction loss).
    kip: KRR prediction error on the private data (Nguyen et al.); rkip: the reconstruction
    loss in the infinite-width limit (Loo et al. Sec. 6; learn_labels and batch_size unused)."""

    def __attrs_post_init__(self) -> None:
        if self.min_distance > 0 and self.distance_weight == 0:
            raise ValueError("min_distance > 0 needs distance_weight > 0")

    def fit(self, model: Model, data: TensorData, trainer: Trainer) -> dict[str, Any]:
        if len(data) == 0:
            raise PrivbenchError("defense 'dataset-distillation': no private data to distil")
        model.to(trainer.device)
        classes = count_classes(model, data.x)
        if int(data.y.max()) >= classes:
            raise PrivbenchError(
                f"defense 'dataset-distillation': label {int(data.y.max())} but the model has "
                f"{classes} outputs; build the model for the dataset's class count"
            )
        distilled = kip_distill(
            data,
            classes,
            per_class=self.per_class,
            steps=self.steps,
            lr=self.lr,
            batch_size=self.batch_size,
            depth=self.depth,
            reg=self.reg,
            init=self.init,
            learn_labels=self.learn_labels,
            min_distance=self.min_distance,
            distance_weight=self.distance_weight,
            objective=self.objective,
            seed=trainer.seed,
            device=trainer.device,
        )
        space = distilled.space
        initial_loss, initial_accuracy = krr_evaluate(
            space, distilled.initial_x.to(trainer.device), distilled.initial_labels, data, classes
        )
        final_loss, final_accuracy = krr_evaluate(
            space, distilled.x.to(trainer.device), distilled.labels, data, classes
        )
        nearest, _ = nearest_private_distance(distilled.x.to(trainer.device), data.x)
        initial, _ = nearest_private_distance(distilled.initial_x.to(trainer.device), data.x)
        hard = distilled.hard_labels
        meta: dict[str, Any] = {
            "distilled_count": len(hard),
            "kip_steps": self.steps,
            "objective": self.objective,
            "distillation_loss_first": distilled.losses[0] if distilled.losses else None,
            "distillation_loss_last": distilled.losses[-1] if distilled.losses else None,
            "kip_initial_loss": initial_loss,
            "kip_final_loss": final_loss,
            "krr_private_accuracy_initial": initial_accuracy,
            "krr_private_accuracy": final_accuracy,
            "nearest_private_distance_min": float(nearest.min()),
            "nearest_private_distance_mean": float(nearest.mean()),
            "initial_nearest_private_distance_min": float(initial.min()),
            "initial_nearest_private_distance_mean": float(initial.mean()),
            "labels_changed": int((hard != distilled.initial_labels.argmax(1)).sum()),
        }
        released = TensorData(distilled.x, hard)
        trainer.declare_training_set(released)
        meta.update(trainer.fit(model, released))
        model.eval()
        return meta


@hookimpl
def register_defenses(register: Callable[[type], None]) -> None:
    register(KIPDefense)
