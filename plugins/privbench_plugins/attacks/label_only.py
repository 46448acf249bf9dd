"""Label-only membership inference (Choquette-Choo, Tramèr, Carlini & Papernot, ICML 2021,
"Label-Only Membership Inference Attacks"): attacks that see nothing of the target but the class
it predicts for inputs they choose.

Threat model: ``labels`` access (``ModelView.predict`` only; logits, losses and the engine's
logit caches are refused); the attacker holds each candidate's true label; no shadow models.

- ``gap``: the paper's baseline "gap attack" (the label-only form of Yeom et al. 2018): a sample
  the target classifies correctly is called a member. One query per sample; the score is 1 or
  0, so its ROC has a single interior point and many ties (left as ties: no jitter).
- ``label-only-augment``: the paper's data-augmentation attack. Members are not only classified
  correctly but *robustly* so: the score is the fraction of augmented copies (translations of
  the image, optionally also mirrored) that the target still labels correctly.
- ``label-only-noise``: the paper's noise-robustness attack: the fraction of Gaussian-noised
  copies labelled correctly, 0 for a sample the target misclassifies unperturbed.

Thresholds: the paper learns the decision threshold (or, for augmentations, a small attack
model on the 0/1 vector of correct labels) on a shadow ("source") model. privbench reports the
ROC over every threshold (AUC, TPR at low FPR), which needs no threshold, so these attacks take
no shadow models; the count of correct augmented labels is the paper's thresholded statistic.

The paper's decision-boundary attack (distance to the boundary estimated with HopSkipJump) is
``label-only-boundary`` (:mod:`privbench_plugins.attacks.boundary`). Not implemented: the
rotation variant of the augmentation attack.

Defaults and where they come from (the paper and its official code, cchoquette/
membership-inference: ``utils.create_translates``, ``attack_features.augmentation_attack``,
``attack_features_tf1.continuous_rand_robust`` and the options of ``pipeline.py``):

- translations: displacement ``d = 1`` (``pipeline.py --d``), the ``4 d`` shifts of L1 length
  exactly ``d`` plus the unshifted image (``4 d + 1`` queries), borders filled with the nearest
  edge pixel (scipy's ``mode='nearest'``);
- noise: ``sigma`` from the code's sweep over ``0.02 ... 0.1`` for images in ``[0, 1]``
  (default ``0.05``, its middle), noisy images clipped to ``[0, 1]``, a misclassified sample
  scored 0 without noisy queries. The code draws up to 5000 noisy copies and reports curves
  from 1 to 2500; the default here is 100, a budget an audit of a whole population can afford.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np
import torch
from torch.nn import functional as F

from privbench import Access, AttackContext, OptionError, hookimpl


def _correct(context: AttackContext, x: torch.Tensor) -> torch.Tensor:
    """Whether the target's predicted label for each of *x* is its population sample's label."""
    return context.target.predict(x) == context.population.y


def translation_shifts(d: int) -> list[tuple[int, int]]:
    """The unshifted image and the ``4 d`` shifts ``(down, right)`` with ``|down| + |right| = d``
    (the official code's translation set, in a fixed order): ``4 d + 1`` in all."""
    shifts = [(0, 0)]
    if d == 0:
        return shifts
    for down in range(-d, d + 1):
        right = d - abs(down)
        shifts += [(down, right), (down, -right)] if right else [(down, 0)]
    return shifts


def translate(x: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """*x* (``N x C x H x W``) moved *down* and *right* pixels, the uncovered border filled with
    the nearest edge pixel (scipy.ndimage.shift with ``mode='nearest'``, integer shifts)."""
    if down == 0 and right == 0:
        return x
    pad = max(abs(down), abs(right))
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    h, w = x.shape[-2:]
    top, left = pad - down, pad - right
    return padded[..., top : top + h, left : left + w]


@attrs.frozen
class GapAttack:
    """The gap attack (the paper's baseline; Yeom et al. 2018 with labels only): score 1 where
    the target predicts the true label, else 0. Its accuracy is ``1/2 + (train acc - test
    acc) / 2`` on a balanced population, the train-test gap that names it. One query a sample.
    """

    name: ClassVar[str] = "gap"
    description: ClassVar[str] = "label-only baseline: correctly classified samples are members"
    access: ClassVar[Access] = Access.LABELS
    min_shadows: ClassVar[int] = 0

    def score(self, context: AttackContext) -> np.ndarray:
        return _correct(context, context.population.x).double().numpy()


@attrs.frozen
class AugmentationAttack:
    """Choquette-Choo et al. (2021), data-augmentation attack: the fraction of augmented copies
    of a sample that the target labels correctly (members stay correct under small shifts).

    Queries per sample: ``4 d + 1`` translations (the unshifted image included), doubled with
    ``hflip`` (each translation also mirrored): 5 at the default ``d = 1``, the paper's code
    default. The score takes ``4 d + 2`` values (``8 d + 3`` with ``hflip``), so many samples
    tie; the paper's shadow-trained attack model on the 0/1 vector is replaced by its count.
    Deterministic: the augmentations are fixed, not drawn.
    """

    name: ClassVar[str] = "label-only-augment"
    description: ClassVar[str] = (
        "Choquette-Choo et al. 2021: fraction of translated copies the target labels correctly"
    )
    access: ClassVar[Access] = Access.LABELS
    min_shadows: ClassVar[int] = 0

    d: int = attrs.field(default=1, validator=[attrs.validators.ge(0), attrs.validators.le(8)])
    """Translation distance in pixels (0 to 8): 4d shifts of exactly d pixels (L1) and the image."""
    hflip: bool = False
    """Also query the mirror of every translation (only where mirroring keeps the label)."""

    @property
    def queries(self) -> int:
        """Label queries per sample: ``(4 d + 1)``, times 2 with ``hflip``."""
        return (4 * self.d + 1) * (2 if self.hflip else 1)

    def score(self, context: AttackContext) -> np.ndarray:
        if self.hflip and not context.hflip_preserves_label:
            raise OptionError(
                "mirrored queries change labels in this dataset; turn label-only-augment's "
                "hflip option off"
            )
        x = context.population.x
        images = (x, x.flip(-1)) if self.hflip else (x,)
        correct = torch.zeros(len(x), dtype=torch.float64)
        for image in images:
            for down, right in translation_shifts(self.d):
                correct += _correct(context, translate(image, down, right)).double()
        return (correct / self.queries).numpy()


@attrs.frozen
class NoiseAttack:
    """Choquette-Choo et al. (2021), noise-robustness attack: the fraction of ``queries`` copies
    of a sample with Gaussian noise of standard deviation ``sigma`` added (pixels clipped to
    ``[0, 1]``) that the target labels correctly; 0 for a sample it misclassifies unperturbed
    (as in the official code, which spends no noisy queries on those).

    Queries per sample: 1 (the clean image) plus ``queries`` for each correctly classified one.
    The noise is drawn from a generator seeded with the context's seed: the same scores for the
    same seed.
    """

    name: ClassVar[str] = "label-only-noise"
    description: ClassVar[str] = (
        "Choquette-Choo et al. 2021: fraction of Gaussian-noised copies labelled correctly"
    )
    access: ClassVar[Access] = Access.LABELS
    min_shadows: ClassVar[int] = 0

    sigma: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    """Standard deviation of the Gaussian noise, in pixel units of images in [0, 1]."""
    queries: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    """Noisy label queries per correctly classified sample (the query budget beyond one)."""

    def score(self, context: AttackContext) -> np.ndarray:
        x = context.population.x
        clean = _correct(context, x)
        hits = torch.zeros(len(x), dtype=torch.float64)
        index = torch.nonzero(clean).squeeze(1)
        if len(index):
            sub, labels = x[index], context.population.y[index]
            generator = torch.Generator().manual_seed(int(context.seed))
            for _ in range(self.queries):
                noise = torch.randn(sub.shape, generator=generator, dtype=sub.dtype)
                noisy = (sub + self.sigma * noise).clamp(0.0, 1.0)
                hits[index] += (context.target.predict(noisy) == labels).double()
        return (hits / self.queries).numpy()


@hookimpl
def register_attacks(register):
    register(GapAttack)
    register(AugmentationAttack)
    register(NoiseAttack)
