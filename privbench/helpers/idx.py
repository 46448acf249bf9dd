"""The idx file format of the MNIST family (MNIST, Fashion-MNIST, KMNIST, EMNIST), read as it
is distributed, gzipped or not, and verified while it is read: a file that is truncated, has
bytes to spare, or is not idx at all is refused with one line naming it, never parsed into
wrong pixels.

An idx file is a big-endian header (two zero bytes, a type code, the number of dimensions, then
each dimension as a 32-bit unsigned integer) followed by the array's values in C order.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from privbench.errors import DatasetNotFoundError

IDX_TYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
"""The idx type codes and the numpy dtype each stores (big-endian, as the format fixes)."""

_GZIP_MAGIC = b"\x1f\x8b"


def _raw_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip (told by its content, not its name)."""
    data = path.read_bytes()
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as err:
        raise DatasetNotFoundError(
            f"{path} is a damaged gzip file ({' '.join(str(err).split()) or 'truncated'}); "
            "replace it with the original"
        ) from None


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in the idx file at *path* (gzipped or not).

    Raises :class:`privbench.DatasetNotFoundError`, one line naming the file, when the file is
    missing, is not idx (wrong magic number), or holds fewer or more bytes than its header says.
    """
    path = Path(path)
    try:
        data = _raw_bytes(path)
    except OSError as err:
        raise DatasetNotFoundError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in IDX_TYPES or data[3] == 0:
        magic = data[:4].hex() or "nothing"
        raise DatasetNotFoundError(
            f"{path} is not an idx file (its first bytes are {magic}, not 0000 followed by a "
            "type code and a dimension count); replace it with the original"
        )
    dtype, ndim = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetNotFoundError(f"{path} is truncated inside its idx header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        shape_text = "x".join(map(str, shape))
        state = "truncated" if len(data) - header < expected else "longer than its header says"
        raise DatasetNotFoundError(
            f"{path} is {state}: a {shape_text} array needs {expected} bytes after the header, "
            f"it has {len(data) - header}; replace it with the original"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
