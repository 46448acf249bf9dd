"""The workspace: a content-addressed model store, a signal cache, run folders and the database.

A trained model is stored under the SHA-256 of everything that determines its training (data,
population, architecture, recipe, defense, keep-mask, seed) as ``weights.safetensors`` plus
``meta.json``. Writes go to a temporary folder that is renamed into place, so an interrupted run
leaves either a complete entry or none, and the next run resumes by training only what is
missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

STORE_FORMAT = 1


def digest(spec: Any) -> str:
    """SHA-256 of a JSON-able spec in canonical form."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def tensor_digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


class Workspace:
    """A folder holding ``models/``, ``signals/``, ``runs/`` and ``privbench.db``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.compute_seconds = 0.0
        """Seconds this object spent computing tensors it cached (outermost computations)."""
        self._computing = 0
        self.models = self.root / "models"
        self.signals = self.root / "signals"
        self.runs = self.root / "runs"
        self.database = self.root / "privbench.db"

    def create(self) -> Workspace:
        for path in (self.models, self.signals, self.runs):
            path.mkdir(parents=True, exist_ok=True)
        return self

    # -- models --------------------------------------------------------------------------------

    def model_dir(self, key: str) -> Path:
        return self.models / key[:2] / key

    def has_model(self, key: str) -> bool:
        return (self.model_dir(key) / "meta.json").is_file()

    def save_model(self, key: str, model: torch.nn.Module, meta: dict[str, Any]) -> None:
        final = self.model_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=final.parent))
        try:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(tmp / "weights.safetensors"))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            for name in ("weights.safetensors", "meta.json"):
                _fsync_file(tmp / name)
            try:
                os.replace(tmp, final)
            except OSError:
                if not self.has_model(key):  # a concurrent writer did not finish it either
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load_model(self, key: str, model: torch.nn.Module) -> dict[str, Any]:
        """Load stored weights into *model* (safetensors: no pickle); returns the metadata."""
        folder = self.model_dir(key)
        model.load_state_dict(load_file(str(folder / "weights.safetensors")))
        return json.loads((folder / "meta.json").read_text())

    # -- signals -------------------------------------------------------------------------------

    def stored_tensor(self, key: str, name: str) -> torch.Tensor | None:
        """The tensor stored as *name* beside model *key*, or None."""
        path = self.signals / key[:2] / key / f"{name}.safetensors"
        return load_file(str(path))["value"] if path.is_file() else None

    def tensor_seconds(self, key: str, name: str) -> float | None:
        """Seconds it took to compute the tensor stored as *name* beside model *key*."""
        path = self.signals / key[:2] / key / f"{name}.safetensors"
        if not path.is_file():
            return None
        with safe_open(str(path), "pt") as handle:
            seconds = (handle.metadata() or {}).get("seconds")
        return float(seconds) if seconds is not None else None

    def cached_tensor(
        self, key: str, name: str, compute: Callable[[], torch.Tensor]
    ) -> torch.Tensor:
        """The tensor stored as *name* beside model *key*, computed and stored on first use."""
        stored = self.stored_tensor(key, name)
        if stored is not None:
            return stored
        path = self.signals / key[:2] / key / f"{name}.safetensors"
        started = time.perf_counter()
        self._computing += 1
        try:
            value = compute().detach().cpu().contiguous()
        finally:
            self._computing -= 1
        seconds = time.perf_counter() - started
        if not self._computing:  # a computation inside another is already in the outer time
            self.compute_seconds += seconds
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            # What it cost is kept with it: an attack's cost counts the signals it reads.
            save_file({"value": value}, tmp, metadata={"seconds": repr(seconds)})
            _fsync_file(Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return value
