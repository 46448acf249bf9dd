"""Curvature Clues (Ravikumar, Soufleri and Roy, NeurIPS 2024): members sit where the input loss
curvature is low, judged per sample against shadow models.

For every population sample the attack takes ``log(curv + 1e-22)`` (the notebooks' ``log_err``)
of the ``curvature`` scorer on the target and on every shadow model, fits one Gaussian to the
shadows that trained on the sample (IN) and one to those that did not (OUT), and scores the
target's value by how much likelier it is under IN than under OUT: ``Curv ZO LR`` and
``Curv ZO NLL`` of the paper's tables (official notebooks ``conditonal_mia_aug_cifar10.ipynb``
and siblings, github DeepakTatachar/Curvature-Clues). The default estimator is the zero-order
one, so the default threat model is the paper's black box (``logits``); ``method`` asks for a
gradient estimator, and ``access`` follows it.

Threat model: the target is queried only through ``population_scores``, which refuses a scorer
that needs more than the attack declared; the shadows are the attacker's own.

How this differs from the notebooks, and why:

- ``gaussian=canonical`` (default) uses the fitted variance as a variance. The notebooks'
  ``likelihood`` and ``nll`` divide by ``2 var**2`` and subtract ``0.5 log(var**2)``: they treat
  ``np.nanvar``'s variance as a standard deviation, and ``get_nll_ratio`` scores OUT with the IN
  variance. ``gaussian=official`` reproduces both.
- LR is computed in log space, ``log sum_a N_in,a - log(sum_a N_out,a + eps)``, which ranks as
  the notebooks' ratio of likelihoods summed over query augmentations does but cannot overflow.
- Per-sample variance has a floor (``1e-6``) where the notebooks add ``1e-22`` / ``1e-32``.
- A sample with no IN (or no OUT) shadow, which the notebooks' 64 shadows never leave, takes the
  other side's mean shifted by the average IN-OUT shift of the samples that have both; one with
  fewer than two takes the pooled variance, as every sample does with ``global_variance``
  (LiRA's fixed variance for few shadows, Carlini et al. 2022; pooled here around each sample's
  own mean, where LiRA's ``np.std`` of all scores also counts the spread between samples).
- Estimators that can be negative (the ``trace`` forms) are logged as ``log(|curv| + 1e-22)``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import attrs
import numpy as np
from scipy.special import logsumexp

from privbench import Access, AttackContext, ModelView, OptionError, Signal, hookimpl

EPS = 1e-22
"""The notebooks' ``eps``: inside the log and in the LR's denominator."""
VAR_FLOOR = 1e-6
"""Smallest fitted variance of a log-curvature."""


def _fit(scores: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample mean and (ddof 0, as ``np.nanvar``) variance of ``scores`` (``S x N x A``)
    over the shadows in ``mask`` (``S x N x 1``), and how many there were (``N x 1``)."""
    count = mask.sum(0)
    mean = np.where(mask, scores, 0.0).sum(0) / np.maximum(count, 1)
    squares = np.where(mask, (scores - mean) ** 2, 0.0).sum(0)
    return mean, squares / np.maximum(count, 1), count


def _pooled(scores: np.ndarray, mask: np.ndarray, mean: np.ndarray, count: np.ndarray):
    """One variance per column: squared deviations from each sample's own mean, pooled over the
    samples with at least two shadows (over everything if there are none)."""
    usable = mask & (count >= 2)[None]
    if usable.any():
        squares = np.where(usable, (scores - mean) ** 2, 0.0).sum((0, 1))
        return squares / usable.sum((0, 1))
    return np.array([np.var(scores[..., a][mask[..., 0]]) for a in range(scores.shape[-1])])


def _log_normal(s: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * ((s - mean) ** 2 / var + np.log(var) + np.log(2 * np.pi))


@attrs.frozen
class CurvatureAttack:
    """Gaussian likelihood ratio of log input-loss curvature, IN against OUT shadows."""

    name: ClassVar[str] = "curvature"
    description: ClassVar[str] = (
        "Ravikumar et al. 2024 (Curvature Clues): per-sample Gaussian LR of log input curvature"
    )
    min_shadows: ClassVar[int] = 2

    variant: Literal["lr", "nll"] = "lr"
    """``lr``: ``Curv ZO LR``, likelihoods summed over query augmentations, then their ratio;
    ``nll``: ``Curv ZO NLL``, OUT minus IN negative log-likelihood summed over augmentations."""
    gaussian: Literal["canonical", "official"] = "canonical"
    """``official``: the notebooks' density (variance used as a standard deviation; NLL scores
    OUT with the IN variance)."""
    global_variance: bool = False
    """One pooled variance per side instead of per-sample ones (for few shadows)."""
    method: Literal["zero-order", "finite-difference", "exact"] = "zero-order"
    """The ``curvature`` scorer's estimator: ``zero-order`` needs ``logits`` access, the others
    ``input-gradients``."""
    form: Literal["auto", "norm", "trace", "trace-of-square"] = "auto"
    """Passed to the scorer (``finite-difference``: ``norm`` or ``trace``; ``exact``: ``trace``
    or ``trace-of-square``; ``auto``: the first)."""
    squared: bool = True
    """Passed to the scorer (``finite-difference`` ``norm`` only)."""
    h: float = attrs.field(default=1e-3, validator=attrs.validators.gt(0))
    """Finite-difference step of the scorer, in pixel units."""
    probes: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    """Rounds (zero-order) or probes of the scorer."""
    hflip: bool | None = None
    """Query the image and its mirror, one Gaussian each (the notebooks' ``num_augs = 2``).
    Unset: wherever the dataset's labels survive mirroring (CIFAR yes, digits no)."""
    seed: int = 0
    """Probe seed: the same for the target and every shadow, so each model's scores are cached
    once and reused whichever model is the target."""

    @property
    def access(self) -> Access:
        return Access.LOGITS if self.method == "zero-order" else Access.INPUT_GRADIENTS

    def scorer_options(self, hflip: bool) -> dict[str, Any]:
        options: dict[str, Any] = {
            "method": self.method,
            "h": self.h,
            "probes": self.probes,
            "hflip": hflip,
            "columns": True,
            "seed": self.seed,
        }
        if self.method != "zero-order":
            options.update(form=self.form, squared=self.squared)
        return options

    def log_curvature(self, view: ModelView, hflip: bool) -> np.ndarray:
        """``N x A`` log-curvatures of one model, one column per query augmentation."""
        values = view.population_scores("curvature", **self.scorer_options(hflip))
        values = values.double().numpy().reshape(values.shape[0], -1)
        return np.log(np.abs(values) + EPS)

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        hflip = hflip_preserves_label if self.hflip is None else self.hflip
        if hflip and not hflip_preserves_label:
            return ()  # score() refuses with the reason
        return (Signal.scores("curvature", **self.scorer_options(hflip)),)

    def score(self, context: AttackContext) -> np.ndarray:
        hflip = context.hflip_preserves_label if self.hflip is None else self.hflip
        if hflip and not context.hflip_preserves_label:
            raise OptionError("mirrored queries change labels in this dataset; set hflip=false")
        target = self.log_curvature(context.target, hflip)
        shadows = np.stack([self.log_curvature(view, hflip) for view in context.shadows])
        keep = np.asarray(context.shadow_keep, dtype=bool)[:, :, None]
        mean_in, var_in, n_in = _fit(shadows, keep)
        mean_out, var_out, n_out = _fit(shadows, ~keep)

        both = ((n_in > 0) & (n_out > 0))[:, 0]
        shift = (mean_in - mean_out)[both].mean(0) if both.any() else np.zeros(target.shape[1])
        mean_in = np.where(n_in > 0, mean_in, mean_out + shift)
        mean_out = np.where(n_out > 0, mean_out, mean_in - shift)
        pooled_in = _pooled(shadows, keep, mean_in, n_in)
        pooled_out = _pooled(shadows, ~keep, mean_out, n_out)
        if self.global_variance:
            var_in = np.broadcast_to(pooled_in, var_in.shape)
            var_out = np.broadcast_to(pooled_out, var_out.shape)
        else:
            var_in = np.where(n_in >= 2, var_in, pooled_in)
            var_out = np.where(n_out >= 2, var_out, pooled_out)
        var_in, var_out = np.maximum(var_in, VAR_FLOOR), np.maximum(var_out, VAR_FLOOR)

        if self.gaussian == "official":
            # The notebooks pass the variance where the density expects a standard deviation.
            var_in, var_out = var_in**2, var_out**2
            if self.variant == "nll":
                var_out = var_in  # get_nll_ratio scores OUT with the IN variance
        log_in = _log_normal(target, mean_in, var_in)
        log_out = _log_normal(target, mean_out, var_out)
        if self.variant == "nll":
            return (log_in - log_out).sum(1)
        out = logsumexp(log_out, axis=1)
        if self.gaussian == "official":
            out = np.logaddexp(out, np.log(EPS))
        return logsumexp(log_in, axis=1) - out


@hookimpl
def register_attacks(register):
    register(CurvatureAttack)
