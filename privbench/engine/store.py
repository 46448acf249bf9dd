"""The workspace: a content-addressed model store, a signal cache, run folders and the database.

A trained model is stored under the SHA-256 of everything that determines its training (data,
population, architecture, recipe, defense, keep-mask, seed) as ``weights.safetensors`` and
``meta.json``, with a ``manifest.json`` that holds the entry's key, the SHA-256 and size of both
files and the spec that trained it (so that ``privbench store verify --repair`` can retrain it).
A signal is one safetensors file whose header holds its model's key, its name and the SHA-256 of
its value.

Writes go to a temporary path that is renamed into place, so an interrupted run leaves either a
complete entry or none, and the next run resumes by training only what is missing. Reads are
verified against the digests: a damaged, truncated, swapped or unreadable entry is moved aside
into ``quarantine/`` (never deleted) with the reason, reported in one line through
:attr:`Workspace.on_repair`, and treated as missing, so the audit rebuilds it. Every path is
checked to lie inside the workspace: a symlink that leads out of it is refused.

Entries written before manifests existed (no ``manifest.json``, no digest in a signal's header)
are read as they are; ``privbench store verify`` lists them as unverified.
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
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save, save_file

from privbench.errors import WorkspaceError

STORE_FORMAT = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
META = "meta.json"
QUARANTINE = "quarantine"


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


class DamagedEntry(Exception):
    """A stored entry that fails its checks (internal: the store quarantines it and reports)."""


class Workspace:
    """A folder holding ``models/``, ``signals/``, ``runs/``, ``quarantine/`` and
    ``privbench.db``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.compute_seconds = 0.0
        """Seconds this object spent computing tensors it cached (outermost computations)."""
        self._computing = 0
        self.models = self.root / "models"
        self.signals = self.root / "signals"
        self.runs = self.root / "runs"
        self.quarantine = self.root / QUARANTINE
        self.database = self.root / "privbench.db"
        self.repairs: list[str] = []
        """One line per entry this object moved to quarantine, in order."""
        self.on_repair: Callable[[str], None] | None = None
        """Called with each of those lines as it happens (the audit's callback)."""
        self._verified: dict[str, tuple[int, ...]] = {}
        # Model entries hashed by this object, by the files' identity then: an audit reads each
        # model twice (is it stored? then load it) but hashes it once; a changed file is new.

    def create(self) -> Workspace:
        for path in (self.models, self.signals, self.runs):
            self.inside(path).mkdir(parents=True, exist_ok=True)
        return self

    def inside(self, path: Path) -> Path:
        """*path*, refused when a symlink on the way leads out of the workspace."""
        real = path.resolve()
        if not real.is_relative_to(self.root):
            raise WorkspaceError(
                f"{path} leads out of the workspace {self.root} (to {real}): privbench reads "
                "and writes only inside it; replace the link with a folder"
            )
        return path

    # -- quarantine ----------------------------------------------------------------------------

    def quarantine_entry(self, path: Path, what: str, reason: str) -> Path:
        """Move *path* (a file or folder) to ``quarantine/`` with a ``reason.txt``; report it."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        self.quarantine.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{stamp}-{path.name[:40]}-", dir=self.quarantine))
        os.replace(path, folder / path.name)
        (folder / "reason.txt").write_text(f"{what} ({path}): {reason}\n")
        message = f"store: {what} is damaged ({reason}); moved to {folder}, rebuilt as needed"
        self.repairs.append(message)
        if self.on_repair is not None:
            self.on_repair(message)
        return folder

    # -- models --------------------------------------------------------------------------------

    def model_dir(self, key: str) -> Path:
        return self.inside(self.models / key[:2] / key)

    def has_model(self, key: str) -> bool:
        """Whether model *key* is stored and passes its checks; a damaged entry is moved to
        quarantine and reported (so it counts as missing and is retrained)."""
        folder = self.model_dir(key)
        if not folder.exists():
            return False
        stamp = _stamp(folder)
        if stamp and self._verified.get(key) == stamp:
            return True  # verified by this object and unchanged since: not read again
        try:
            self.read_model(key)
        except DamagedEntry as err:
            self.quarantine_entry(folder, f"model {key[:12]}", str(err))
            return False
        return True

    def read_model(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], bool]:
        """Stored model *key*'s weights and metadata, and whether a manifest verified them.

        :raises DamagedEntry: with the reason, when anything fails its check.
        """
        folder = self.model_dir(key)
        try:
            manifest = _read_json(folder / MANIFEST) if (folder / MANIFEST).exists() else None
            if manifest is not None and not isinstance(manifest, dict):
                raise DamagedEntry(f"{MANIFEST} is not a JSON object")
            if manifest is not None:
                if manifest.get("key") != key:
                    raise DamagedEntry(f"its manifest belongs to {str(manifest.get('key'))[:12]}")
                files = manifest.get("files")
                if not isinstance(files, dict) or set(files) != {WEIGHTS, META}:
                    raise DamagedEntry("its manifest does not list its files")
            raw = {name: (folder / name).read_bytes() for name in (WEIGHTS, META)}
        except FileNotFoundError as err:
            raise DamagedEntry(f"{Path(err.filename).name} is missing") from None
        except OSError as err:
            raise DamagedEntry(f"unreadable: {err.strerror or err}") from None
        stamp = _stamp(folder)
        if manifest is not None and not (stamp and self._verified.get(key) == stamp):
            for name, data in raw.items():
                expected = files[name]
                if not isinstance(expected, dict) or expected.get("bytes") != len(data):
                    raise DamagedEntry(f"{name} has {len(data)} bytes, not as its manifest says")
                if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
                    raise DamagedEntry(f"{name} does not match its SHA-256")
        try:
            meta = json.loads(raw[META])
            state = load(raw[WEIGHTS])
        except (ValueError, SafetensorError) as err:
            raise DamagedEntry(f"unreadable: {str(err).splitlines()[0][:120]}") from None
        if not isinstance(meta, dict):
            raise DamagedEntry(f"{META} is not a JSON object")
        if manifest is not None:
            self._verified[key] = stamp
        return state, meta, manifest is not None

    def manifest(self, key: str) -> dict[str, Any] | None:
        """Model *key*'s manifest as stored (unverified), or None."""
        path = self.model_dir(key) / MANIFEST
        try:
            return _read_json(path)
        except (OSError, DamagedEntry):
            return None

    def save_model(
        self,
        key: str,
        model: torch.nn.Module,
        meta: dict[str, Any],
        origin: dict[str, Any] | None = None,
    ) -> None:
        """Store *model*'s weights and *meta* under *key*, atomically, with a manifest of their
        digests; *origin* (how to retrain it) goes into the manifest. A damaged entry already
        there is quarantined first."""
        final = self.model_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=final.parent))
        try:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            contents = {  # in memory: hashed as written, not read back
                WEIGHTS: save(state),
                META: json.dumps(meta, indent=2, sort_keys=True, default=str).encode(),
            }
            files = {}
            for name, data in contents.items():
                (tmp / name).write_bytes(data)
                _fsync_file(tmp / name)
                files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            manifest = {"format": STORE_FORMAT, "key": key, "files": files}
            if origin is not None:
                manifest["origin"] = origin
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            _fsync_file(tmp / MANIFEST)
            if final.exists():
                self.has_model(key)  # moves a damaged entry aside, so the rename can replace it
            try:
                os.replace(tmp, final)
            except OSError:
                if not self.has_model(key):  # a concurrent writer did not finish it either
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load_model(self, key: str, model: torch.nn.Module) -> dict[str, Any]:
        """Load stored weights into *model* (safetensors: no pickle); returns the metadata.

        :raises DamagedEntry: when the entry fails its checks or does not fit *model* (the
            entry is then in quarantine).
        """
        try:
            state, meta, _ = self.read_model(key)
            try:
                model.load_state_dict(state)
            except RuntimeError as err:
                raise DamagedEntry(
                    f"its weights do not fit the model ({str(err).splitlines()[0][:120]})"
                ) from None
        except DamagedEntry as err:
            if self.model_dir(key).exists():
                self.quarantine_entry(self.model_dir(key), f"model {key[:12]}", str(err))
            raise
        return meta

    # -- signals -------------------------------------------------------------------------------

    def signal_path(self, key: str, name: str) -> Path:
        return self.inside(self.signals / key[:2] / key / f"{name}.safetensors")

    def read_signal(self, key: str, name: str) -> tuple[torch.Tensor, dict[str, str]]:
        """The tensor stored as *name* beside model *key* and its header metadata.

        :raises DamagedEntry: when it fails its checks.
        """
        path = self.signal_path(key, name)
        try:
            data = path.read_bytes()
            value = load(data)["value"]
            metadata = _header_metadata(data)
        except (OSError, SafetensorError, KeyError) as err:
            raise DamagedEntry(f"unreadable: {str(err).splitlines()[0][:120]}") from None
        if "sha256" in metadata:  # written before digests: read as it is
            if metadata.get("key") != key or metadata.get("name") != name:
                raise DamagedEntry("it was stored for another model or signal")
            if tensor_digest(value) != metadata["sha256"]:
                raise DamagedEntry("its values do not match their SHA-256")
        return value, metadata

    def stored_tensor(self, key: str, name: str) -> torch.Tensor | None:
        """The tensor stored as *name* beside model *key*, or None (also when it was damaged:
        it is then in quarantine)."""
        path = self.signal_path(key, name)
        if not path.exists():
            return None
        try:
            return self.read_signal(key, name)[0]
        except DamagedEntry as err:
            self.quarantine_entry(path, f"signal {name} of model {key[:12]}", str(err))
            return None

    def tensor_seconds(self, key: str, name: str) -> float | None:
        """Seconds it took to compute the tensor stored as *name* beside model *key*."""
        path = self.signal_path(key, name)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as handle:
                seconds = (handle.metadata() or {}).get("seconds")
            return float(seconds) if seconds is not None else None
        except (OSError, SafetensorError, ValueError):
            return None

    def cached_tensor(
        self, key: str, name: str, compute: Callable[[], torch.Tensor]
    ) -> torch.Tensor:
        """The tensor stored as *name* beside model *key*, computed and stored on first use."""
        stored = self.stored_tensor(key, name)
        if stored is not None:
            return stored
        path = self.signal_path(key, name)
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
            metadata = {
                "seconds": repr(seconds),
                "key": key,
                "name": name,
                "sha256": tensor_digest(value),
            }
            save_file({"value": value}, tmp, metadata=metadata)
            _fsync_file(Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return value


def _stamp(folder: Path) -> tuple[int, ...]:
    """The identity of an entry's files as they are now (inode, size, modification time)."""
    stamp: list[int] = []
    for name in (MANIFEST, WEIGHTS, META):
        try:
            info = (folder / name).stat()
        except OSError:
            return ()
        stamp += [info.st_ino, info.st_size, info.st_mtime_ns]
    return tuple(stamp)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except ValueError:
        raise DamagedEntry(f"{path.name} is not valid JSON") from None


def _header_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (its first 8 bytes are the header's
    length), read from bytes already checked by ``safetensors.torch.load``."""
    size = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()}
