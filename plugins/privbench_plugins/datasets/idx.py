"""MNIST and Fashion-MNIST, read from the four idx files as they are distributed.

The files may be gzipped or not (``train-images-idx3-ubyte.gz`` or ``train-images-idx3-ubyte``)
and may lie directly in the folder given (``--data-root`` / ``PRIVBENCH_DATA``) or in
torchvision's layout under it (``<root>/FashionMNIST/raw``), so a folder torchvision once
filled works as it is. Without a folder, Fashion-MNIST is read where Debian's package
``dataset-fashion-mnist`` installs it (:data:`DEBIAN_FASHION_MNIST`). Every file is verified
as it is read (:func:`privbench.helpers.idx.read_idx`), and the four are checked against each
other: images are ``N x 28 x 28`` bytes, labels one per image and within the classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import attrs
import numpy as np
import torch

from privbench import DatasetNotFoundError, LoadedDataset, TensorData, hookimpl
from privbench.helpers import limit_indices, loaded_dataset, read_idx

ROOT_HINT = "pass --data-root DIR or set PRIVBENCH_DATA"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the four gzipped files."""

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NUM_CLASSES = 10


def _file_in(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _split(images_path: Path, labels_path: Path, keep: int | None, seed: int) -> TensorData:
    """One split's images and labels, checked against each other; *keep*: at most this many
    (a seeded subset)."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetNotFoundError(
            f"{images_path} holds a {images.dtype} array of shape {images.shape}, not "
            "N x height x width bytes; replace it with the original"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        held = len(labels) if labels.ndim == 1 else f"a {'x'.join(map(str, labels.shape))} array of"
        raise DatasetNotFoundError(
            f"{labels_path} holds {held} labels for the {len(images)} images of "
            f"{images_path.name}: the two files do not belong together"
        )
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < NUM_CLASSES:
        raise DatasetNotFoundError(
            f"{labels_path} has labels outside 0..{NUM_CLASSES - 1}; replace it with the original"
        )
    # Indexing copies the read-only bytes, so torch gets a writable array; the subset is taken
    # before the conversion to float, which then allocates one float copy of it only.
    index = limit_indices(len(labels), keep, seed)
    images, labels = images[index], labels[index]
    x = torch.from_numpy(images[:, None]).float().div_(255.0)
    return TensorData(x, torch.from_numpy(labels.astype(np.int64)))


@attrs.frozen
class _IdxDataset:
    """Shared loading of an MNIST-family dataset's four idx files."""

    title: ClassVar[str]
    """The dataset's name in messages."""
    torchvision_folder: ClassVar[str]
    """torchvision's folder name for it (files under ``<root>/<folder>/raw``)."""
    default_folder: ClassVar[Path | None] = None
    """Where to read it without a data root (a system package's folder), if anywhere."""
    default_package: ClassVar[str] = ""
    """The Debian package that installs :attr:`default_folder`."""
    hflip: ClassVar[bool]

    limit: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(4))
    )
    """Use at most this many train images (a seeded random subset), for CPU-sized runs."""
    seed: int = 0
    """Seed of the ``limit`` subset."""

    def _folders(self, data_root: str | None) -> list[Path]:
        if not data_root:
            return [self.default_folder] if self.default_folder else []
        root = Path(data_root).expanduser()
        return [root, root / self.torchvision_folder / "raw"]

    def _where(self, data_root: str | None) -> dict[str, Path]:
        """The four files, all from the first folder that has them; else one line saying what
        is missing where."""
        folders = self._folders(data_root)
        what = f"the four idx files ({', '.join(FILES)}; gzipped or not)"
        if not folders:
            raise DatasetNotFoundError(
                f"{self.title} is read from a local folder: {ROOT_HINT}, holding {what}"
            )
        partial: tuple[Path, list[str]] | None = None
        for folder in folders:
            found = {name: _file_in(folder, name) for name in FILES}
            if all(found.values()):
                return {name: path for name, path in found.items() if path is not None}
            if any(found.values()) and partial is None:
                partial = (folder, [name for name, path in found.items() if path is None])
        if partial is not None:
            folder, missing = partial
            raise DatasetNotFoundError(
                f"{self.title}: {folder} lacks {', '.join(missing)} (or its .gz); put {what} there"
            )
        looked = " or ".join(str(folder) for folder in folders)
        if data_root:
            hint = f"put {what} in one of them (privbench never downloads), or {ROOT_HINT}"
        else:
            hint = (
                f"install Debian's copy (apt-get install {self.default_package}), "
                f"or {ROOT_HINT} with {what}"
            )
        raise DatasetNotFoundError(f"{self.title} not found in {looked}: {hint}")

    def load(self, data_root: str | None) -> LoadedDataset:
        images, labels, test_images, test_labels = self._where(data_root).values()
        train = _split(images, labels, self.limit, self.seed)
        test = _split(test_images, test_labels, None, 0)
        if train.x.shape[1:] != test.x.shape[1:]:
            raise DatasetNotFoundError(
                f"{self.title}: train images are {tuple(train.x.shape[2:])} pixels but test "
                f"images {tuple(test.x.shape[2:])}; the files come from different datasets"
            )
        return loaded_dataset(train, test, NUM_CLASSES, hflip_preserves_label=self.hflip)


@attrs.frozen
class MNIST(_IdxDataset):
    """Digits change class when mirrored (or become non-digits), so flips are off."""

    name: ClassVar[str] = "mnist"
    description: ClassVar[str] = "MNIST (28x28 grey digits, 10 classes) from --data-root"
    title: ClassVar[str] = "MNIST"
    torchvision_folder: ClassVar[str] = "MNIST"
    hflip: ClassVar[bool] = False


@attrs.frozen
class FashionMNIST(_IdxDataset):
    """Flips are on: every Fashion-MNIST class (shirt, shoe, bag, ...) is still itself when
    mirrored, even where the item is asymmetric (a left shoe mirrors into a right shoe)."""

    name: ClassVar[str] = "fashion-mnist"
    description: ClassVar[str] = (
        "Fashion-MNIST (28x28 grey clothing, 10 classes): Debian's dataset-fashion-mnist "
        "or --data-root"
    )
    title: ClassVar[str] = "Fashion-MNIST"
    torchvision_folder: ClassVar[str] = "FashionMNIST"
    default_folder: ClassVar[Path | None] = DEBIAN_FASHION_MNIST
    default_package: ClassVar[str] = "dataset-fashion-mnist"
    hflip: ClassVar[bool] = True


@hookimpl
def register_datasets(register):
    for source in (MNIST, FashionMNIST):
        register(source)
