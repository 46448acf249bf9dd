"""The ε lower bound of a one-run privacy audit (Steinke, Nasr & Jagielski, "Privacy Auditing
with One (1) Training Run", NeurIPS 2023).

The game: each of m canaries is included in the training set independently with probability
1/2; the model trains once; the auditor ranks the canaries by a membership score, guesses "in"
for the ``k+`` highest and "out" for the ``k-`` lowest, and abstains on the rest. If training is
(ε, δ)-DP, the number of right guesses among those ``r = k+ + k-`` is dominated by
Binomial(r, e^ε / (1 + e^ε)) up to a δ term, which depends on m (the paper's analysis for
(ε, δ); :func:`p_value` computes it as the paper's code does). A count of right guesses whose
p-value under "ε-DP" is below ``1 - confidence`` rejects that ε; the bound is the largest ε
rejected (:func:`epsilon_lower_bound`, by bisection: the p-value grows with ε).

How many guesses to make is a choice the paper leaves to the auditor (its figures sweep ``k+``
and ``k-``). :func:`audit_canaries` tries a fixed grid of choices, each guessing "in" only, "out"
only, or both, and pays for trying them with a Bonferroni correction: each is tested at
``(1 - confidence) / number of choices``, so the best of them is still a bound at
``confidence``. The grid does not look at the scores, so nothing else needs correcting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
from numpy.typing import ArrayLike

DELTA = 1e-5
"""The δ the bound is stated for, as the paper's experiments and privbench's other ε use."""

GUESS_COUNTS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000)
"""The numbers of confident guesses tried on each side (those that fit the canaries)."""


def p_value(m: int, r: int, v: int, epsilon: float, delta: float = DELTA) -> float:
    """P[at least *v* of *r* guesses right] for an (ε, δ)-DP algorithm auditing *m* canaries:
    the binomial tail at ``q = e^ε / (1 + e^ε)`` plus ``2 m δ`` times the largest mean of the
    binomial's mass just below *v* (the paper's bound for δ > 0)."""
    from scipy.stats import binom  # on use: scipy takes most of a second to import

    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and 0 <= delta <= 1, got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    below = binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[Bin = v - i] for i = 1..v
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(tail + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(
    m: int, r: int, v: int, *, delta: float = DELTA, level: float = 0.05, tolerance: float = 1e-4
) -> float:
    """The largest ε whose :func:`p_value` for *v* of *r* right is below *level* (to within
    *tolerance*, rounded down so the bound stays a bound); 0 when no ε is rejected."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if p_value(m, r, v, 0.0, delta) >= level:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < level:
        low, high = high, 2 * high
        if high > 1e3:  # every guess right with r in the millions: beyond any audit's reach
            return low
    while high - low > tolerance:
        middle = (low + high) / 2
        if p_value(m, r, v, middle, delta) < level:
            low = middle
        else:
            high = middle
    return low


@attrs.frozen
class OneRunBound:
    """What a one-run audit of one attack found: its best choice of guesses and the ε bound."""

    epsilon: float
    """ε ≥ this at ``confidence`` for (ε, ``delta``)-DP training (0: nothing proven)."""
    canaries: int
    included: int
    """Canaries the model trained on."""
    guesses_in: int
    """``k+``: canaries guessed "in" (the highest scores)."""
    guesses_out: int
    """``k-``: canaries guessed "out" (the lowest scores)."""
    correct: int
    """Right guesses among ``guesses_in + guesses_out``."""
    choices: int
    """Choices of ``(k+, k-)`` tried, each tested at ``(1 - confidence) / choices``."""
    confidence: float = 0.95
    delta: float = DELTA

    @property
    def guesses(self) -> int:
        return self.guesses_in + self.guesses_out

    def to_record(self) -> dict[str, float | int]:
        return attrs.asdict(self)

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> OneRunBound:
        """The bound :meth:`to_record` wrote (fields it does not know are ignored)."""
        fields = attrs.fields_dict(cls)
        return cls(**{k: v for k, v in record.items() if k in fields})


def guess_choices(m: int, counts: Sequence[int] = GUESS_COUNTS) -> list[tuple[int, int]]:
    """The ``(k+, k-)`` tried on *m* canaries: each count that fits, "in" only, "out" only and
    both (when both fit)."""
    fitting = [k for k in counts if k <= m] or [m]
    choices = {(k, 0) for k in fitting} | {(0, k) for k in fitting}
    choices |= {(k, k) for k in fitting if 2 * k <= m}
    return sorted(choices)


def audit_canaries(
    scores: ArrayLike,
    included: ArrayLike,
    *,
    delta: float = DELTA,
    confidence: float = 0.95,
    counts: Sequence[int] = GUESS_COUNTS,
) -> OneRunBound:
    """The one-run ε lower bound from the canaries' membership *scores* (higher = in) and
    whether each was *included*: the best over :func:`guess_choices`, Bonferroni-corrected.
    Ties in the scores are broken by a fixed seeded order, never by the truth."""
    score = np.asarray(scores, dtype=np.float64).reshape(-1)
    truth = np.asarray(included, dtype=bool).reshape(-1)
    if score.shape != truth.shape or score.size == 0:
        raise ValueError("give one score and one inclusion flag per canary")
    if not np.isfinite(score).all():
        raise ValueError("canary scores must be finite")
    m = score.size
    shuffle = np.random.default_rng(0).permutation(m)  # ties: an order unrelated to the truth
    order = shuffle[np.argsort(-score[shuffle], kind="stable")]
    ranked = truth[order]
    right_in = np.concatenate([[0], np.cumsum(ranked)])  # included among the top k
    right_out = np.concatenate([[0], np.cumsum(~ranked[::-1])])  # excluded among the bottom k
    choices = guess_choices(m, counts)
    level = (1.0 - confidence) / len(choices)
    best = None
    for k_in, k_out in choices:
        correct = int(right_in[k_in] + right_out[k_out])
        bound = epsilon_lower_bound(m, k_in + k_out, correct, delta=delta, level=level)
        if best is None or bound > best[0]:
            best = (bound, k_in, k_out, correct)
    assert best is not None
    epsilon, k_in, k_out, correct = best
    return OneRunBound(epsilon, m, int(truth.sum()), k_in, k_out, correct, len(choices),
                       confidence, delta)  # fmt: skip
