"""Dataset plugins: the embedded digits, synthetic data, and local torchvision folders (the idx
files of MNIST and Fashion-MNIST: test_idx_datasets.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from privbench_plugins.datasets.digits import Digits
from privbench_plugins.datasets.synthetic import Synthetic
from privbench_plugins.datasets.torchvision_datasets import CIFAR10, CIFAR100, ImageFolder
from sklearn.datasets import load_digits

from privbench import DatasetNotFoundError, LoadedDataset, UnknownPluginError
from privbench.plugins import Registry


def _rows(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Each sample as one row (pixels then label), sorted, to compare datasets as multisets."""
    rows = np.concatenate([x.reshape(len(y), -1).numpy(), y[:, None].numpy()], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


# -- digits ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> LoadedDataset:
    return Digits().load(None)


def test_digits_shapes_range_and_classes(digits):
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.train.x.dtype == torch.float32 and digits.train.y.dtype == torch.int64
    assert len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == pytest.approx(0.3 * 1797, abs=1)
    assert float(digits.train.x.min()) == 0.0 and float(digits.train.x.max()) == 1.0
    assert set(digits.train.y.tolist()) == set(digits.test.y.tolist()) == set(range(10))
    assert not digits.hflip_preserves_label
    assert digits.mean[0] == pytest.approx(float(digits.train.x.mean()))
    assert len(digits.mean) == len(digits.std) == 1


def test_digits_split_is_a_stratified_partition(digits):
    bunch = load_digits()
    everything = _rows(
        torch.tensor(bunch.images, dtype=torch.float32) / 16.0, torch.tensor(bunch.target)
    )
    train, test = digits.train, digits.test
    together = _rows(torch.cat([train.x, test.x])[:, 0], torch.cat([train.y, test.y]))
    np.testing.assert_array_equal(together, everything)  # every sample exactly once
    train_share = torch.bincount(train.y) / len(train)
    test_share = torch.bincount(test.y) / len(test)
    assert torch.allclose(train_share, test_share, atol=0.01)


def test_digits_is_deterministic_per_seed(digits):
    again = Digits().load("/ignored")
    assert torch.equal(again.train.x, digits.train.x) and torch.equal(again.test.y, digits.test.y)
    other = Digits(seed=1, test_fraction=0.25).load(None)
    assert len(other.test) == pytest.approx(0.25 * 1797, abs=1)
    assert not torch.equal(other.train.y[:50], digits.train.y[:50])


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_digits_rejects_a_bad_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        Digits(test_fraction=fraction)


# -- synthetic ------------------------------------------------------------------------------------


def test_synthetic_shapes_and_range():
    data = Synthetic(num_train=40, num_test=20, num_classes=3, channels=1, size=8).load(None)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 3
    assert len(data.train) == 40 and len(data.test) == 20
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert float(data.train.x.min()) >= 0.0 and float(data.train.x.max()) <= 1.0
    assert set(data.train.y.tolist()) <= {0, 1, 2}


def test_synthetic_is_seeded():
    a, b, c = (Synthetic(seed=s).load(None) for s in (1, 1, 2))
    assert a.input_shape == (3, 16, 16) and len(a.train) == 1000 and len(a.test) == 500
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert torch.equal(a.test.x, b.test.x) and a.mean == b.mean
    assert not torch.equal(a.train.x, c.train.x)


def test_synthetic_label_noise_relabels_train_only():
    clean, noisy = (Synthetic(seed=1, label_noise=p).load(None) for p in (0.0, 0.5))
    assert torch.equal(noisy.train.x, clean.train.x) and torch.equal(noisy.test.y, clean.test.y)
    changed = float((noisy.train.y != clean.train.y).float().mean())
    assert 0.35 < changed < 0.55  # half relabelled, of which 1/10 keep their label by chance


# -- torchvision folders --------------------------------------------------------------------------


def _write_pngs(folder: Path, classes: tuple[str, ...], per_class: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for label in classes:
        (folder / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{i}.png")


def test_imagefolder_splits_class_folders(tmp_path):
    _write_pngs(tmp_path, ("cat", "dog"), 10)
    data = ImageFolder(image_size=8).load(str(tmp_path))
    assert data.input_shape == (3, 8, 8) and data.num_classes == 2
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert float(data.train.x.min()) >= 0.0 and float(data.train.x.max()) <= 1.0
    assert len(data.train) == 16 and len(data.test) == 4
    assert torch.bincount(data.test.y).tolist() == [2, 2]
    assert data.hflip_preserves_label
    again = ImageFolder(image_size=8).load(str(tmp_path))
    assert torch.equal(again.test.x, data.test.x)
    grey = ImageFolder(grayscale=True, limit=5).load(str(tmp_path))
    assert grey.input_shape == (1, 32, 32) and len(grey.train) == 5 and len(grey.test) == 4


def test_imagefolder_uses_train_and_test_folders(tmp_path):
    _write_pngs(tmp_path / "train", ("a", "b", "c"), 3)
    _write_pngs(tmp_path / "test", ("a", "b", "c"), 1, seed=1)
    data = ImageFolder(image_size=8).load(str(tmp_path))
    assert len(data.train) == 9 and len(data.test) == 3 and data.num_classes == 3
    assert data.test.y.tolist() == [0, 1, 2]


def test_imagefolder_without_images_says_how_to_lay_them_out(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="class name") as err:
        ImageFolder().load(str(tmp_path))
    assert "\n" not in str(err.value)


SOURCES = [
    (CIFAR10, "cifar-10-batches-py"),
    (CIFAR100, "cifar-100-python"),
    (ImageFolder, "<class name>"),
]


@pytest.mark.parametrize(("source", "expected"), SOURCES)
def test_a_missing_dataset_says_where_to_put_it(tmp_path, source, expected):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as err:
        source().load(str(root))
    message = str(err.value)
    assert f"{root}/{expected}" in message and "\n" not in message


@pytest.mark.parametrize(("source", "expected"), SOURCES)
def test_no_data_root_asks_for_one(source, expected):
    with pytest.raises(DatasetNotFoundError) as err:
        source().load(None)
    message = str(err.value)
    assert "--data-root DIR or set PRIVBENCH_DATA" in message and "\n" not in message


def test_corrupted_files_are_one_line(tmp_path):
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / name).write_bytes(b"not the real file")  # fails torchvision's md5 check
    with pytest.raises(DatasetNotFoundError, match="incomplete or corrupted") as err:
        CIFAR10().load(str(tmp_path))
    assert "\n" not in str(err.value)


# -- registry -------------------------------------------------------------------------------------


def test_the_registry_finds_the_datasets():
    registry = Registry.from_environment()
    assert {"digits", "synthetic", "cifar10", "cifar100", "mnist", "fashion-mnist"} <= set(
        registry.names("dataset")
    )
    assert "imagefolder" in registry.names("dataset")
    digits = registry.create("dataset", "digits", {"test_fraction": "0.25"})
    assert isinstance(digits, Digits) and digits.test_fraction == 0.25
    with pytest.raises(UnknownPluginError, match="'digits'"):
        registry.create("dataset", "digitz")
