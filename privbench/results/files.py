"""Writing result files atomically: to a temporary file beside the target, then renamed over
it, so a reader (or a crash) never sees half a file."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 honours the umask; mkstemp's 0o600 would survive the rename.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _jsonable(value: Any) -> Any:
    # NumPy scalars and arrays keep their numbers; anything else unknown (paths) becomes text.
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n"
    atomic_write(Path(path), lambda handle: handle.write(text.encode()))
