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
  These are the fits of :mod:`privbench.helpers.gaussian`, which the ``lira`` attack shares:
  here with ddof 0 (``np.nanvar``'s), so the pooled variance divides the squared deviations by
  the number of pooled values.
- Degenerate cases, as in ``lira``: where no sample has shadows on both sides, the shift is the
  difference of the two sides' average means; where no sample has two shadows on a side, that
  side's pooled variance is the variance of all its values, and 1 if it has fewer than two.
  (Before the fits were shared the shift was 0 there, and one value gave a variance of 0,
  raised to the floor, no value a NaN.)
- Estimators that can be negative (the ``trace`` forms) are logged as ``log(|curv| + 1e-22)``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import attrs
import numpy as np
from scipy.special import logsumexp

from privbench import Access, AttackContext, ModelView, OptionError, Signal, hookimpl
from privbench.helpers import GaussianFit, fill_missing_means, normal_logpdf

EPS = 1e-22
"""The notebooks' ``eps``: inside the log and in the LR's denominator."""
VAR_FLOOR = 1e-6
"""Smallest fitted variance of a log-curvature."""


@attrs.frozen
class CurvatureAttack:
    """Gaussian likelihood ratio of log input-loss curvature, IN against OUT shadows."""

    name: ClassVar[str] = "curvature"
    description: ClassVar[str] = (
        "Ravikumar et al. 2024 (Curvature Clues): per-sample Gaussian LR of log input curvature"
    )
    min_shadows: ClassVar[int] = 2
    paper_reference_models: ClassVar[int] = 63
    """Curvature Clues (Sec. 5) trains 64 models, so each target has 63 others (62 shadows
    with paired masks); fewer gives a warning beside the results."""

    variant: Literal["lr", "nll"] = "lr"
    """The score: ``lr``, a likelihood ratio, or ``nll``, a difference of log-likelihoods.
    ``lr`` is ``Curv ZO LR``: likelihoods summed over query augmentations, then their ratio;
    ``nll`` is ``Curv ZO NLL``: OUT minus IN negative log-likelihood summed over augmentations."""
    gaussian: Literal["canonical", "official"] = "canonical"
    """The Gaussian density: ``canonical`` (the textbook one) or ``official`` (the notebooks').
    ``official`` uses the fitted variance as a standard deviation, and its NLL scores OUT with the
    IN variance."""
    global_variance: bool = False
    """One pooled variance per side instead of per-sample ones (for few shadows)."""
    method: Literal["zero-order", "finite-difference", "exact"] = "zero-order"
    """The ``curvature`` scorer's estimator, which sets the attack's access.
    ``zero-order`` needs ``logits`` access (the paper's black box), the others
    ``input-gradients``."""
    form: Literal["auto", "norm", "trace", "trace-of-square"] = "auto"
    """What the scorer estimates: ``norm`` ||H v||, ``trace`` tr(H), ``trace-of-square`` tr(H^2).
    ``finite-difference`` takes ``norm`` or ``trace``, ``exact`` ``trace`` or
    ``trace-of-square``; ``auto`` is the first of the two."""
    squared: bool = True
    """Square the scorer's finite-difference norm ``||H v||`` (``form=norm`` only)."""
    h: float = attrs.field(default=1e-3, validator=attrs.validators.gt(0))
    """The scorer's finite-difference step, in pixel units (inputs in [0, 1])."""
    probes: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    """Random probes per sample of the scorer (rounds, for ``zero-order``): more, less noise."""
    hflip: bool | None = None
    """Query the image and its mirror, one Gaussian each (the notebooks' ``num_augs = 2``).
    Unset: wherever the dataset's labels survive mirroring (CIFAR yes, digits no)."""
    seed: int = 0
    """Seed of the scorer's probes, the same on the target and on every shadow model.
    So each model's scores are cached once and reused whichever model is the target."""

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
        keep = np.asarray(context.shadow_keep, dtype=bool)
        fit_in = GaussianFit.of(shadows, keep, ddof=0)  # ddof 0: the notebooks' np.nanvar
        fit_out = GaussianFit.of(shadows, ~keep, ddof=0)
        mean_in, mean_out = fill_missing_means(fit_in, fit_out)
        var_in = np.maximum(fit_in.variance(self.global_variance), VAR_FLOOR)
        var_out = np.maximum(fit_out.variance(self.global_variance), VAR_FLOOR)
        if self.gaussian == "official":
            # The notebooks pass the variance where the density expects a standard deviation.
            sd_in, sd_out = var_in, var_out
            if self.variant == "nll":
                sd_out = sd_in  # get_nll_ratio scores OUT with the IN variance
        else:
            sd_in, sd_out = np.sqrt(var_in), np.sqrt(var_out)
        log_in = normal_logpdf(target, mean_in, sd_in)
        log_out = normal_logpdf(target, mean_out, sd_out)
        if self.variant == "nll":
            return (log_in - log_out).sum(1)
        out = logsumexp(log_out, axis=1)
        if self.gaussian == "official":
            out = np.logaddexp(out, np.log(EPS))
        return logsumexp(log_in, axis=1) - out


@hookimpl
def register_attacks(register):
    register(CurvatureAttack)
