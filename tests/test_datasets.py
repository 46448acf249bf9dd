"""Dataset plugins: the embedded digits, synthetic data, and local torchvision folders."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from PIL import Image

from privbench import DatasetNotFoundError, OptionError, UnknownPluginError
from privbench.plugins import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_environment()


def test_digits_is_real_stratified_and_deterministic(registry):
    data = registry.create("dataset", "digits").load(None)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.train) + len(data.test) == 1797
    assert len(data.test) == pytest.approx(0.3 * 1797, abs=1)
    assert float(data.train.x.min()) >= 0.0 and float(data.train.x.max()) <= 1.0
    assert not data.hflip_preserves_label
    train_share = torch.bincount(data.train.y) / len(data.train)
    test_share = torch.bincount(data.test.y) / len(data.test)
    assert torch.allclose(train_share, test_share, atol=0.01)
    again = registry.create("dataset", "digits").load(None)
    assert torch.equal(again.train.x, data.train.x) and torch.equal(again.test.y, data.test.y)
    other = registry.create("dataset", "digits", {"seed": "1", "test_fraction": "0.25"}).load(None)
    assert len(other.test) == pytest.approx(0.25 * 1797, abs=1)
    assert not torch.equal(other.train.y[:50], data.train.y[:50])


def test_digits_rejects_a_bad_fraction(registry):
    with pytest.raises(OptionError, match="test_fraction"):
        registry.create("dataset", "digits", {"test_fraction": "1.5"})


def test_synthetic_is_seeded_and_label_noise_relabels(registry):
    make = lambda **o: registry.create("dataset", "synthetic", o).load(None)  # noqa: E731
    a, b, c = make(seed=1), make(seed=1), make(seed=2)
    assert a.input_shape == (3, 16, 16) and len(a.train) == 1000 and len(a.test) == 500
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.train.x, c.train.x)
    noisy = make(seed=1, label_noise=0.5)
    assert torch.equal(noisy.train.x, a.train.x)
    changed = float((noisy.train.y != a.train.y).float().mean())
    assert 0.3 < changed < 0.6  # half relabelled, of which 1/10 keep their label by chance


def _write_idx(path, array: np.ndarray) -> None:
    dims = array.shape
    header = struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_is_read_from_a_local_folder(tmp_path, registry):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 12)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    data = registry.create("dataset", "mnist").load(str(tmp_path))
    assert data.input_shape == (1, 28, 28) and len(data.train) == 30 and len(data.test) == 12
    assert data.train.y.tolist() == [i % 10 for i in range(30)]
    assert float(data.train.x.min()) >= 0.0 and float(data.train.x.max()) <= 1.0
    limited = registry.create("dataset", "mnist", {"limit": "10"}).load(str(tmp_path))
    assert len(limited.train) == 10 and len(limited.test) == 12


def test_imagefolder_splits_class_folders(tmp_path, registry):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(10):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    data = registry.create("dataset", "imagefolder", {"image_size": "8"}).load(str(tmp_path))
    assert data.input_shape == (3, 8, 8) and data.num_classes == 2
    assert len(data.train) == 16 and len(data.test) == 4
    assert sorted(torch.bincount(data.test.y).tolist()) == [2, 2]
    grey = registry.create("dataset", "imagefolder", {"grayscale": "true"}).load(str(tmp_path))
    assert grey.input_shape == (1, 32, 32)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("mnist", "MNIST/raw"),
        ("fashion-mnist", "FashionMNIST/raw"),
    ],
)
def test_a_missing_dataset_says_where_to_put_it(tmp_path, registry, name, expected):
    with pytest.raises(DatasetNotFoundError) as err:
        registry.create("dataset", name).load(str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / expected) in message and "\n" not in message
    with pytest.raises(DatasetNotFoundError, match="--data-root DIR or set PRIVBENCH_DATA"):
        registry.create("dataset", name).load(None)


def test_corrupted_cifar_is_one_line(tmp_path, registry):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not the real file")
    with pytest.raises(DatasetNotFoundError, match="incomplete or corrupted") as err:
        registry.create("dataset", "cifar10").load(str(tmp_path))
    assert "\n" not in str(err.value)


def test_empty_imagefolder_and_unknown_names(tmp_path, registry):
    with pytest.raises(DatasetNotFoundError, match="class folders"):
        registry.create("dataset", "imagefolder").load(str(tmp_path))
    with pytest.raises(UnknownPluginError, match="did you mean 'digits'"):
        registry.create("dataset", "digitz")
