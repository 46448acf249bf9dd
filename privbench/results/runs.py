"""Runs on disk: a run folder's ``results.json`` and per-sample scores, written atomically and
read back verified, and :func:`load_run`, which finds a run by its folder or by its id in a
workspace database.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from privbench.errors import PrivbenchError
from privbench.results.db import ResultsDB
from privbench.results.files import write_json_atomic
from privbench.results.parts import AttackResult, MembershipScores
from privbench.results.result import SCORES_FILE, AuditResult

_PARTS = ("score", "member", "sample", "target")


def write_scores(folder: Path, attacks: Sequence[AttackResult]) -> str | None:
    """Every attack's per-sample scores in one safetensors file; its SHA-256 (None: none)."""
    tensors = {}
    for attack in attacks:
        if attack.scores is not None:
            for part in _PARTS:
                value = np.ascontiguousarray(getattr(attack.scores, part))
                tensors[f"{attack.name}/{part}"] = torch.from_numpy(value)
    if not tensors:
        return None
    data = save(tensors)  # in memory: hashed as written, not read back
    (folder / SCORES_FILE).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_scores(folder: Path, sha256: str) -> dict[str, MembershipScores]:
    """The scores file of a run, refused unless it is the one its record describes."""
    path = folder / SCORES_FILE
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PrivbenchError(f"cannot read {path}: {err.strerror or err}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise PrivbenchError(
            f"{path} does not match the digest in its results.json: the file was changed or "
            "damaged after the run"
        )
    try:
        tensors = load(data)  # the bytes just verified, not a second read of the file
    except SafetensorError as err:
        raise PrivbenchError(f"{path} is not a readable safetensors file: {err}") from None
    names = {key.rsplit("/", 1)[0] for key in tensors}
    return {
        name: MembershipScores(*(tensors[f"{name}/{part}"].numpy() for part in _PARTS))
        for name in names
    }


def write_run(folder: Path, result: AuditResult) -> None:
    """*result*'s scores then its ``results.json`` into *folder* (which the caller renames into
    place: :mod:`privbench.engine.recording`)."""
    result.scores_digest = write_scores(folder, result.attacks)
    write_json_atomic(folder / "results.json", result.to_record())


def read_run(folder: str | os.PathLike[str]) -> AuditResult:
    """The run in *folder*: its record and per-sample scores, both verified."""
    folder = Path(folder).expanduser()
    path = folder / "results.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise PrivbenchError(f"no run at {folder} (it has no results.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PrivbenchError(f"{path} is not a readable run record: {err}") from None
    if not isinstance(record, dict):
        raise PrivbenchError(f"{path} is not a privbench run record")
    digest = record.get("scores", {}).get("sha256")
    scores = read_scores(folder, digest) if digest else None
    return AuditResult.from_record(record, folder.resolve(), scores)


def find_run(run: str | os.PathLike[str], workspace: str | os.PathLike[str]) -> AuditResult:
    """An earlier run as the :class:`~privbench.results.result.AuditResult` it returned: *run*
    is its folder (or its ``results.json``), or its id, a unique prefix of one, or ``latest``,
    looked up in the database of *workspace*."""
    candidate = Path(run).expanduser()
    if candidate.name == "results.json" and candidate.is_file():
        return read_run(candidate.parent)
    if candidate.is_dir():
        return read_run(candidate)
    root = Path(workspace).expanduser()
    database = root / "privbench.db"
    if not database.is_file():
        raise PrivbenchError(f"no run folder '{run}' and no results database at {database}")
    with ResultsDB(database) as db:
        record = db.find_run(str(run))
    folder = root / "runs" / record["run_id"]
    if not (folder / "results.json").is_file():  # its files are gone: what the database holds
        return AuditResult.from_record(record)
    return read_run(folder)
