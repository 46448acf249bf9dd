"""scikit-learn's digits: 1797 real 8x8 grayscale images that ship with scikit-learn.

The embedded default: real data that needs no download, small enough that a pool of models
trains in seconds on a CPU.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np
import torch

from privbench import LoadedDataset, TensorData, hookimpl


@attrs.frozen
class Digits:
    """The split is stratified so that even a small test set measures every class."""

    name: ClassVar[str] = "digits"
    description: ClassVar[str] = "scikit-learn's 1797 real 8x8 handwritten digits (offline)"

    test_fraction: float = attrs.field(
        default=0.3, validator=[attrs.validators.gt(0.0), attrs.validators.lt(1.0)]
    )
    """Fraction of the images held out as the test split (utility); the rest is the pool."""
    seed: int = 0
    """Seed of the stratified train/test split."""

    def load(self, data_root: str | None) -> LoadedDataset:
        # Imported on use: loading plugins must stay fast for every command.
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(bunch.target, dtype=torch.long)
        train_idx, test_idx = train_test_split(
            np.arange(len(y)),
            test_size=self.test_fraction,
            random_state=self.seed,
            stratify=y.numpy(),
        )
        train = TensorData(x[train_idx], y[train_idx])
        return LoadedDataset(
            train=train,
            test=TensorData(x[test_idx], y[test_idx]),
            num_classes=10,
            mean=(float(train.x.mean()),),  # one channel, so per channel = overall
            std=(float(train.x.std()),),
            hflip_preserves_label=False,  # a mirrored 2, 3, 7 ... is not the same digit
        )


@hookimpl
def register_datasets(register):
    register(Digits)
