"""The decision-boundary distance attack of Choquette-Choo, Tramèr, Carlini & Papernot (ICML 2021,
"Label-Only Membership Inference Attacks"): a sample's l2 distance to the target's decision
boundary, found from predicted labels alone; members lie farther from it. Registered as
``label-only-boundary``.

Threat model: ``labels`` access (``ModelView.predict`` only), as the other label-only attacks
(:mod:`privbench_plugins.attacks.label_only`); the attacker holds each candidate's true label and
the candidates themselves; no shadow models.

What the paper does (and its official code, cchoquette/membership-inference,
``attack_features_tf1.dists``): a sample the target misclassifies scores distance 0; for the
others an untargeted l2 adversarial attack runs from the sample, and the score is the l2 norm of
the perturbation it returns: Carlini-Wagner in the white-box setting, HopSkipJump (Chen, Jordan
& Wainwright 2020) with label queries only in the black-box one, run with cleverhans' defaults
(64 iterations; 100 queries for the first gradient estimate, ``100 sqrt(t)`` at iteration ``t``,
up to 10,000; geometric step-size search; binary searches to tolerance ``theta = D ** -1.5`` for
``D`` pixels; images clipped to ``[0, 1]``): thousands of queries a sample. A threshold on the
distance, learnt on a shadow model, decides membership.

What this does: the same HopSkipJump iteration (untargeted, l2; gradient direction from the
signs of queries at ``delta u`` around the current boundary point, the mean sign subtracted as a
baseline; ``delta = 0.1`` at the first iteration, then ``sqrt(D) theta dist``; step
``dist / sqrt(t)`` along it, halved until the point is adversarial; binary search back toward
the sample; every query clipped to ``[0, 1]``, the range every view takes, as ``label-only-noise``
clips), run for all samples together, one batch per query round, under a hard budget of
``queries`` label queries per sample. Where it differs, and why:

- Budget. The search stops when a sample's next iteration no longer fits its budget (the last
  gradient estimate takes what is left, if at least 2 queries); a sample never gets more than
  ``queries`` queries, the unperturbed one included (``BoundaryAttack.distances`` returns the
  count per sample). Default 300, not thousands: about 9 s a target for the whole digits
  population (1,257 images, ``small-cnn``) on one CPU thread. The first gradient estimate takes
  50 queries, not 100, so that about four iterations fit (on an overfit MLP, 50 gave the
  smallest distances at 300 queries among 10, 20, 50 and 100).
- Start. HopSkipJump draws uniform-noise images until one is misclassified, then binary-searches
  toward the sample. Here the search starts from the nearest (l2) population image that the
  target labels otherwise than the sample's label: its label is known from its own unperturbed
  query, so the start costs nothing. A correctly classified sample with no such image scores
  ``sqrt(D)``, farther than any point of ``[0, 1]^D``.
- Step search: at most ``HALVINGS`` (5) halvings, then the iteration keeps its boundary point
  (HopSkipJump halves until the point is adversarial, without a bound on the queries).
- Binary search: a fixed ``ceil(1.5 log2 D)`` halvings (9 for 8x8 digits), which reach
  HopSkipJump's tolerance ``theta = D ** -1.5`` on every segment.
- Score: the smallest distance of the boundary points reached (HopSkipJump returns its last
  one, usually the same); each is adversarial, so each bounds the true distance from above.
- Thresholds: privbench reports the ROC over all thresholds, so no shadow model is trained.

How close it gets: on a linear model the estimate exceeds the true distance ``|w.x + b| / |w|``
by a median 22% at 300 queries and 8% at 800 (``tests/test_boundary_attack.py``); on an overfit
MLP on digits (one target), 300 queries give distances about 15% above those of 3,000 (which
match a white-box DeepFool-style attack's, median ratio 1.01) and the white-box distance's AUC
(0.641 against 0.642).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import attrs
import numpy as np
import torch

from privbench import Access, AttackContext, hookimpl

HALVINGS = 5
"""Step-size halvings of a geometric step search before it gives up for the iteration."""
PROBE_ELEMENTS = 1 << 23
"""Pixels of gradient probes held at once (32 MiB of float32): probes go out in chunks."""


class LabelOracle:
    """Hard-label queries "is this point adversarial for sample *i*" (its predicted label is not
    the sample's label), counted per sample and refused beyond ``budget`` each.

    ``predict`` maps images (``K x *shape``) to labels; points are passed flat (``K x D``), with
    the index of the sample each belongs to (repeated for several points of one sample).
    """

    def __init__(
        self,
        predict: Callable[[torch.Tensor], torch.Tensor],
        shape: tuple[int, ...],
        labels: torch.Tensor,
        budget: int,
    ) -> None:
        self.predict, self.shape, self.labels, self.budget = predict, shape, labels, budget
        self.used = torch.zeros(len(labels), dtype=torch.long)

    def remaining(self, index: torch.Tensor) -> torch.Tensor:
        return self.budget - self.used[index]

    def adversarial(self, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        self.used.index_add_(0, index, torch.ones_like(index))
        if (self.used[index] > self.budget).any():
            raise RuntimeError(f"a sample asked for more than its {self.budget} label queries")
        return self.predict(points.reshape(-1, *self.shape)) != self.labels[index]


def bisection_steps(dim: int) -> int:
    """HopSkipJump's binary-search steps in ``dim`` dimensions: its tolerance ``theta =
    dim ** -1.5`` (l2, ``gamma = 1``) on the segment, reached in ``ceil(1.5 log2 dim)`` halvings."""
    return max(1, math.ceil(1.5 * math.log2(dim)))


def bisect(
    oracle: LabelOracle, index: torch.Tensor, x: torch.Tensor, adv: torch.Tensor, steps: int
) -> torch.Tensor:
    """On each segment from ``x`` (not adversarial) to ``adv`` (adversarial), the adversarial end
    of the bracket left after ``steps`` halvings: within ``2 ** -steps`` of the segment's length
    of its first label change, one query a step."""
    lo, hi = x.new_zeros(len(index)), x.new_ones(len(index))
    for _ in range(steps):
        mid = (lo + hi) / 2
        crossed = oracle.adversarial(index, x + mid[:, None] * (adv - x))
        hi, lo = torch.where(crossed, mid, hi), torch.where(crossed, lo, mid)
    return x + hi[:, None] * (adv - x)


def gradient_direction(
    oracle: LabelOracle,
    index: torch.Tensor,
    boundary: torch.Tensor,
    delta: torch.Tensor,
    evals: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """HopSkipJump's Monte-Carlo estimate of the unit direction into the adversarial region at
    each boundary point: ``evals[i]`` queries at ``boundary + delta u`` (``u`` uniform on the
    sphere, the probe clipped to ``[0, 1]``), the signs' mean subtracted as a baseline (unless
    all agree) and the weighted ``u`` averaged."""
    n, dim = boundary.shape
    width = int(evals.max())
    chunk = max(1, PROBE_ELEMENTS // (width * dim))
    directions = []
    for part in torch.split(torch.arange(n), chunk):
        point, step, count = boundary[part], delta[part, None, None], evals[part]
        u = torch.randn(len(part), width, dim, generator=generator, dtype=boundary.dtype)
        probes = (point[:, None] + step * u / u.norm(dim=2, keepdim=True)).clamp(0.0, 1.0)
        u = (probes - point[:, None]) / step  # as HopSkipJump: the clipped step
        asked = torch.arange(width)[None] < count[:, None]
        sign = torch.zeros(len(part), width, dtype=boundary.dtype)
        rows = index[part, None].expand(-1, width)[asked]
        sign[asked] = oracle.adversarial(rows, probes[asked]).to(boundary.dtype) * 2 - 1
        mean = sign.sum(1, keepdim=True) / count[:, None]
        weight = torch.where(mean.abs() == 1, sign, (sign - mean) * asked)
        directions.append((weight[..., None] * u).sum(1))
    v = torch.cat(directions)
    return v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def hop_skip_jump(
    oracle: LabelOracle,
    x: torch.Tensor,
    start: torch.Tensor,
    generator: torch.Generator,
    gradient_queries: int,
) -> torch.Tensor:
    """The l2 distance from each of *x* (``N x D``, not adversarial) to the nearest adversarial
    point that untargeted HopSkipJump (Chen, Jordan & Wainwright 2020) finds from *start*
    (adversarial points) within the oracle's budget: the smallest distance of the boundary
    points it reaches, an upper bound on the true distance to the decision boundary.

    All samples advance together, each query round one batch. Iteration ``t`` spends up to
    ``gradient_queries * sqrt(t)`` queries on the gradient estimate, ``HALVINGS + 1`` on the
    geometric step search and ``bisection_steps`` on the binary search; the last iteration's
    estimate takes what the budget leaves, and a sample stops when fewer than 2 would be left.
    """
    n, dim = x.shape
    index = torch.arange(n)
    steps = bisection_steps(dim)
    theta = 2.0**-steps
    if not n:
        return x.new_zeros(0)
    boundary = bisect(oracle, index, x, start, min(steps, int(oracle.remaining(index).min())))
    dist = (boundary - x).norm(dim=1)
    best = dist.clone()
    t = 1
    while True:
        room = oracle.remaining(index) - (HALVINGS + 1) - steps
        evals = room.clamp(max=math.ceil(gradient_queries * math.sqrt(t)))
        active = torch.nonzero(evals >= 2).squeeze(1)
        if not len(active):
            return best
        delta = (
            torch.full((len(active),), 0.1, dtype=x.dtype)  # HopSkipJump's first delta
            if t == 1
            else math.sqrt(dim) * theta * dist[active]
        )
        here = boundary[active]
        v = gradient_direction(oracle, active, here, delta, evals[active], generator)
        xi = dist[active] / math.sqrt(t)
        target, pending = here.clone(), torch.ones(len(active), dtype=torch.bool)
        for _ in range(HALVINGS + 1):
            p = torch.nonzero(pending).squeeze(1)
            candidate = (here[p] + xi[p, None] * v[p]).clamp(0.0, 1.0)
            ok = oracle.adversarial(active[p], candidate)
            target[p[ok]] = candidate[ok]
            pending[p[ok]] = False
            xi[p[~ok]] /= 2
            if not pending.any():
                break
        boundary[active] = bisect(oracle, active, x[active], target, steps)
        dist[active] = (boundary[active] - x[active]).norm(dim=1)
        best[active] = torch.minimum(best[active], dist[active])
        t += 1


@attrs.frozen
class BoundaryAttack:
    """Choquette-Choo et al. (2021), decision-boundary distance attack: the l2 distance from a
    sample to the nearest point the target labels differently, estimated with HopSkipJump from
    label queries only; members lie farther from the boundary. A misclassified sample scores 0.

    Queries per sample: at most ``queries``, the unperturbed one included (1 for a
    misclassified sample). The random directions come from a generator seeded with the
    context's seed: the same scores for the same seed.
    """

    name: ClassVar[str] = "label-only-boundary"
    description: ClassVar[str] = (
        "Choquette-Choo et al. 2021: l2 distance to the decision boundary (HopSkipJump, labels)"
    )
    access: ClassVar[Access] = Access.LABELS
    min_shadows: ClassVar[int] = 0

    queries: int = attrs.field(default=300, validator=attrs.validators.ge(1))
    """Label queries per sample at most, the unperturbed one included: the search's budget."""
    gradient_queries: int = attrs.field(default=50, validator=attrs.validators.ge(2))
    """Queries of HopSkipJump's first gradient estimate; iteration t takes this times sqrt(t)."""

    def distances(self, context: AttackContext) -> tuple[np.ndarray, np.ndarray]:
        """Each sample's estimated distance to the boundary (0 where misclassified) and the
        label queries spent on it."""
        x, y = context.population.x, context.population.y
        flat = x.flatten(1)
        predicted = context.target.predict(x)
        used = torch.ones(len(x), dtype=torch.long)
        distance = torch.zeros(len(x), dtype=flat.dtype)
        correct = torch.nonzero(predicted == y).squeeze(1)
        # Start from the nearest population image the target labels otherwise (no query spent:
        # its label is known); where there is none, no point of [0, 1]^D is as far as sqrt(D).
        other = predicted[None, :] != y[correct, None]
        gaps = torch.cdist(flat[correct], flat).masked_fill(~other, math.inf)
        found = other.any(1)
        distance[correct[~found]] = math.sqrt(flat.shape[1])
        search = correct[found]
        if len(search) and self.queries > 1:
            oracle = LabelOracle(context.target.predict, x.shape[1:], y[search], self.queries - 1)
            start = flat[gaps[found].argmin(1)]
            generator = torch.Generator().manual_seed(int(context.seed))
            distance[search] = hop_skip_jump(
                oracle, flat[search], start, generator, self.gradient_queries
            )
            used[search] += oracle.used
        elif len(search):
            distance[search] = gaps[found].min(1).values
        return distance.double().numpy(), used.numpy()

    def score(self, context: AttackContext) -> np.ndarray:
        return self.distances(context)[0]


@hookimpl
def register_attacks(register):
    register(BoundaryAttack)
