"""Checking a whole workspace (``privbench store verify``): every stored model against its
manifest, every signal against the digest in its header, every run folder against the digest
its record holds, and the database's own integrity check.

With ``repair``, a damaged model or signal is moved to ``quarantine/`` (never deleted) and a
model whose manifest says how it was trained is retrained at once, by the same seeded recipe,
under the same key; a signal is recomputed by the next audit that reads it. Run folders and the
database are only reported: they hold finished results, which privbench never rebuilds or moves.
Leftover temporary folders of writes that were killed are moved to quarantine too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from privbench.engine.preflight import check_database
from privbench.engine.store import DamagedEntry, Workspace
from privbench.errors import PrivbenchError, WorkspaceError
from privbench.plugins import Registry

Status = str
"""``ok``; ``unverified`` (written before digests existed); ``damaged`` (found, left as it is);
``quarantined`` (moved aside, rebuilt when needed); ``rebuilt`` (moved aside and retrained)."""


@attrs.frozen
class Finding:
    kind: str
    """``model``, ``signal``, ``run``, ``database`` or ``leftover``."""
    path: Path
    status: Status
    detail: str = ""

    @property
    def line(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.status}: {self.kind} {self.path}{detail}"


@attrs.frozen
class VerifyReport:
    findings: tuple[Finding, ...]
    seconds: float

    def count(self, status: Status) -> int:
        return sum(finding.status == status for finding in self.findings)

    @property
    def problems(self) -> list[Finding]:
        """What is still wrong: entries found damaged and not repaired."""
        return [f for f in self.findings if f.status == "damaged"]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_workspace(
    workspace: Workspace,
    *,
    repair: bool = False,
    registry: Registry | None = None,
    on_finding: Callable[[Finding], None] | None = None,
) -> VerifyReport:
    """Check every entry of *workspace*; with *repair*, quarantine and rebuild what fails.

    :raises WorkspaceError: when *workspace* is not a privbench workspace.
    """
    if not workspace.root.is_dir() or not (
        workspace.models.is_dir() or workspace.database.is_file()
    ):
        raise WorkspaceError(f"{workspace.root} is not a privbench workspace (no models/, no db)")
    started = time.perf_counter()
    findings: list[Finding] = []

    def found(finding: Finding) -> None:
        findings.append(finding)
        if on_finding is not None:
            on_finding(finding)

    for leftover in _leftovers(workspace):
        if repair:
            where = workspace.quarantine_entry(leftover, "leftover", "an interrupted write")
            found(Finding("leftover", leftover, "quarantined", f"moved to {where}"))
        else:
            found(Finding("leftover", leftover, "damaged", "an interrupted write"))
    for key in _model_keys(workspace):
        found(_check_model(workspace, key, repair, registry))
    for key, name, path in _signals(workspace):
        found(_check_signal(workspace, key, name, path, repair))
    for folder in sorted(workspace.runs.glob("*/")) if workspace.runs.is_dir() else ():
        if not folder.name.startswith("."):
            found(_check_run(folder))
    if workspace.database.is_file():
        found(_check_database(workspace.database))
    return VerifyReport(tuple(findings), time.perf_counter() - started)


def _leftovers(workspace: Workspace) -> Iterator[Path]:
    """Temporary files and folders of writes that never finished (their names start with a
    dot: the atomic writes' staging names)."""
    for root in (workspace.models, workspace.signals, workspace.runs):
        if root.is_dir():
            yield from sorted(root.rglob(".*"))


def _model_keys(workspace: Workspace) -> list[str]:
    if not workspace.models.is_dir():
        return []
    return sorted(
        folder.name
        for folder in workspace.models.glob("*/*")
        if folder.is_dir() and not folder.name.startswith(".")
    )


def _signals(workspace: Workspace) -> list[tuple[str, str, Path]]:
    if not workspace.signals.is_dir():
        return []
    return [
        (path.parent.name, path.name.removesuffix(".safetensors"), path)
        for path in sorted(workspace.signals.glob("*/*/*.safetensors"))
        if not path.name.startswith(".")
    ]


def _check_model(
    workspace: Workspace, key: str, repair: bool, registry: Registry | None
) -> Finding:
    folder = workspace.model_dir(key)
    try:
        _, _, verified = workspace.read_model(key)
    except DamagedEntry as err:
        reason = str(err)
    else:
        if verified:
            return Finding("model", folder, "ok")
        return Finding("model", folder, "unverified", "stored before manifests; no digest")
    if not repair:
        return Finding("model", folder, "damaged", reason)
    origin = (workspace.manifest(key) or {}).get("origin")
    where = workspace.quarantine_entry(folder, f"model {key[:12]}", reason)
    if not isinstance(origin, dict):
        return Finding(
            "model", folder, "quarantined",
            f"{reason}; moved to {where}; no recorded spec: the next audit that needs it "
            "retrains it",
        )  # fmt: skip
    try:
        _retrain(workspace, key, origin, registry)
    except PrivbenchError as err:
        return Finding("model", folder, "quarantined", f"{reason}; moved to {where}; {err}")
    return Finding("model", folder, "rebuilt", f"{reason}; moved to {where} and retrained")


def _retrain(workspace: Workspace, key: str, origin: dict, registry: Registry | None) -> None:
    """Retrain model *key* from the spec and pool index its manifest recorded."""
    from privbench.engine import audit, fitting
    from privbench.engine.spec import spec_from_record

    try:
        spec = spec_from_record(origin["spec"])
        index = int(origin["index"])
    except (KeyError, TypeError, ValueError) as err:
        raise PrivbenchError(f"its recorded spec cannot be read ({err})") from None
    pool = audit.plan(spec, registry)
    if not 0 <= index < len(pool) or pool.keys[index] != key:
        raise PrivbenchError(
            "its recorded spec no longer gives this key (the data or a plugin changed): "
            "the next audit that needs it retrains it"
        )
    fitting.train_models(pool, workspace, [index])


def _check_signal(workspace: Workspace, key: str, name: str, path: Path, repair: bool) -> Finding:
    try:
        _, metadata = workspace.read_signal(key, name)
    except DamagedEntry as err:
        if not repair:
            return Finding("signal", path, "damaged", str(err))
        where = workspace.quarantine_entry(path, f"signal {name} of model {key[:12]}", str(err))
        return Finding(
            "signal", path, "quarantined", f"{err}; moved to {where}; recomputed when next read"
        )
    if "sha256" not in metadata:
        return Finding("signal", path, "unverified", "stored before digests")
    return Finding("signal", path, "ok")


def _check_run(folder: Path) -> Finding:
    from privbench.results.runs import read_run

    try:
        read_run(folder)
    except PrivbenchError as err:
        return Finding("run", folder, "damaged", f"{err} (finished results: left as they are)")
    return Finding("run", folder, "ok")


def _check_database(path: Path) -> Finding:
    try:
        check_database(path, writable=False, thorough=True)
    except WorkspaceError as err:
        return Finding("database", path, "damaged", str(err))
    return Finding("database", path, "ok")
