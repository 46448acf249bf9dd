"""torchvision's image datasets, CIFAR and class-per-folder images, read from a local folder
(``--data-root`` / ``PRIVBENCH_DATA``).

privbench never downloads: every class is built with ``download=False``, and the files that
torchvision will read are checked first, so a missing dataset gets one line of ours saying where
to put what rather than torchvision's advice to download. torchvision is imported only when a
dataset is loaded, so listing plugins stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import torch

from privbench import DatasetNotFoundError, LoadedDataset, TensorData, hookimpl
from privbench.helpers import limit_indices, loaded_dataset

ROOT_HINT = "pass --data-root DIR or set PRIVBENCH_DATA"

# Errors torchvision's readers raise on truncated or foreign files.
_CORRUPT = (RuntimeError, ValueError, TypeError, AssertionError, OSError, EOFError)


def _to_images(array: Any) -> torch.Tensor:
    """uint8 ``N x H x W`` or ``N x H x W x C`` to float ``N x C x H x W`` in [0, 1].

    Made contiguous while still uint8, so only one float copy is ever allocated.
    """
    images = torch.as_tensor(np.asarray(array))
    if images.ndim == 3:
        images = images.unsqueeze(-1)
    return images.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def _limit_field() -> Any:
    return attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(4)))


@attrs.frozen
class _CIFAR:
    """CIFAR-10 and CIFAR-100 through torchvision's classes (``.data`` and ``.targets`` arrays).

    CIFAR's batch files are pickles. torchvision verifies the official MD5 of every batch file
    (and of the meta file) before unpickling any of them, so only the genuine files are ever
    unpickled: that is why reading them is safe. A file that fails the check surfaces as
    torchvision's RuntimeError, which becomes our one-line "corrupted" error."""

    title: ClassVar[str]
    """The dataset's name in messages."""
    torchvision_class: ClassVar[str]
    """Its class in ``torchvision.datasets``, imported only when the dataset is loaded."""
    hflip: ClassVar[bool] = True  # a mirrored car, frog or ship is still one

    limit: int | None = _limit_field()
    """Use at most this many train images (a seeded random subset), for CPU-sized runs."""
    seed: int = 0
    """Seed of the ``limit`` subset."""

    def dataset_class(self) -> Any:
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision_class)

    def folder(self, dataset_class: Any) -> str:
        """Where torchvision looks, relative to the data root."""
        return dataset_class.base_folder

    def what(self, dataset_class: Any) -> str:
        """The files to put there, as a person downloading them would recognise them."""
        return f"the extracted '{dataset_class.base_folder}' folder (from {dataset_class.filename})"

    def required_files(self, dataset_class: Any) -> list[str]:
        """The file names under :meth:`folder` that torchvision's constructor insists on."""
        listed = dataset_class.train_list + dataset_class.test_list
        return [name for name, _md5 in listed] + [dataset_class.meta["filename"]]

    def load(self, data_root: str | None) -> LoadedDataset:
        dataset_class = self.dataset_class()
        folder, what = self.folder(dataset_class), self.what(dataset_class)
        if not data_root:
            raise DatasetNotFoundError(
                f"{self.title} is read from a local folder: {ROOT_HINT}, with {what} at "
                f"DIR/{folder}"
            )
        root = Path(data_root).expanduser()
        expected = root / folder
        required = self.required_files(dataset_class)
        missing = [name for name in required if not (expected / name).is_file()]
        if missing:
            lacks = (
                f" ({expected} lacks {', '.join(missing)})" if len(missing) < len(required) else ""
            )
            raise DatasetNotFoundError(
                f"{self.title} not found under {root}{lacks}: put {what} at {expected} "
                f"(privbench never downloads), or {ROOT_HINT}"
            )
        try:
            train_set, test_set = (
                dataset_class(str(root), train=t, download=False) for t in (True, False)
            )
            keep = limit_indices(len(train_set.targets), self.limit, self.seed)
            train, test = (
                TensorData(
                    _to_images(np.asarray(s.data)[index]),
                    torch.as_tensor(np.asarray(s.targets)[index], dtype=torch.long),
                )
                for s, index in ((train_set, keep), (test_set, slice(None)))
            )
        except _CORRUPT as err:
            detail = " ".join(str(err).split()) or type(err).__name__
            if "download=True" in detail:  # torchvision's advice does not apply here
                detail = "a file is missing or fails its official MD5 check"
            raise DatasetNotFoundError(
                f"{self.title} under {expected} is incomplete or corrupted ({detail}); "
                f"replace it with {what}"
            ) from None
        num_classes = len(train_set.classes)  # torchvision's list of class names
        return loaded_dataset(train, test, num_classes, hflip_preserves_label=self.hflip)


@attrs.frozen
class CIFAR10(_CIFAR):
    name: ClassVar[str] = "cifar10"
    description: ClassVar[str] = "CIFAR-10 (32x32 colour, 10 classes) from --data-root"
    title: ClassVar[str] = "CIFAR-10"
    torchvision_class: ClassVar[str] = "CIFAR10"


@attrs.frozen
class CIFAR100(_CIFAR):
    name: ClassVar[str] = "cifar100"
    description: ClassVar[str] = "CIFAR-100 (32x32 colour, 100 fine classes) from --data-root"
    title: ClassVar[str] = "CIFAR-100"
    torchvision_class: ClassVar[str] = "CIFAR100"


@attrs.frozen
class ImageFolder:
    """Images in class folders (``root/<class>/*.png``), or ``root/train`` and ``root/test``
    each laid out so; without those two, the images are split into train and test here,
    stratified so that small folders keep every class on both sides."""

    name: ClassVar[str] = "imagefolder"
    description: ClassVar[str] = "class-per-folder images under --data-root (torchvision)"

    image_size: int = attrs.field(default=32, validator=attrs.validators.ge(4))
    """Every image is resized to a square of this side (models need one input shape)."""
    grayscale: bool = False
    """Convert every image to one grey channel."""
    test_fraction: float = attrs.field(
        default=0.2, validator=[attrs.validators.gt(0.0), attrs.validators.lt(1.0)]
    )
    """Fraction of the images held out as the test split (without train/ and test/ folders)."""
    limit: int | None = _limit_field()
    """Use at most this many train images (a seeded random subset), for CPU-sized runs."""
    seed: int = 0
    """Seed of the train/test split and of the ``limit`` subset."""

    def _read(self, folder: Path, root: Path) -> tuple[TensorData, list[str], list[str]]:
        """The images under *folder*, their class names, and each image's path under *root*."""
        from torchvision import datasets, transforms

        steps: list[Any] = [transforms.Resize((self.image_size, self.image_size))]
        if self.grayscale:
            steps.append(transforms.Grayscale())
        steps.append(transforms.PILToTensor())
        try:
            dataset = datasets.ImageFolder(str(folder), transform=transforms.Compose(steps))
            # ImageFolder offers no array of pixels: each file must be decoded anyway.
            images = torch.stack([image for image, _ in dataset]).float().div_(255.0)
        except (FileNotFoundError, RuntimeError) as err:
            raise DatasetNotFoundError(
                f"no images in class folders under {folder} ({' '.join(str(err).split())}); "
                f"lay them out as {folder}/<class name>/<image>.png"
            ) from None
        except OSError as err:  # PIL's UnidentifiedImageError and truncated files
            raise DatasetNotFoundError(
                f"unreadable image under {folder}: {' '.join(str(err).split())}"
            ) from None
        names = [Path(path).relative_to(root).as_posix() for path, _ in dataset.samples]
        labels = torch.tensor(dataset.targets, dtype=torch.long)
        return TensorData(images, labels), dataset.classes, names

    def _split(self, everything: TensorData) -> tuple[np.ndarray, np.ndarray]:
        """The train and test indices of a folder that is not split already."""
        from sklearn.model_selection import train_test_split

        labels = everything.y.numpy()
        indices = np.arange(len(labels))
        try:
            train_idx, test_idx = train_test_split(
                indices, test_size=self.test_fraction, random_state=self.seed, stratify=labels
            )
        except ValueError:  # a class with one image, or fewer test slots than classes
            train_idx, test_idx = train_test_split(
                indices, test_size=self.test_fraction, random_state=self.seed
            )
        return np.asarray(train_idx), np.asarray(test_idx)

    def load(self, data_root: str | None) -> LoadedDataset:
        layout = "DIR/<class name>/<image>.png (or DIR/train/... and DIR/test/...)"
        if not data_root:
            raise DatasetNotFoundError(f"imagefolder reads {layout}: {ROOT_HINT}")
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise DatasetNotFoundError(
                f"imagefolder: {root} does not exist; put images at "
                f"{layout.replace('DIR', str(root))}, or {ROOT_HINT}"
            )
        if (root / "train").is_dir() and (root / "test").is_dir():
            train, classes, names = self._read(root / "train", root)
            test, test_classes, _ = self._read(root / "test", root)
            if classes != test_classes:
                raise DatasetNotFoundError(
                    f"{root / 'train'} and {root / 'test'} hold different class folders"
                )
        else:
            everything, classes, all_names = self._read(root, root)
            train_idx, test_idx = self._split(everything)
            train, test = everything.subset(train_idx), everything.subset(test_idx)
            names = [all_names[i] for i in train_idx]
        keep = limit_indices(len(train), self.limit, self.seed)
        return loaded_dataset(
            train.subset(keep), test, len(classes), train_names=tuple(names[i] for i in keep)
        )


@hookimpl
def register_datasets(register):
    for source in (CIFAR10, CIFAR100, ImageFolder):
        register(source)
