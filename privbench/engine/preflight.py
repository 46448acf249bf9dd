"""Checks that run before an audit or a suite does any work, so that what would fail late (a
workspace that cannot be written, a damaged results database, a pool or a model too large for
this machine) fails first, in one line: the workspace and its database, an output file's
folder, and the memory a pool or a model would need against what the machine has free.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

import torch

from privbench.errors import PrivbenchError, WorkspaceError
from privbench.results.db import damaged_database, is_damage

GIB = 1 << 30


def _existing_ancestor(path: Path) -> Path:
    """*path* itself if anything is there, else its nearest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def _probe_write(folder: Path) -> OSError | None:
    """Whether a file can be created in *folder*, found by creating (and removing) one: the
    permission bits do not tell, since root ignores them and read-only mounts do not show."""
    try:
        fd, name = tempfile.mkstemp(prefix=".privbench-probe-", dir=folder)
    except OSError as err:
        return err
    os.close(fd)
    os.unlink(name)
    return None


def check_folder(path: Path, what: str, flag: str) -> None:
    """That *path* is, or can be made, a folder privbench writes in; *what* names it and
    *flag* is the option that gave it (both for the message)."""
    found = _existing_ancestor(path)
    if not found.is_dir():
        where = "is a file" if found == path else f"lies under {found}, which is a file"
        raise WorkspaceError(
            f"{what} {path} {where}, not a folder: give {flag} a folder (or a path to create one)"
        )
    problem = _probe_write(found)
    if problem is not None:
        reason = problem.strerror or str(problem)
        where = "is not writable" if found == path else f"cannot be made: {found} is not writable"
        raise WorkspaceError(
            f"{what} {path} {where} ({reason}): give {flag} a folder you can write to, or fix "
            "its permissions"
        )


def check_workspace(root: Path, *, database: bool = True) -> None:
    """That workspace *root* can hold models, signals and runs, and (with *database*) that its
    results database, if there is one, opens and passes a quick check."""
    root = Path(root)
    check_folder(root, "workspace", "--workspace/-w")
    for name in ("models", "signals", "runs"):
        folder = root / name
        if folder.exists() and not folder.is_dir():
            raise WorkspaceError(
                f"workspace {root} holds a file {name} where its {name} folder goes: move it aside"
            )
        if folder.is_dir() and (problem := _probe_write(folder)) is not None:
            raise WorkspaceError(
                f"workspace folder {folder} is not writable ({problem.strerror or problem}): "
                "fix its permissions or give --workspace/-w another folder"
            )
    if database:
        check_database(root / "privbench.db")


def check_database(path: Path, *, writable: bool = True, thorough: bool = False) -> None:
    """That the results database at *path*, if there is one, is a SQLite file that passes
    ``PRAGMA quick_check`` (``integrity_check`` if *thorough*, as ``privbench store verify``
    asks; read-only; a busy database is left to the writer's own wait) and, with *writable*,
    that it can take the run an audit will insert at its end."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_file():
        raise WorkspaceError(
            f"the results database {path} is not a file: move it aside and run again"
        )
    if writable:
        try:
            with open(path, "r+b"):  # opened for writing, nothing written
                pass
        except OSError as err:
            raise WorkspaceError(
                f"the results database {path} is not writable ({err.strerror or err}): fix "
                "its permissions or give --workspace/-w another folder"
            ) from None
    connection = None
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        pragma = "integrity_check" if thorough else "quick_check"
        rows = connection.execute(f"PRAGMA {pragma}").fetchall()
    except sqlite3.DatabaseError as err:
        if is_damage(err):
            raise damaged_database(path, str(err)) from None
        return  # locked or busy: not damage, and the real open waits for its turn
    finally:
        if connection is not None:
            connection.close()
    if [tuple(row) for row in rows] != [("ok",)]:
        check = "integrity check" if thorough else "quick check"
        raise damaged_database(path, f"{check}: {rows[0][0]}")


def check_output_file(path: Path, flag: str) -> None:
    """That a file can be written at *path* (given by *flag*): not a folder, in a folder that
    exists and can be written in. Nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise PrivbenchError(f"{flag} {path} is a folder: give a file path (such as {path}/out)")
    parent = path.parent
    found = _existing_ancestor(parent)
    if not found.is_dir():
        raise PrivbenchError(f"{flag} {path}: {found} is a file, not a folder; give another path")
    if found != parent:
        raise PrivbenchError(
            f"{flag} {path}: the folder {parent} does not exist; create it or give another path"
        )
    problem = _probe_write(parent)
    if problem is not None:
        raise PrivbenchError(
            f"{flag} {path}: cannot write in {parent} ({problem.strerror or problem}); "
            "give another path"
        )


def _cgroup_free() -> int | None:
    """Bytes left under this process's cgroup (v2) memory limit, or None without one: in a
    container /proc/meminfo shows the host's memory, not the limit that kills the process."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return None
    if limit == "max":
        return None
    try:
        return max(0, int(limit) - int(used))
    except ValueError:
        return None


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get without swapping: MemAvailable (Linux), within
    a cgroup's limit; else free physical pages; None when the system does not say."""
    found = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        found = None
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            found = None
    limited = _cgroup_free()
    if limited is not None:
        found = limited if found is None else min(found, limited)
    return found


def device_memory(device: torch.device) -> int | None:
    """Bytes free on *device* for training: the GPU's free memory on CUDA, else the machine's."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    return available_memory()


def gib(count: float) -> str:
    """*count* bytes in GiB, as a message shows them."""
    value = count / GIB
    return f"{value:.1f} GiB" if value < 1e6 else f"{value:.1e} GiB"
