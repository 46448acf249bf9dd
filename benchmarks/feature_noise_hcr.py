"""Feature noise with HCR bounds (Tygert et al., "Hammersley-Chapman-Robbins bounds on the privacy
of inference with dithered features"): accuracy, the bound and a real inversion, by noise scale.

    .venv/bin/python benchmarks/feature_noise_hcr.py [--preset fashion-mnist]
        [--scales 0.25,0.5,1,2] [--population 2000] [--name fashion_mnist]

For each scale the ``feature-noise`` defense releases the pre-logits with Gaussian noise of
``scale x`` their RMS (the paper's ``sigma_scale``: 1 on MNIST); the model is trained as usual
(the store reuses it: feature noise acts at inference). Reported per scale: the released
model's test accuracy (one noise draw per query), the ``hcr`` scorer's lower bound on the
standard deviation of any unbiased estimate of each image's DC coefficient (the paper's DCT of
the normalised input; ``method=draws`` as in the paper), and the ``feature-inversion`` scorer's
actual error at recovering it by optimisation from one noisy release, in the same units. An
inversion can beat the bound only by bias (it is not unbiased), so the bound is a floor for
unbiased estimators, not for every attack. Scorers run on the target's whole population,
members and non-members alike (they are per-sample optimisations: ``--population`` sets their
cost). Writes ``feature_noise_hcr_<name>.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _flags import as_flags, key_values

import privbench


def audit(args: argparse.Namespace, workspace: Path, scale: float | None) -> privbench.AuditResult:
    defense = ("feature-noise", {"scale": scale}) if scale is not None else "none"
    scorers = [("hcr", {}), ("feature-inversion", {})] if scale is not None else []
    return privbench.audit(
        preset=args.preset,
        epochs=args.epochs,
        model_options=args.model_option or None,
        defense=defense,
        attacks=["loss"],
        scorers=scorers,
        shadows=0,
        targets=1,
        population=args.population,
        seed=args.seed,
        device="cpu",
        workspace=workspace,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fashion-mnist")
    parser.add_argument("--scales", default="0.25,0.5,1,2")
    parser.add_argument("--population", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="instead of the preset's")
    parser.add_argument("--model-option", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--name", default="fashion_mnist")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    args.model_option = key_values(parser, args.model_option, "--model-option")
    scales = [float(s) for s in args.scales.split(",")]
    command = (
        f"python benchmarks/feature_noise_hcr.py --preset {args.preset} --scales {args.scales} "
        f"--population {args.population} --seed {args.seed} --name {args.name}"
        + (f" --epochs {args.epochs}" if args.epochs else "")
        + as_flags("--model-option", args.model_option)
    )
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        workspace = Path(args.workspace or scratch)
        plain = audit(args, workspace, None)
        for scale in scales:
            begun = time.perf_counter()
            result = audit(args, workspace, scale)
            bound = result.scorer_values("hcr").score
            inversion = result.scorer_values("feature-inversion").score
            rows.append(
                {
                    "scale": scale,
                    "test": result.utility.test_accuracy,
                    "loss_auc": result.attacks[0].metrics.auc,
                    "bound": (float(np.nanmedian(bound)), float(np.nanmean(bound))),
                    "inversion": (float(np.nanmedian(inversion)), float(np.nanmean(inversion))),
                    "below": float(np.nanmean(inversion < bound)),
                    "seconds": time.perf_counter() - begun,
                }
            )
            print(rows[-1], flush=True)
    minutes = (time.perf_counter() - started) / 60
    lines = [
        "| noise scale | test acc | loss-attack AUROC | HCR bound on DC std (median / mean) | "
        "inversion error, DC (median / mean) | inversions below the bound | seconds |",
        "|---|---|---|---|---|---|---|",
        f"| none | {plain.utility.test_accuracy:.3f} | {plain.attacks[0].metrics.auc:.3f} "
        "| 0 (no noise) | | | |",
    ]
    for row in rows:
        lines.append(
            f"| {row['scale']:g} | {row['test']:.3f} | {row['loss_auc']:.3f} | "
            f"{row['bound'][0]:.4g} / {row['bound'][1]:.4g} | "
            f"{row['inversion'][0]:.4g} / {row['inversion'][1]:.4g} | {row['below']:.1%} | "
            f"{row['seconds']:.0f} |"
        )
    text = (
        f"# Feature noise and HCR bounds: {args.preset}\n\n"
        f"Generated by `{command}` on 2 CPU cores in {minutes:.0f} minutes. One model trained "
        f"on {args.population // 2} of a population of {args.population} by the preset's recipe, "
        "released with Gaussian noise on its pre-logits at each scale (sigma = scale x the "
        "features' RMS over the training data). The HCR bound and the inversion error are in "
        "the units of the normalised input's orthonormal DCT (its DC coefficient), over the "
        f"{args.population} population images, members and non-members.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"feature_noise_hcr_{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
