"""How well a dataset-reconstruction attack recovered a model's training images.

A reconstruction attack (:class:`privbench.ReconstructionAttack`) returns ``K`` candidate images;
this module matches them one-to-one to the ``N`` training images and scores each match.

Choices, and the paper each follows:

- Matching is greedy on pixel-space L2 distance: repeatedly take the globally closest pair of an
  unmatched training image and an unmatched candidate. This is how Loo et al. ("Understanding
  Reconstruction Attacks with the Neural Tangent Kernel and Dataset Distillation", ICLR 2024)
  build their reconstruction curves (each training image is paired with a distinct
  reconstruction, closest pairs first), and it gives the sorted per-image error curve they plot.
- Quality is SSIM (Wang et al. 2004) of each training image with its matched candidate, and an
  image counts as recovered when its SSIM exceeds 0.4: the threshold for a "good" reconstruction
  that Haim et al. ("Reconstructing Training Data from Trained Neural Networks", NeurIPS 2022)
  and their follow-up (Buzaglo et al., "Deconstructing Data Reconstruction", NeurIPS 2023) count
  with. L2 and PSNR are reported too.
- SSIM alone is not an honest criterion on small images: on scikit-learn's 8x8 digits, 80-100%
  of training images find *another* digit they were never paired with at SSIM above 0.4
  (measured when this module was written). So when non-member images of the same distribution
  are given (``reference_x``), a training image also counts as *identified* only if its matched
  candidate is above the SSIM bar *and* at most 0.9 times as far (L2) from it as from the
  nearest reference image: the candidate reveals that very image, not a typical one. The margin
  is ours: candidates that resemble no digit (far from every image) otherwise pass by being
  about equally far from all (measured at ratios 0.98-0.99 against a model trained only on
  distilled images 2.0 away from every private one); the attack's real reconstructions of an
  undefended model sit at ratios 0.3-0.5. On digits, candidates that are other
  digits are identified 2-10% of the time (more as the training set grows); noisy copies of the
  training images (noise sd 0.2) ~95-100%. ``chance_fraction_recovered`` and
  ``chance_fraction_identified`` report both criteria's floors: the fractions "recovered" and
  "identified" by as many typical reference images as there are candidates (at most half of the
  reference images; none when that is fewer than the training images).
- SSIM uses an 11x11 Gaussian window (sigma 1.5, shrunk to the largest odd size that fits
  smaller images), C1 = 0.01^2, C2 = 0.03^2, data range 1, averaged over valid positions.

This module depends only on torch and numpy (matplotlib only inside :func:`save_grid`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch.nn import functional as F

SSIM_THRESHOLD = 0.4
"""SSIM above which a training image counts as recovered (Haim et al. 2022; Buzaglo et al.)."""

IDENTIFY_RATIO = 0.9
"""An identified image's reconstruction is at most this fraction of the distance to the nearest
non-member image away from it (our choice; see the module docstring)."""

__all__ = [
    "IDENTIFY_RATIO",
    "SSIM_THRESHOLD",
    "ReconstructionMatch",
    "greedy_match",
    "match_reconstructions",
    "psnr",
    "save_grid",
    "ssim",
]


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image ``10 log10(1 / MSE)`` for data range 1 (MSE floored at 1e-10: finite)."""
    mse = (x - y).float().square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of ``N x C x H x W`` images in [0, 1]."""
    x, y = x.float(), y.float()
    size = min(window, *x.shape[-2:])
    size -= 1 - size % 2  # odd, at most the image
    coords = torch.arange(size, dtype=torch.float32, device=x.device) - (size - 1) / 2
    g = torch.exp(-coords.square() / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=x.shape[1])

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return value.flatten(1).mean(1)


def greedy_match(distances: np.ndarray) -> np.ndarray:
    """Greedy one-to-one assignment of the rows of an ``N x K`` distance matrix (``K >= N``):
    repeatedly pair the globally closest unmatched row and column (ties by index).

    Returns, for every row, the index of its column. Not the minimum-cost assignment in general
    (that is Hungarian matching); it is the paper's: closest pairs are fixed first.
    """
    distances = np.asarray(distances, dtype=np.float64)
    n, k = distances.shape
    if k < n:
        raise ValueError(f"need at least as many candidates as training images ({k} < {n})")
    order = np.argsort(distances, axis=None, kind="stable")
    rows, cols = np.unravel_index(order, distances.shape)
    match = np.full(n, -1, dtype=np.int64)
    used = np.zeros(k, dtype=bool)
    remaining = n
    for r, c in zip(rows, cols, strict=True):
        if match[r] < 0 and not used[c]:
            match[r] = c
            used[c] = True
            remaining -= 1
            if remaining == 0:
                break
    return match


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@attrs.frozen(eq=False)
class ReconstructionMatch:
    """Each training image's matched candidate and how close it came.

    Arrays are indexed by training image (``N``): ``candidate`` the index of its candidate among
    the ``K``, ``l2`` the pixel-space Euclidean distance (images in [0, 1]), ``ssim`` and ``psnr``
    of the pair.
    """

    candidate: np.ndarray
    l2: np.ndarray
    ssim: np.ndarray
    psnr: np.ndarray
    num_candidates: int
    nearest_reference: np.ndarray | None = None
    """Per training image: L2 from its matched candidate to the nearest non-member image."""
    chance_fraction_recovered: float | None = None
    """The SSIM criterion applied to as many non-member images as candidates: its floor."""
    chance_fraction_identified: float | None = None
    """The identified criterion on those non-member images (checked against the remaining
    reference images): what an attack that outputs typical images would score."""

    def __len__(self) -> int:
        return int(self.candidate.shape[0])

    @property
    def order(self) -> np.ndarray:
        """Training-image indices from the best reconstructed (smallest L2) to the worst."""
        return np.argsort(self.l2, kind="stable")

    def error_curve(self) -> np.ndarray:
        """The sorted per-image L2 distances: Loo et al.'s reconstruction curve."""
        return np.sort(self.l2)

    def fraction_above(self, ssim_threshold: float = SSIM_THRESHOLD) -> float:
        """Fraction of training images whose matched candidate has SSIM above the threshold
        (0.4 by default, the "good reconstruction" bar of Haim et al. and Buzaglo et al.)."""
        return float(np.mean(self.ssim > ssim_threshold)) if len(self) else 0.0

    def identified(self, ssim_threshold: float = SSIM_THRESHOLD) -> np.ndarray | None:
        """Per training image: recovered above the SSIM bar and its matched candidate at most
        :data:`IDENTIFY_RATIO` times as far from it as from the nearest non-member (``None``
        without reference images)."""
        if self.nearest_reference is None:
            return None
        return (self.ssim > ssim_threshold) & (self.l2 <= IDENTIFY_RATIO * self.nearest_reference)

    def summary(self, ssim_threshold: float = SSIM_THRESHOLD) -> dict[str, Any]:
        """JSON-able summary: sizes, the fractions identified and recovered, the SSIM
        criterion's chance floor, mean/median L2, SSIM and PSNR."""
        identified = self.identified(ssim_threshold)
        head: dict[str, Any] = {}
        if identified is not None:
            head["fraction_identified"] = float(np.mean(identified)) if len(self) else 0.0
        head["fraction_recovered"] = self.fraction_above(ssim_threshold)
        if self.chance_fraction_identified is not None:
            head["chance_fraction_identified"] = self.chance_fraction_identified
        if self.chance_fraction_recovered is not None:
            head["chance_fraction_recovered"] = self.chance_fraction_recovered
        return head | {
            "num_train": len(self),
            "num_candidates": self.num_candidates,
            "mean_l2": float(np.mean(self.l2)),
            "median_l2": float(np.median(self.l2)),
            "mean_ssim": float(np.mean(self.ssim)),
            "median_ssim": float(np.median(self.ssim)),
            "mean_psnr": float(np.mean(self.psnr)),
            "ssim_threshold": float(ssim_threshold),
            "num_recovered": int(np.sum(self.ssim > ssim_threshold)),
        }


@torch.no_grad()
def match_reconstructions(
    candidates: torch.Tensor,
    train_x: torch.Tensor,
    reference_x: torch.Tensor | None = None,
    ssim_threshold: float = SSIM_THRESHOLD,
    *,
    measure_chance: bool = True,
) -> ReconstructionMatch:
    """Match ``K`` candidates (``K x C x H x W`` in [0, 1]) one-to-one to the ``N <= K``
    training images greedily on pixel-space L2 (Loo et al.'s reconstruction curve), and score
    every pair with L2, SSIM and PSNR.

    ``reference_x``: images of the same distribution the model was not trained on (any copy of
    a training image among them is dropped). With them each match is also checked against the
    nearest reference image, and the SSIM criterion's chance floor is measured on the first
    ``K`` of them.
    """
    candidates = candidates.detach().float().cpu()
    train_x = train_x.detach().float().cpu()
    if candidates.shape[1:] != train_x.shape[1:]:
        raise ValueError(
            f"candidates of shape {tuple(candidates.shape[1:])} cannot be compared with "
            f"training images of shape {tuple(train_x.shape[1:])}"
        )
    distances = torch.cdist(train_x.flatten(1).double(), candidates.flatten(1).double())
    match = greedy_match(_to_numpy(distances))
    matched = candidates[torch.as_tensor(match)]
    nearest_reference = chance = None
    if reference_x is not None:
        reference = reference_x.detach().float().cpu().flatten(1).double()
        is_member_copy = torch.cdist(reference, train_x.flatten(1).double()).min(1).values < 1e-6
        reference = reference[~is_member_copy]
        if len(reference):
            nearest_reference = _to_numpy(
                torch.cdist(matched.flatten(1).double(), reference).min(1).values
            )
        # The null: as many typical images the model never saw as there are candidates (at most
        # half the reference images), checked against the rest of the reference images (fewer
        # of them, so this floor errs high).
        decoy_count = min(len(candidates), len(reference) // 2)
        if measure_chance and decoy_count >= len(train_x):
            decoys = reference[:decoy_count].float().reshape(decoy_count, *candidates.shape[1:])
            null = match_reconstructions(
                decoys, train_x, reference[decoy_count:].float(), measure_chance=False
            )
            chance = (null.fraction_above(ssim_threshold), null.identified(ssim_threshold))
    return ReconstructionMatch(
        candidate=match,
        l2=_to_numpy(distances[torch.arange(len(match)), torch.as_tensor(match)]),
        ssim=_to_numpy(ssim(train_x, matched)).astype(np.float64),
        psnr=_to_numpy(psnr(train_x, matched)).astype(np.float64),
        num_candidates=int(candidates.shape[0]),
        nearest_reference=nearest_reference,
        chance_fraction_recovered=None if chance is None else chance[0],
        chance_fraction_identified=None if chance is None else float(np.mean(chance[1])),
    )


def save_grid(
    train_x: torch.Tensor,
    matched_candidates: torch.Tensor,
    path: str | Path,
    *,
    max_images: int = 64,
    columns: int = 8,
) -> Path:
    """Write a PNG of training images (top of each pair) above their matched reconstructions
    (bottom), best match (smallest L2) first, as Loo et al.'s and Haim et al.'s figures.

    ``matched_candidates[i]`` is the candidate matched to ``train_x[i]`` (e.g.
    ``candidates[match.candidate]``). Uses matplotlib's Agg backend (no display needed).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    train_x = train_x.detach().float().cpu().clamp(0, 1)
    recon = matched_candidates.detach().float().cpu().clamp(0, 1)
    if train_x.shape != recon.shape:
        raise ValueError(f"shapes differ: {tuple(train_x.shape)} and {tuple(recon.shape)}")
    l2 = (train_x - recon).flatten(1).norm(dim=1)
    order = torch.argsort(l2, stable=True)[:max_images]
    n = len(order)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig = Figure(figsize=(1.2 * columns, 2.5 * rows))
    axes = fig.subplots(2 * rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for slot, i in enumerate(order.tolist()):
        r, c = divmod(slot, columns)
        for offset, image in enumerate((train_x[i], recon[i])):
            array = image.permute(1, 2, 0).numpy()
            ax = axes[2 * r + offset, c]
            if array.shape[2] == 1:
                ax.imshow(array[:, :, 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(array)
        axes[2 * r + 1, c].set_title(f"L2 {float(l2[i]):.2f}", fontsize=7)
    fig.suptitle("training images (top) and their reconstructions (below), best first")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
