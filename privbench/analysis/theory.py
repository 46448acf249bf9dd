"""Theoretical bounds on leakage: what differential privacy allows an attack at most, and the
memorization-curvature-privacy links of Ravikumar et al. (ICML 2024).

Every function is vectorised (numpy broadcasting; a 0-d input gives a numpy float) and validates
its arguments, raising :class:`ValueError`. Quantities a theorem assumes but nobody can know for a
deep network (a loss bound, a Lipschitz constant, stability and generalization rates) are required
keyword arguments: no default would be anything but a hidden guess.

**Membership inference under (eps, delta)-DP.** Every test between a training set with and without
one sample satisfies ``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps (1 - TPR) + delta``
(the privacy region of Kairouz, Oh and Viswanath 2015, "The Composition Theorem for Differential
Privacy", Section 2). The region is convex, so it also bounds the pooled ROC of LiRA's game, whose
per-sample tests are mixtures over the rest of the training set. Randomized response attains its
boundary, so :func:`dp_tpr_bound`, :func:`dp_advantage_bound` and
:func:`dp_auc_bound` are tight. A measured value above them means a broken guarantee or sampling
noise (the finite-sample ROC fluctuates; see ``epsilon_lower`` in
:mod:`privbench.analysis.metrics`).

**Ravikumar, Soufleri, Hashemi and Roy, "Unveiling Privacy, Memorization, and Input Curvature
Links", ICML 2024** (PMLR 235; theorem numbers of that version). Notation: ``S`` has ``m``
samples, ``h_S^phi = A(phi, S)``, ``mem(A, S, i) = Pr[h_S(x_i) = y_i] - Pr[h_{S\\i}(x_i) = y_i]``
(Feldman 2019), ``Curv_phi(z, S) = tr(grad^2_z loss(h_S^phi, z))``. Its assumptions:

- bounded loss ``0 <= loss <= L``;
- error stability (3): ``|E[loss(h_S, z)] - E[loss(h_{S\\i}, z)]| <= beta`` for ``z ~ D``;
- generalization (4) with confidence ``delta`` (a probability over ``S``, not DP's delta), used
  through Lemma A.1 as ``E_phi|R_emp - R| <= gamma`` for the three pairs of eqs. (20)-(22);
- uniform model bias (5): ``|E_phi[R(h_S) - R(h*)]| <= Delta`` for every ``S``;
- ``rho``-Lipschitz input Hessian (6);
- upsilon-adjacency: ``S`` holds ``z_j = z_i + alpha`` with ``E[alpha] = 0`` and
  ``E[alpha^T alpha] = 1`` (proof of Theorem 5.1). By Jensen ``E||alpha||^3 >= 1`` then, so
  the paper's remark that a Gaussian makes that term zero does not hold; we refuse values below 1.

**Ravikumar, Soufleri and Roy, "Curvature Clues", NeurIPS 2024.** Its theory bounds the
distinguishability of the train and test input-loss-curvature distributions by a function of the
privacy parameter ``eps`` and the training-set size ``m`` that grows with both:
:func:`curvature_distinguishability_bound` is that function, in the form the official code fits
to measured AUROC (``conditonal_mia_aug_dp.ipynb``), and :func:`fit_curvature_distinguishability`
fits its constants to an epsilon sweep as the paper's DP figure does (the constants, like those
above, cannot be known for a deep network). The probability counterpart is
:func:`output_kl_bound`.

Longer than 400 lines: each bound keeps beside it the statement it implements and where it
comes from, which is most of the module.
"""

from __future__ import annotations

import attrs
import numpy as np
from numpy.typing import ArrayLike

FloatArray = np.ndarray | float
"""A numpy array broadcast from the arguments, or a numpy float where they were all scalars."""


def _array(name: str, value: ArrayLike) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if np.isnan(array).any():
        raise ValueError(f"{name} must not be NaN")
    return array


def _at_least(name: str, value: ArrayLike, low: float, *, strict: bool = False) -> np.ndarray:
    array = _array(name, value)
    bad = array <= low if strict else array < low
    if bad.any():
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be {relation} {low}, got {array[bad].ravel()[0]}")
    return array


def _epsilon(value: ArrayLike) -> np.ndarray:
    """DP's epsilon: non-negative; ``inf`` (no guarantee) is allowed and gives trivial bounds."""
    return _at_least("epsilon", value, 0.0)


def _delta(value: ArrayLike, name: str = "delta") -> np.ndarray:
    array = _at_least(name, value, 0.0)
    if (array > 1).any():
        raise ValueError(f"{name} must lie in [0, 1], got {array[array > 1].ravel()[0]}")
    return array


def _finite(name: str, array: np.ndarray) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array


def _sample_size(value: ArrayLike) -> np.ndarray:
    """The training-set size ``m``: an integer, at least 2 as the paper assumes (Section 2)."""
    array = _finite("m", _at_least("m", value, 2.0))
    if (array != np.round(array)).any():
        raise ValueError("m (the training-set size) must be an integer")
    return array


def _third_moment(value: ArrayLike) -> np.ndarray:
    array = _finite("perturbation_third_moment", _array("perturbation_third_moment", value))
    if (array < 1).any():
        raise ValueError(
            "perturbation_third_moment E||alpha||^3 must be >= 1: the proofs take "
            "E[alpha^T alpha] = 1, and E||alpha||^3 >= (E||alpha||^2)^(3/2) by Jensen"
        )
    return array


def _out(array: np.ndarray) -> FloatArray:
    return array[()]


# --------------------------------------------------------------------------------------------
# Membership inference under (eps, delta)-DP


def dp_tpr_bound(fpr: ArrayLike, epsilon: ArrayLike, delta: ArrayLike) -> FloatArray:
    """The largest true-positive rate any membership test can reach at false-positive rate *fpr*
    against an (*epsilon*, *delta*)-DP training algorithm.

    ``min(1, delta + e^eps FPR, 1 - e^-eps (1 - delta - FPR))``: the upper boundary of the privacy
    region of Kairouz et al. (2015), the first term from ``TPR <= e^eps FPR + delta``
    and the second from ``1 - FPR <= e^eps (1 - TPR) + delta``. Tight: randomized response meets
    it at its kink ``FPR = (1 - delta) / (e^eps + 1)``, and any ROC lies below it.

    *fpr* in [0, 1]; *epsilon* >= 0 (``inf`` allowed); *delta* in [0, 1]; all broadcast.
    """
    fpr = _delta(fpr, "fpr")
    epsilon, delta = _epsilon(epsilon), _delta(delta)
    with np.errstate(over="ignore", invalid="ignore"):
        # At FPR = 0 the first inequality leaves delta (e^eps * 0 would be NaN once e^eps
        # overflows), except without any guarantee (eps = inf), where nothing is bounded.
        first = np.where(
            fpr > 0, delta + np.exp(epsilon) * fpr, np.where(np.isinf(epsilon), 1.0, delta)
        )
    second = 1.0 - np.exp(-epsilon) * (1.0 - delta - fpr)
    return _out(np.minimum(1.0, np.minimum(first, second)))


def dp_advantage_bound(epsilon: ArrayLike, delta: ArrayLike) -> FloatArray:
    """The largest membership advantage ``TPR - FPR`` under (*epsilon*, *delta*)-DP.

    ``(e^eps - 1 + 2 delta) / (e^eps + 1) = tanh(eps/2) (1 - delta) + delta``: the maximum of
    :func:`dp_tpr_bound` minus FPR, reached at the kink; tighter than Yeom et al. (2018)'s
    ``e^eps - 1``. The largest balanced accuracy is ``(1 + advantage) / 2``.
    """
    epsilon, delta = _epsilon(epsilon), _delta(delta)
    return _out(np.tanh(epsilon / 2.0) * (1.0 - delta) + delta)


def dp_auc_bound(epsilon: ArrayLike, delta: ArrayLike) -> FloatArray:
    """The largest ROC AUC of any membership test under (*epsilon*, *delta*)-DP.

    The area under :func:`dp_tpr_bound`, in closed form
    ``(1 - delta) sigmoid(eps) + delta (1 - delta) sigmoid(-eps) + delta``; for pure DP
    ``e^eps / (1 + e^eps)``, the AUC of randomized response. ``0.5`` at ``eps = delta = 0``.
    """
    epsilon, delta = _epsilon(epsilon), _delta(delta)
    keep = 1.0 - delta
    from scipy.special import expit  # on use: scipy.special takes 0.1 s to import

    return _out(keep * expit(epsilon) + delta * keep * expit(-epsilon) + delta)


@attrs.frozen
class TheoreticalMaximum:
    """What (epsilon, delta)-DP allows any attack at most, field for field as in
    :class:`privbench.analysis.metrics.AttackMetrics`, so reports print it beside the measured
    values."""

    epsilon: float
    delta: float
    auc: float
    tpr_at_0_1_fpr: float
    tpr_at_1_fpr: float
    balanced_accuracy: float
    advantage: float

    def as_dict(self) -> dict[str, float]:
        return attrs.asdict(self)


def theoretical_maximum(epsilon: float, delta: float) -> TheoreticalMaximum:
    """The tight DP bounds on every reported attack metric, for an accountant's (eps, delta)."""
    advantage = float(dp_advantage_bound(epsilon, delta))
    return TheoreticalMaximum(
        epsilon=float(epsilon),
        delta=float(delta),
        auc=float(dp_auc_bound(epsilon, delta)),
        tpr_at_0_1_fpr=float(dp_tpr_bound(1e-3, epsilon, delta)),
        tpr_at_1_fpr=float(dp_tpr_bound(1e-2, epsilon, delta)),
        balanced_accuracy=(1.0 + advantage) / 2.0,
        advantage=advantage,
    )


def output_kl_bound(epsilon: ArrayLike) -> FloatArray:
    """Curvature Clues (Ravikumar, Soufleri and Roy, NeurIPS 2024), Theorem 4.1: for an
    eps-DP algorithm the KL divergence between the distributions of the model's output
    probabilities on training and on test samples is at most ``eps``.

    (Statement as summarised by secondary sources; it follows from KL <= max-divergence <= eps,
    Dwork and Roth 2014, and post-processing.) The paper's curvature counterpart, which grows
    with the training-set size, is :func:`curvature_distinguishability_bound`.
    """
    return _out(_epsilon(epsilon).copy())


def curvature_distinguishability_bound(
    epsilon: ArrayLike,
    *,
    m: ArrayLike,
    loss_bound: ArrayLike,
    offset: ArrayLike,
    scale: ArrayLike,
) -> FloatArray:
    """Curvature Clues (NeurIPS 2024): the upper bound on how well train and test samples can be
    told apart by their input-loss curvature, as a function of DP's *epsilon* and the
    training-set size *m*:

    ``scale * (L m (1 - e^-eps) + L + offset)^2``.

    The inner term is the ICML 2024 bound on the mean curvature (:func:`mean_curvature_bound`,
    ``L (m + 1)(1 - e^-eps) + c2``, with ``L e^-eps`` folded into the constant); the square and
    *scale* turn a bound on the separation of the two curvature distributions into one on their
    divergence (for equal-variance Gaussians ``KL = (mean gap)^2 / (2 var)``). This is the
    function the paper's official code fits to AUROC against epsilon
    (``conditonal_mia_aug_dp.ipynb``: ``s (l m (1 - exp(-eps)) + l + c)^2``); the theorem's
    full statement was not available to us, so its assumptions are those of
    :func:`mean_curvature_bound`. What it says that a measurement can check: distinguishability
    rises with ``eps`` and saturates (``1 - e^-eps -> 1``), and at a fixed ``eps`` it grows with
    ``m``, which is why the curvature attack gains on larger datasets.

    *loss_bound* ``L`` > 0, *offset* real (``c`` of the fit, ``L + c >= 0`` not required), *scale*
    > 0; *m* an integer >= 2.
    """
    epsilon = _epsilon(epsilon)
    m = _sample_size(m)
    loss_bound = _finite("loss_bound", _at_least("loss_bound", loss_bound, 0.0, strict=True))
    offset = _finite("offset", _array("offset", offset))
    scale = _finite("scale", _at_least("scale", scale, 0.0, strict=True))
    return _out(scale * (loss_bound * m * -np.expm1(-epsilon) + loss_bound + offset) ** 2)


@attrs.frozen
class CurvatureBoundFit:
    """Constants of :func:`curvature_distinguishability_bound` fitted to a measured sweep.

    ``loss_bound`` is fixed at 1 (the ICML paper's Remark for cross-entropy): with ``m`` fixed
    only two combinations of ``(L, offset, scale)`` are identifiable. ``margin`` is added on top
    so that the curve lies above every measured point, as an upper bound should (the official
    notebook adds a constant 0.015 for the same reason).
    """

    m: int
    offset: float
    scale: float
    margin: float
    loss_bound: float = 1.0

    def __call__(self, epsilon: ArrayLike) -> FloatArray:
        return _out(
            np.asarray(
                curvature_distinguishability_bound(
                    epsilon,
                    m=self.m,
                    loss_bound=self.loss_bound,
                    offset=self.offset,
                    scale=self.scale,
                )
            )
            + self.margin
        )


def fit_curvature_distinguishability(
    epsilons: ArrayLike, measured: ArrayLike, *, m: int
) -> CurvatureBoundFit:
    """Fit :func:`curvature_distinguishability_bound` to a *measured* distinguishability (e.g.
    the curvature attack's AUROC) at several *epsilons*, for training-set size *m*, by least
    squares (the official notebook uses ``scipy.optimize.curve_fit``), then lift the curve by the
    largest residual so it bounds every point. Needs at least three distinct epsilons.

    With ``L = 1`` the curve is ``a (s + b)^2`` in the saturation ``s = 1 - e^-eps``, with
    ``a = scale m^2`` and ``b = (1 + offset) / m``. ``b >= 0`` (a bound that does not fall as
    epsilon grows); for each ``b`` on a fine logarithmic grid the best ``a >= 0`` is linear least
    squares, so the fit cannot fail to converge, even on a flat or falling sweep.
    """
    eps = _finite("epsilons", _epsilon(epsilons)).ravel()
    values = _finite("measured", _array("measured", measured)).ravel()
    if eps.shape != values.shape:
        raise ValueError(f"{eps.size} epsilons but {values.size} measured values")
    if np.unique(eps).size < 3:
        raise ValueError("fitting the curvature bound needs at least three distinct epsilons")
    m_value = int(_sample_size(m))
    saturation = -np.expm1(-eps)
    from scipy.optimize import minimize_scalar

    def best_scale(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        basis = (saturation[None, :] + b[:, None]) ** 2
        a = np.maximum((basis @ values) / np.einsum("ij,ij->i", basis, basis), 0.0)
        return a, ((a[:, None] * basis - values[None, :]) ** 2).sum(1)

    grid = np.concatenate([[0.0], np.logspace(-4, 6, 2001)])
    best = int(np.argmin(best_scale(grid)[1]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    refined = minimize_scalar(
        lambda b: float(best_scale(np.array([b]))[1][0]),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-12 * max(high, 1e-12)},
    )
    b = float(refined.x) if refined.fun <= best_scale(grid[[best]])[1][0] else float(grid[best])
    a = float(best_scale(np.array([b]))[0][0])
    margin = max(0.0, float(np.max(values - a * (saturation + b) ** 2)))
    return CurvatureBoundFit(
        m=m_value, offset=b * m_value - 1.0, scale=max(a, 1e-300) / m_value**2, margin=margin
    )


# --------------------------------------------------------------------------------------------
# Ravikumar et al., ICML 2024


def memorization_bound(epsilon: ArrayLike, delta: ArrayLike) -> FloatArray:
    """Theorem 5.4 (Privacy => Less Memorization): an eps-DP algorithm has, for every sample,
    ``mem(A, S, i) <= 1 - e^-eps``.

    For (eps, delta)-DP the paper only says the bound holds "with probability 1 - delta"; we
    follow its proof with ``Pr[h_S(x_i) = y_i] <= e^eps Pr[h_{S\\i}(x_i) = y_i] + delta``
    instead, which gives ``mem <= 1 - e^-eps (1 - delta)`` deterministically (equal to the theorem
    at delta = 0). Not tight: ``mem`` is the advantage of the test "is ``h(x_i)`` correct", so
    :func:`dp_advantage_bound` (``tanh(eps/2)`` for pure DP) also bounds it, and is smaller.

    *epsilon* >= 0 (``inf`` allowed); *delta* in [0, 1]: the accountant's values.
    """
    epsilon, delta = _epsilon(epsilon), _delta(delta)
    return _out(1.0 - np.exp(-epsilon) * (1.0 - delta))


def stability_bound(epsilon: ArrayLike, *, loss_bound: ArrayLike) -> FloatArray:
    """Lemma 5.2 (Privacy => Stability): an eps-DP algorithm with ``0 <= loss <= L`` has error
    stability (3) ``beta = L (1 - e^-eps)`` (improving Wang et al. 2016's ``L (e^eps - 1)``).

    *loss_bound* is ``L`` > 0 (cross-entropy is unbounded: the paper fits ``L`` empirically).
    """
    epsilon = _epsilon(epsilon)
    loss_bound = _finite("loss_bound", _at_least("loss_bound", loss_bound, 0.0, strict=True))
    return _out(loss_bound * -np.expm1(-epsilon))


def mean_curvature_bound(
    epsilon: ArrayLike,
    *,
    m: ArrayLike,
    loss_bound: ArrayLike,
    generalization: ArrayLike,
    model_bias: ArrayLike,
    hessian_lipschitz: ArrayLike,
    perturbation_third_moment: ArrayLike,
) -> FloatArray:
    """Theorem 5.3 (Privacy => Low Input Loss Curvature): for an eps-DP algorithm under error
    stability (3), generalization (4) and uniform model bias (5), with ``0 <= loss <= L``, with
    probability at least ``1 - delta`` (the confidence of (4))

    ``E_{z,phi}[Curv_phi(z, S)] <= L (m + 1)(1 - e^-eps) + c2``,
    ``c2 = (4m - 1) gamma + 2 (m - 1) Delta + rho/6 E||alpha||^3``.

    The proof also uses the Lipschitz Hessian (6) and upsilon-adjacency (module docstring).
    Parameters: *epsilon* the DP epsilon; *m* the training-set size (integer >= 2); *loss_bound*
    ``L`` > 0; *generalization* ``gamma`` >= 0 of Lemma A.1; *model_bias* ``Delta`` >= 0;
    *hessian_lipschitz* ``rho`` >= 0; *perturbation_third_moment* ``E||alpha||^3`` >= 1.
    The curvature is the expected trace of the input Hessian of the loss, over test points
    ``z ~ D`` and the training randomness.
    """
    epsilon = _epsilon(epsilon)
    m = _sample_size(m)
    loss_bound = _finite("loss_bound", _at_least("loss_bound", loss_bound, 0.0, strict=True))
    offset = _c2(m, generalization, model_bias, hessian_lipschitz, perturbation_third_moment)
    return _out(loss_bound * (m + 1.0) * -np.expm1(-epsilon) + offset)


def _c2(
    m: np.ndarray,
    generalization: ArrayLike,
    model_bias: ArrayLike,
    hessian_lipschitz: ArrayLike,
    perturbation_third_moment: ArrayLike,
) -> np.ndarray:
    gamma = _finite("generalization", _at_least("generalization", generalization, 0.0))
    bias = _finite("model_bias", _at_least("model_bias", model_bias, 0.0))
    rho = _finite("hessian_lipschitz", _at_least("hessian_lipschitz", hessian_lipschitz, 0.0))
    third = _third_moment(perturbation_third_moment)
    return (4.0 * m - 1.0) * gamma + 2.0 * (m - 1.0) * bias + rho / 6.0 * third


def memorization_curvature_bound(
    mean_curvature: ArrayLike,
    *,
    m: ArrayLike,
    loss_bound: ArrayLike,
    stability: ArrayLike,
    generalization: ArrayLike,
    model_bias: ArrayLike,
    hessian_lipschitz: ArrayLike,
    perturbation_third_moment: ArrayLike,
) -> FloatArray:
    """Theorem 5.1 (Curvature Upper Bounds Memorization): under error stability (3),
    generalization (4), uniform model bias (5), upsilon-adjacency and ``0 <= loss <= L``, with
    probability at least ``1 - delta`` (the confidence of (4))

    ``|mem(A, S, i)| <= E_phi[Curv_phi(z_i, S\\i)] / L + c1``,
    ``c1 = rho/(6L) E||alpha||^3 + m beta / L + (4m - 1) gamma / L + 2 (m - 1) Delta / L``.

    *mean_curvature* is ``E_phi[Curv_phi(z_i, S\\i)]``: sample i's input-loss curvature averaged
    over models trained without it (any real, one per sample). *stability* is ``beta`` >= 0 of (3)
    (:func:`stability_bound` gives it for a DP algorithm); the others as in
    :func:`mean_curvature_bound`. The right-hand side is returned as stated, so it can exceed 1,
    the trivial bound on ``|mem|``. The paper's Remark: for cross-entropy (unbounded) the bound
    holds with ``L = 1`` if every model's probability of each label lies strictly in (0, 1).
    """
    curvature = _finite("mean_curvature", _array("mean_curvature", mean_curvature))
    m = _sample_size(m)
    loss_bound = _finite("loss_bound", _at_least("loss_bound", loss_bound, 0.0, strict=True))
    beta = _finite("stability", _at_least("stability", stability, 0.0))
    offset = m * beta + _c2(
        m, generalization, model_bias, hessian_lipschitz, perturbation_third_moment
    )
    return _out((curvature + offset) / loss_bound)
