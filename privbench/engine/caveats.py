"""What a careful auditor says beside the numbers: when a figure cannot be read as it reads.

- TPR at 0.1% FPR on fewer than 1,000 non-members is the TPR at zero false positives;
- a target near chance accuracy learned little, so little leakage says little;
- an attack with fewer reference models than its paper uses is likely weaker than it can be
  (an attack class may say how many with ``paper_reference_models``);
- an AUC below 0.5 by more than three standard errors of chance (Hanley and McNeil 1982) means
  inverted scores or reference models that do not match the target, not privacy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from privbench.analysis.slices import chance_auc_noise
from privbench.results.parts import AttackResult, Utility

LOW_FPR_NONMEMBERS = 1000


def caveats(
    attacks: Sequence[AttackResult],
    utility: Utility,
    num_classes: int,
    references: int,
    paper_references: Mapping[str, int],
) -> tuple[str, ...]:
    """The warnings for one audit's results (*references*: reference models per target)."""
    out = []
    counts = [a.metrics.n_nonmembers for a in attacks]
    if counts and min(counts) < LOW_FPR_NONMEMBERS:
        out.append(
            f"TPR at 0.1% FPR rests on {min(counts)} non-members (fewer than "
            f"{LOW_FPR_NONMEMBERS:,}): it is the TPR at zero false positives"
        )
    chance = 1.0 / max(num_classes, 1)
    if math.isfinite(utility.test_accuracy) and utility.test_accuracy < 1.5 * chance:
        out.append(
            f"the target's test accuracy {utility.test_accuracy:.3f} is near chance "
            f"({chance:.3f}): a model that learned little leaks little"
        )
    for attack in attacks:
        paper = paper_references.get(attack.name)
        if paper and 0 < references < paper:
            out.append(
                f"attack {attack.name} used {references} reference models per target; its paper "
                f"uses {paper}: it is likely weaker here than it can be"
            )
        m = attack.metrics
        noise = chance_auc_noise(m.n_members, m.n_nonmembers)
        if m.auc < 0.5 - 3 * noise:
            out.append(
                f"attack {attack.name}'s AUC {m.auc:.3f} is below 0.5 by more than 3 standard "
                f"errors of chance ({noise:.3f}): inverted scores, or reference models that do "
                "not match the target"
            )
    return tuple(out)
