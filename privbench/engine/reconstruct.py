"""Reconstruction attacks (white box): candidates for one target's training images from its
parameters and initialisation, stored beside the target and reused (they take minutes), then
matched one-to-one to the images it really trained on (:mod:`privbench.analysis.reconstruction`).

Costly, so only the first target is attacked. A defense that trained the released model on other
images (distilled, synthesised) declared them; the candidates are matched against those too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from privbench.analysis import reconstruction
from privbench.engine.components import Configured
from privbench.engine.fitting import DECLARED_TRAINING_SET, FittedPool
from privbench.engine.pool import Pool
from privbench.engine.signals import SignalCache
from privbench.engine.store import digest, tensor_digest
from privbench.errors import PrivbenchError
from privbench.plugins.interfaces import ReconstructionContext
from privbench.plugins.options import config_dict
from privbench.results.parts import ReconstructionResult

REFERENCE_IMAGES = 20_000
"""Non-member images a reconstruction is checked against (bounded: CIFAR has 60k)."""

Artifacts = dict[str, Callable[[Path], object]]
"""File name in the run folder -> a function that writes it there."""


def _candidates(attack: Configured, context: ReconstructionContext, shape: torch.Size):
    def run() -> torch.Tensor:
        candidates = torch.as_tensor(attack.instance.reconstruct(context)).detach().float()
        if candidates.ndim != 4 or candidates.shape[1:] != shape:
            expected = " x ".join(map(str, shape))
            raise PrivbenchError(
                f"attack '{attack.name}' returned candidates of shape "
                f"{tuple(candidates.shape)}; expected K x {expected}"
            )
        return candidates

    return run


def reconstruct(
    pool: Pool,
    fitted: FittedPool,
    cache: SignalCache,
    artifacts: Artifacts,
    on_failure: Callable[[str, Exception], None] | None = None,
) -> list[ReconstructionResult]:
    """Every reconstruction attack against the first target; adds each PNG grid of training
    images above their reconstructions to *artifacts*. With *on_failure*, an attack that
    raises is reported to it (name, error) and the others still run."""
    target = pool.targets[0]
    key = pool.keys[target]
    members = pool.population.x[torch.as_tensor(pool.masks[target])]
    # Non-members of the same distribution: a match must be nearer to its training image
    # than to any of them (SSIM alone credits typical images on small inputs).
    dataset = pool.dataset
    reference = torch.cat([dataset.test.x, dataset.train.x])[:REFERENCE_IMAGES]
    initial = pool.build_model(target)
    initial_digest = tensor_digest(*initial.state_dict().values())
    declared = cache.workspace.stored_tensor(key, DECLARED_TRAINING_SET)
    results: list[ReconstructionResult] = []

    def attempt(attack: Configured) -> None:
        started = time.perf_counter()
        context = ReconstructionContext(
            target=cache.view(target, fitted.models[target], attack.instance.access),
            initial=initial,
            train_size=len(members),
            num_classes=dataset.num_classes,
            input_shape=dataset.input_shape,
            seed=pool.seed_of(20_000 + target),
        )
        options = config_dict(attack.instance)
        identity = digest([options, context.seed, len(members), initial_digest])
        candidates = cache.workspace.cached_tensor(
            key,
            f"reconstruction-{attack.name}-{identity[:20]}",
            _candidates(attack, context, members.shape[1:]),
        )
        match = reconstruction.match_reconstructions(candidates, members, reference)
        grid = f"reconstruction-{attack.name}.png"
        artifacts[grid] = lambda path, chosen=candidates[match.candidate]: reconstruction.save_grid(
            members, chosen, path
        )
        seen = None
        if declared is not None and len(declared) <= len(candidates):
            # What the released model learned from (distilled or synthetic images): did the
            # attack find those, while missing the private images?
            matched = reconstruction.match_reconstructions(candidates, declared, reference)
            seen = {
                "size": len(declared),
                "metrics": matched.summary(),
                "grid": f"reconstruction-{attack.name}-declared.png",
            }
            artifacts[seen["grid"]] = lambda path, chosen=candidates[matched.candidate]: (
                reconstruction.save_grid(declared, chosen, path)
            )
        results.append(
            ReconstructionResult(
                name=attack.name,
                access=attack.access_label,
                options=options,
                target=target,
                train_size=len(members),
                candidates=int(candidates.shape[0]),
                metrics=match.summary(),
                grid=grid,
                seconds=time.perf_counter() - started,
                declared_training_set=seen,
            )
        )

    for attack in pool.components.reconstructions:
        if on_failure is None:
            attempt(attack)
            continue
        try:
            attempt(attack)
        except Exception as err:  # a plugin error fails that attack alone
            on_failure(attack.name, err)
    return results
