"""torchvision's image datasets, read from a local folder (``--data-root`` / ``PRIVBENCH_DATA``).

privbench never downloads: every class is built with ``download=False``, and the expected files
are checked first so that a missing dataset gets one line saying where to put what.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import torch
from sklearn.model_selection import train_test_split

from privbench import DatasetNotFoundError, LoadedDataset, TensorData, hookimpl

ROOT_HINT = "pass --data-root DIR or set PRIVBENCH_DATA"


def _require_root(data_root: str | None, what: str) -> Path:
    if not data_root:
        raise DatasetNotFoundError(f"{what} is read from a local folder: {ROOT_HINT}")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"data root {root} does not exist: {ROOT_HINT}")
    return root


def _limit(data: TensorData, limit: int | None, seed: int) -> TensorData:
    if limit is None or limit >= len(data):
        return data
    rng = np.random.default_rng(seed)
    return data.subset(np.sort(rng.choice(len(data), size=limit, replace=False)))


def _to_images(array: Any) -> torch.Tensor:
    """uint8 ``N x H x W`` or ``N x H x W x C`` to float ``N x C x H x W`` in [0, 1]."""
    images = torch.as_tensor(np.asarray(array))
    if images.ndim == 3:
        images = images.unsqueeze(-1)
    return images.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _bundle(
    train: TensorData, test: TensorData, num_classes: int, hflip_preserves_label: bool
) -> LoadedDataset:
    return LoadedDataset(
        train=train,
        test=test,
        num_classes=num_classes,
        mean=tuple(train.x.mean(dim=(0, 2, 3)).tolist()),
        std=tuple(train.x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()),
        hflip_preserves_label=hflip_preserves_label,
    )


def _limit_field() -> Any:
    return attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(4)))


@attrs.frozen
class _TorchvisionSource:
    """Shared loading for torchvision classes with ``.data`` and ``.targets`` arrays."""

    title: ClassVar[str]
    folder: ClassVar[str]
    files: ClassVar[str]
    num_classes: ClassVar[int]
    hflip: ClassVar[bool]

    limit: int | None = _limit_field()
    """Use at most this many train images (a seeded random subset), for CPU-sized runs."""
    seed: int = 0

    def dataset_class(self) -> Any:
        raise NotImplementedError

    def load(self, data_root: str | None) -> LoadedDataset:
        root = _require_root(data_root, self.title)
        expected = root / self.folder
        if not expected.is_dir():
            raise DatasetNotFoundError(
                f"{self.title} not found under {root}: put {self.files} at {expected} "
                f"(privbench never downloads), or {ROOT_HINT}"
            )
        try:
            splits = [
                self.dataset_class()(str(root), train=t, download=False) for t in (True, False)
            ]
        except RuntimeError as err:
            raise DatasetNotFoundError(
                f"{self.title} under {expected} is incomplete or corrupted ({err}); "
                f"replace it with {self.files}"
            ) from None
        train, test = (
            TensorData(_to_images(s.data), torch.as_tensor(np.asarray(s.targets), dtype=torch.long))
            for s in splits
        )
        return _bundle(_limit(train, self.limit, self.seed), test, self.num_classes, self.hflip)


@attrs.frozen
class CIFAR10(_TorchvisionSource):
    """CIFAR-10. torchvision checks each batch file against its official MD5 before unpickling
    it, so only the genuine files are ever unpickled."""

    name: ClassVar[str] = "cifar10"
    description: ClassVar[str] = "CIFAR-10 (32x32 colour, 10 classes) from --data-root"
    title: ClassVar[str] = "CIFAR-10"
    folder: ClassVar[str] = "cifar-10-batches-py"
    files: ClassVar[str] = "the extracted 'cifar-10-batches-py' folder of cifar-10-python.tar.gz"
    num_classes: ClassVar[int] = 10
    hflip: ClassVar[bool] = True

    def dataset_class(self) -> Any:
        from torchvision.datasets import CIFAR10 as Dataset

        return Dataset


@attrs.frozen
class CIFAR100(_TorchvisionSource):
    """CIFAR-100 (fine labels); MD5-checked before unpickling, as CIFAR-10."""

    name: ClassVar[str] = "cifar100"
    description: ClassVar[str] = "CIFAR-100 (32x32 colour, 100 classes) from --data-root"
    title: ClassVar[str] = "CIFAR-100"
    folder: ClassVar[str] = "cifar-100-python"
    files: ClassVar[str] = "the extracted 'cifar-100-python' folder of cifar-100-python.tar.gz"
    num_classes: ClassVar[int] = 100
    hflip: ClassVar[bool] = True

    def dataset_class(self) -> Any:
        from torchvision.datasets import CIFAR100 as Dataset

        return Dataset


@attrs.frozen
class MNIST(_TorchvisionSource):
    name: ClassVar[str] = "mnist"
    description: ClassVar[str] = "MNIST (28x28 grey digits) from --data-root"
    title: ClassVar[str] = "MNIST"
    folder: ClassVar[str] = "MNIST/raw"
    files: ClassVar[str] = (
        "the four uncompressed idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)"
    )
    num_classes: ClassVar[int] = 10
    hflip: ClassVar[bool] = False  # mirrored digits are not the same digits

    def dataset_class(self) -> Any:
        from torchvision.datasets import MNIST as Dataset

        return Dataset


@attrs.frozen
class FashionMNIST(_TorchvisionSource):
    name: ClassVar[str] = "fashion-mnist"
    description: ClassVar[str] = "Fashion-MNIST (28x28 grey clothing) from --data-root"
    title: ClassVar[str] = "Fashion-MNIST"
    folder: ClassVar[str] = "FashionMNIST/raw"
    files: ClassVar[str] = MNIST.files
    num_classes: ClassVar[int] = 10
    hflip: ClassVar[bool] = True  # a mirrored shirt or shoe is still a shirt or shoe

    def dataset_class(self) -> Any:
        from torchvision.datasets import FashionMNIST as Dataset

        return Dataset


@attrs.frozen
class ImageFolder:
    """Images in class folders (``root/<class>/*.png``), or ``root/train`` and ``root/test``
    each laid out so; without them the images are split into train and test here."""

    name: ClassVar[str] = "imagefolder"
    description: ClassVar[str] = "class-per-folder images under --data-root (torchvision)"

    image_size: int = attrs.field(default=32, validator=attrs.validators.ge(4))
    grayscale: bool = False
    test_fraction: float = attrs.field(
        default=0.2, validator=[attrs.validators.gt(0.0), attrs.validators.lt(1.0)]
    )
    limit: int | None = _limit_field()
    seed: int = 0

    def _read(self, folder: Path) -> tuple[TensorData, list[str]]:
        from torchvision import datasets, transforms

        steps = [transforms.Resize((self.image_size, self.image_size))]
        if self.grayscale:
            steps.append(transforms.Grayscale())
        steps.append(transforms.PILToTensor())
        try:
            dataset = datasets.ImageFolder(str(folder), transform=transforms.Compose(steps))
        except (FileNotFoundError, RuntimeError) as err:
            raise DatasetNotFoundError(
                f"no images in class folders under {folder} ({err}); lay them out as "
                f"{folder}/<class name>/<image>.png"
            ) from None
        images = torch.stack([image for image, _ in dataset]).float().div_(255.0)
        labels = torch.tensor(dataset.targets, dtype=torch.long)
        if images.shape[1] == 4:  # RGBA: drop alpha
            images = images[:, :3]
        return TensorData(images, labels), dataset.classes

    def load(self, data_root: str | None) -> LoadedDataset:
        root = _require_root(data_root, "imagefolder")
        if (root / "train").is_dir() and (root / "test").is_dir():
            (train, classes), (test, test_classes) = (
                self._read(root / "train"),
                self._read(root / "test"),
            )
            if classes != test_classes:
                raise DatasetNotFoundError(
                    f"{root}/train and {root}/test hold different class folders"
                )
        else:
            everything, classes = self._read(root)
            labels = everything.y.numpy()
            stratify = labels if np.bincount(labels).min() >= 2 else None
            train_idx, test_idx = train_test_split(
                np.arange(len(labels)),
                test_size=self.test_fraction,
                random_state=self.seed,
                stratify=stratify,
            )
            train, test = everything.subset(train_idx), everything.subset(test_idx)
        return _bundle(_limit(train, self.limit, self.seed), test, len(classes), True)


@hookimpl
def register_datasets(register):
    for source in (CIFAR10, CIFAR100, MNIST, FashionMNIST, ImageFolder):
        register(source)
