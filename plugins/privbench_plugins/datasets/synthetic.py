"""Seeded synthetic images: smooth per-class prototypes plus per-sample noise.

Fast and fully controlled: ``noise`` sets how hard the classes are, ``label_noise`` how much a
model must memorise (a relabelled sample can only be fitted by memorising it).
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch.nn import functional as F

from privbench import LoadedDataset, TensorData, hookimpl
from privbench.helpers import loaded_dataset


@attrs.frozen
class Synthetic:
    name: ClassVar[str] = "synthetic"
    description: ClassVar[str] = "seeded class prototypes plus noise, optional label noise"

    num_train: int = attrs.field(default=1000, validator=attrs.validators.ge(4))
    """Images in the train split, the population pool."""
    num_test: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    """Images in the test split, for utility."""
    num_classes: int = attrs.field(default=10, validator=attrs.validators.ge(2))
    """Number of classes, one prototype each."""
    channels: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    """Colour channels per image."""
    size: int = attrs.field(default=16, validator=attrs.validators.ge(4))
    """Side of the square images, in pixels."""
    noise: float = attrs.field(default=0.15, validator=attrs.validators.ge(0.0))
    """Standard deviation of the per-pixel Gaussian noise around each class prototype.
    Prototype pixels lie in [0, 1]; larger noise makes the classes overlap."""
    label_noise: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    """Fraction of train labels redrawn uniformly at random; test labels stay clean."""
    seed: int = 0
    """Seed of the prototypes, the images and the label noise."""

    def _images(self, labels: torch.Tensor, prototypes: torch.Tensor, g: torch.Generator):
        noise = torch.randn((len(labels), self.channels, self.size, self.size), generator=g)
        return (prototypes[labels] + self.noise * noise).clamp(0.0, 1.0)

    def load(self, data_root: str | None) -> LoadedDataset:
        g = torch.Generator().manual_seed(self.seed)
        coarse = torch.rand((self.num_classes, self.channels, 4, 4), generator=g)
        prototypes = F.interpolate(coarse, size=(self.size, self.size), mode="bilinear")
        y_train = torch.randint(self.num_classes, (self.num_train,), generator=g)
        y_test = torch.randint(self.num_classes, (self.num_test,), generator=g)
        x_train = self._images(y_train, prototypes, g)
        x_test = self._images(y_test, prototypes, g)
        relabel = torch.rand(self.num_train, generator=g) < self.label_noise
        random_labels = torch.randint(self.num_classes, (self.num_train,), generator=g)
        y_train = torch.where(relabel, random_labels, y_train)
        return loaded_dataset(
            TensorData(x_train, y_train), TensorData(x_test, y_test), self.num_classes
        )


@hookimpl
def register_datasets(register):
    register(Synthetic)
