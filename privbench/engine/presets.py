"""Named evaluation protocols: ``privbench run --preset NAME`` fills in what a paper fixed.

Flags given on the command line still win over the preset's values.
"""

from __future__ import annotations

from typing import Any

import attrs

from privbench.errors import OptionError, did_you_mean


@attrs.frozen
class Preset:
    name: str
    description: str
    values: dict[str, Any]
    """``privbench run`` parameter names (as in ``--shadows`` -> ``shadows``) to values."""


PRESETS = {
    preset.name: preset
    for preset in (
        Preset(
            name="curvature-clues",
            description=(
                "Ravikumar et al. 2024 (Curvature Clues), Sec. 5: 64 models from Bernoulli(0.5) "
                "keep-masks in complementary pairs; 8 of them in turn the target, metrics as "
                "mean +- std over targets"
            ),
            values={"shadows": 63, "paired": True, "targets": 8},
        ),
        Preset(
            name="quick",
            description="4 models, the first 2 in turn the target: a smoke test in seconds",
            values={"shadows": 3, "targets": 2, "epochs": 10},
        ),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise OptionError(
            f"unknown preset '{name}'{did_you_mean(name, PRESETS)} (presets: {', '.join(PRESETS)})"
        )
    return PRESETS[name]
