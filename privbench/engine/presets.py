"""Named evaluation protocols: ``privbench run --preset NAME`` fills in what a paper fixed.

Flags given on the command line still win over the preset's values.
"""

from __future__ import annotations

from typing import Any

import attrs

from privbench.errors import OptionError, did_you_mean, one_line


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
            name="fashion-mnist",
            description=(
                "Fashion-MNIST with conv-fc, the benchmark's standard small CNN: 15 epochs of "
                "SGD (lr 0.05, batch 128, cosine), horizontal flips; 4 models on a population "
                "of 10,000 (minutes on 2 CPU cores; --population 60000 for all of it)"
            ),
            values={
                "dataset": "fashion-mnist",
                "model": "conv-fc",
                "epochs": 15,
                "batch_size": 128,
                "lr": 0.05,
                "augment": "flip",
                "population": 10_000,
                "shadows": 3,
            },
        ),
        Preset(
            name="fashion-mnist-dp",
            description=(
                "Tramer & Boneh (ICLR 2021)'s end-to-end DP-SGD CNN on Fashion-MNIST: tanh-cnn, "
                "DP-SGD at epsilon 3 (delta min(1e-5, N^-1.1)), clip 0.1, batch 2048, lr 4, "
                "momentum 0.9, 40 epochs at a constant rate (the paper: 86.0% test accuracy on "
                "all 60,000 at delta 1e-5)"
            ),
            values={
                "dataset": "fashion-mnist",
                "model": "tanh-cnn",
                "defense": "dp-sgd",
                "defense_options": {"epsilon": 3.0, "max_grad_norm": 0.1},
                "epochs": 40,
                "batch_size": 2048,
                "lr": 4.0,
                "momentum": 0.9,
                "weight_decay": 0.0,
                "schedule": "constant",
                "shadows": 3,
            },
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
            f"unknown preset '{one_line(name)}'{did_you_mean(name, PRESETS)} "
            f"(presets: {', '.join(PRESETS)})"
        )
    return PRESETS[name]
