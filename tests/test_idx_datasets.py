"""MNIST and Fashion-MNIST from idx files as they ship (gzipped or not, flat or in torchvision's
layout), broken files refused with one line, and the real Fashion-MNIST where Debian's
``dataset-fashion-mnist`` is installed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from privbench_plugins.datasets.idx import DEBIAN_FASHION_MNIST, FILES, MNIST, FashionMNIST

import privbench
from privbench import DatasetNotFoundError
from privbench.helpers.idx import IDX_TYPES, read_idx

CODES = {np.dtype(dtype): code for code, dtype in IDX_TYPES.items()}


def idx_bytes(array: np.ndarray) -> bytes:
    """*array* in the idx format: magic (0, 0, type code, ndim), big-endian dims, then values."""
    dtype = array.dtype.newbyteorder(">")  # idx values are big-endian; bytes have no order
    header = struct.pack(">HBB", 0, CODES[dtype], array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fake_mnist(folder: Path, *, gz: bool = False, train: int = 30, test: int = 12) -> np.ndarray:
    """The four files in *folder*: random train images with labels ``i % 10``, the test split
    the first train images with labels ``(i + 3) % 10``; returns the train images."""
    images = np.random.default_rng(0).integers(0, 256, (train, 28, 28)).astype(np.uint8)
    arrays = (images, np.arange(train) % 10, images[:test], (np.arange(test) + 3) % 10)
    for name, array in zip(FILES, arrays, strict=True):
        write_idx(folder / name, array.astype(np.uint8), gz=gz)
    return images


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- the idx format -------------------------------------------------------------------------------

ARRAYS = st.sampled_from(sorted(CODES, key=str)).flatmap(
    lambda dtype: hnp.arrays(
        dtype, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5), elements=None
    )
)


@settings(max_examples=60, deadline=None)
@given(array=ARRAYS, gz=st.booleans())
def test_read_idx_returns_what_was_written(tmp_path_factory, array, gz):
    path = write_idx(tmp_path_factory.mktemp("idx") / "a-idx", array, gz=gz)
    read = read_idx(path)
    assert read.shape == array.shape and read.dtype.kind == array.dtype.kind
    np.testing.assert_array_equal(read, array)


def test_the_header_is_big_endian(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(b"\x00\x00\x0c\x01\x00\x00\x00\x02" + b"\x00\x00\x01\x00\xff\xff\xff\xfe")
    assert read_idx(path).tolist() == [256, -2]


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda b: b[:-5], "is truncated: a 3x4 array needs 12 bytes after the header, it has 7"),
        (lambda b: b + b"\x00", "longer than its header says"),
        (lambda b: b[:6], "truncated inside its idx header"),
        (lambda b: b"\x08\x03" + b[2:], "is not an idx file (its first bytes are 0803"),
        (lambda b: b[:2] + b"\x07" + b[3:], "is not an idx file"),
        (lambda b: b"", "its first bytes are nothing"),
        (lambda b: gzip.compress(b)[:-9], "is a damaged gzip file"),
    ],
)
def test_broken_files_are_one_line_naming_the_file(tmp_path, damage, says):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(idx_bytes(np.zeros((3, 4), np.uint8))))
    with pytest.raises(DatasetNotFoundError) as err:
        read_idx(path)
    assert says in one_line(err) and str(path) in str(err.value)


# -- MNIST and Fashion-MNIST ----------------------------------------------------------------------


def test_mnist_is_read_from_a_flat_folder_of_gzipped_files(tmp_path):
    images = fake_mnist(tmp_path, gz=True)
    data = MNIST().load(str(tmp_path))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.train) == 30 and len(data.test) == 12
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert data.train.y.tolist() == [i % 10 for i in range(30)]
    assert data.test.y.tolist() == [(i + 3) % 10 for i in range(12)]
    expected = torch.tensor(images, dtype=torch.float32)[:, None] / 255.0
    assert torch.equal(data.train.x, expected)
    assert data.mean[0] == pytest.approx(float(expected.mean()), rel=1e-5)
    assert not data.hflip_preserves_label


def test_torchvisions_layout_and_plain_files_read_the_same(tmp_path):
    fake_mnist(tmp_path / "flat", gz=True)
    fake_mnist(tmp_path / "tv" / "FashionMNIST" / "raw")
    flat, torchvision_layout = (
        FashionMNIST().load(str(tmp_path / where)) for where in ("flat", "tv")
    )
    assert torch.equal(flat.train.x, torchvision_layout.train.x)
    assert torch.equal(flat.test.y, torchvision_layout.test.y)
    assert flat.hflip_preserves_label


def test_without_a_data_root_fashion_mnist_reads_the_debian_folder(tmp_path, monkeypatch):
    fake_mnist(tmp_path, gz=True)
    monkeypatch.setattr(FashionMNIST, "default_folder", tmp_path)
    assert len(FashionMNIST().load(None).train) == 30
    monkeypatch.setattr(FashionMNIST, "default_folder", tmp_path / "absent")
    with pytest.raises(DatasetNotFoundError) as err:
        FashionMNIST().load(None)
    message = one_line(err)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-root DIR" in message


def test_mnist_has_no_default_folder():
    with pytest.raises(DatasetNotFoundError) as err:
        MNIST().load(None)
    assert "--data-root DIR or set PRIVBENCH_DATA" in one_line(err)


def test_a_missing_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        FashionMNIST().load(str(tmp_path))
    message = one_line(err)
    assert f"{tmp_path} or {tmp_path}/FashionMNIST/raw" in message
    assert "t10k-labels-idx1-ubyte" in message


def test_a_partial_folder_names_the_missing_file(tmp_path):
    fake_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        MNIST().load(str(tmp_path))
    assert f"{tmp_path} lacks t10k-labels-idx1-ubyte" in one_line(err)


def _replace(folder: Path, name: str, array: np.ndarray) -> Path:
    (folder / f"{name}.gz").unlink()
    return write_idx(folder / name, array, gz=True)


@pytest.mark.parametrize(
    ("name", "array", "says"),
    [
        (
            "train-labels-idx1-ubyte",
            np.arange(29, dtype=np.uint8) % 10,
            "holds 29 labels for the 30",
        ),
        ("train-labels-idx1-ubyte", np.zeros((30, 2), np.uint8), "holds a 30x2 array of labels"),
        ("t10k-labels-idx1-ubyte", np.full(12, 10, np.uint8), "labels outside 0..9"),
        ("train-images-idx3-ubyte", np.zeros((30, 28, 28), ">i4"), "not N x height x width"),
        ("train-images-idx3-ubyte", np.zeros((30, 784), np.uint8), "not N x height x width"),
        ("t10k-images-idx3-ubyte", np.zeros((12, 32, 32), np.uint8), "different datasets"),
    ],
)
def test_files_that_do_not_belong_together_are_refused(tmp_path, name, array, says):
    fake_mnist(tmp_path, gz=True)
    path = _replace(tmp_path, name, array)
    with pytest.raises(DatasetNotFoundError) as err:
        FashionMNIST().load(str(tmp_path))
    message = one_line(err)
    assert says in message
    if "different" not in says:
        assert str(path) in message


def test_a_truncated_file_in_a_dataset_is_named(tmp_path):
    fake_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetNotFoundError) as err:
        FashionMNIST().load(str(tmp_path))
    assert str(path) in one_line(err) and "damaged gzip" in str(err.value)


def test_limit_takes_a_seeded_subset_of_train_only(tmp_path):
    images = fake_mnist(tmp_path)
    limited = FashionMNIST(limit=10).load(str(tmp_path))
    assert len(limited.train) == 10 and len(limited.test) == 12
    full = {img.tobytes() for img in images}
    assert all((row[0] * 255).round().byte().numpy().tobytes() in full for row in limited.train.x)
    assert limited.mean[0] == pytest.approx(float(limited.train.x.mean()), rel=1e-5)
    assert torch.equal(FashionMNIST(limit=10).load(str(tmp_path)).train.x, limited.train.x)
    assert not torch.equal(
        FashionMNIST(limit=10, seed=1).load(str(tmp_path)).train.x, limited.train.x
    )
    with pytest.raises(ValueError, match="limit"):
        FashionMNIST(limit=0)


# -- the real Fashion-MNIST -----------------------------------------------------------------------

needs_debian_copy = pytest.mark.skipif(
    not all((DEBIAN_FASHION_MNIST / f"{name}.gz").is_file() for name in FILES),
    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION_MNIST}); "
    "`make test` installs it where apt-get can",
)


@needs_debian_copy
def test_the_real_fashion_mnist_is_the_published_dataset():
    data = FashionMNIST().load(None)
    assert len(data.train) == 60_000 and len(data.test) == 10_000
    assert data.input_shape == (1, 28, 28)
    # Xiao et al. 2017: 6,000 training and 1,000 test images of each of the 10 classes.
    assert torch.bincount(data.train.y).tolist() == [6000] * 10
    assert torch.bincount(data.test.y).tolist() == [1000] * 10
    assert 0.28 < data.mean[0] < 0.29 and 0.35 < data.std[0] < 0.36


@needs_debian_copy
def test_an_audit_of_the_preset_on_a_slice_of_fashion_mnist_finds_leakage(tmp_path):
    result = privbench.audit(
        preset="fashion-mnist",
        attacks=["loss", "lira"],
        population=1000,
        shadows=2,
        epochs=20,
        batch_size=32,  # 500 members: 16 steps an epoch (the preset's 128 under-fits them)
        workspace=tmp_path,
    )
    assert result.spec.dataset.name == "fashion-mnist" and result.spec.model.name == "conv-fc"
    assert result.utility.test_accuracy > 0.7  # it learned clothing from 500 images
    for attack in result.attacks:
        assert attack.metrics.auc > 0.55, attack.name  # 500 members, 20 epochs: it overfits


@needs_debian_copy
def test_the_cli_runs_fashion_mnist_without_a_data_root(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PRIVBENCH_DATA", raising=False)
    args = ["run", "--dataset", "fashion-mnist", "--preset", "fashion-mnist"]
    args += ["--population", "200", "--epochs", "1", "--shadows", "1", "-w", str(tmp_path), "-q"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "fashion-mnist" in out and "conv-fc" in out
