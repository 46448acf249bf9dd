"""Benchmark suites: a TOML file that expands into a matrix of audits, run with resume.

A suite holds data only (no executable content)::

    [suite]
    name = "smoke"
    seeds = [0]            # one cell per seed
    shadows = 3            # AuditSpec fields shared by every cell
    targets = 2
    population = 200

    [recipe]               # TrainingRecipe fields
    epochs = 5

    [[datasets]]
    name = "digits"

    [[models]]
    name = "small-cnn"
    options = { width = 8 }

    [[defenses]]
    name = "none"

    [[attacks]]
    name = "loss"
    [[attacks]]
    name = "lira"
    options = { variant = "offline" }

Cells are datasets x models x defenses x seeds; each cell runs every attack on one shared pool
of models (an attack named twice, e.g. LiRA online and offline, gets an audit of its own on the
same stored models). Every cell is validated (plugin names, options, data, model/data fit)
before anything trains; an error names the file and the line of the offending entry.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from privbench.bench.executors import Executor, InlineExecutor
from privbench.engine.audit import Audit, AuditSpec, PluginChoice, RunResult, insert_run
from privbench.engine.store import Workspace, digest
from privbench.errors import PrivbenchError
from privbench.plugins import Registry, get_registry
from privbench.plugins.interfaces import Signal, TrainingRecipe
from privbench.results.db import METRIC_COLUMNS, ResultsDB

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_SPEC_FIELDS = {"shadows", "targets", "population", "memorization", "paired", "data_root", "device"}
_LISTS = ("datasets", "models", "defenses", "attacks")


class SuiteError(PrivbenchError):
    """A malformed suite file: the message starts with ``file:line:``."""


@attrs.frozen
class Cell:
    """One audit of the matrix and the suite entries it came from."""

    key: str
    """Content address of the spec: a cell already recorded under it is not run again."""
    label: str
    spec: AuditSpec


@attrs.frozen
class Suite:
    name: str
    path: Path
    cells: tuple[Cell, ...]
    rank_by: str = "tpr_at_0_1_fpr"
    """The metric leaderboards rank by (TPR at 0.1% FPR, as the field now reports)."""


def _line_of(text: str, needle: str) -> int | None:
    """The line where *needle* is a key (``needle =``), else where it first appears."""
    key = re.compile(rf"^\s*{re.escape(needle)}\s*=")
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if key.match(line):
            return number
    for number, line in enumerate(lines, 1):
        if needle in line.split("#")[0]:  # not in a comment that happens to mention it
            return number
    return None


def _choice(entry: Any, what: str, where: Callable[[str], str]) -> PluginChoice:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise SuiteError(f'{where(what)} each [[{what}]] entry needs name = "..."')
    unknown = set(entry) - {"name", "options"}
    if unknown:
        raise SuiteError(
            f"{where(sorted(unknown)[0])} [[{what}]] takes only 'name' and 'options', "
            f"not {', '.join(sorted(unknown))}"
        )
    options = entry.get("options", {})
    if not isinstance(options, dict):
        raise SuiteError(f"{where(entry['name'])} options of '{entry['name']}' must be a table")
    return PluginChoice(entry["name"], options)


def _describe(choice: PluginChoice) -> str:
    if not choice.options:
        return choice.name
    return f"{choice.name}(" + ", ".join(f"{k}={v}" for k, v in choice.options.items()) + ")"


def _attack_groups(attacks: list[PluginChoice]) -> list[tuple[PluginChoice, ...]]:
    """Attacks split so that no audit holds one name twice (first come, first grouped)."""
    groups: list[list[PluginChoice]] = []
    for attack in attacks:
        for group in groups:
            if all(a.name != attack.name for a in group):
                group.append(attack)
                break
        else:
            groups.append([attack])
    return [tuple(g) for g in groups]


def suite_header(path: str | Path) -> tuple[str, str]:
    """A suite's name and ranking metric, read without validating its cells."""
    path = Path(path)
    try:
        header = tomllib.loads(path.read_text()).get("suite", {})
    except FileNotFoundError:
        raise SuiteError(f"{path}: no such suite file") from None
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from None
    return header.get("name", path.stem), header.get("rank_by", "tpr_at_0_1_fpr")


def load_suite(
    path: str | Path,
    registry: Registry | None = None,
    *,
    data_root: str | None = None,
    check_data: bool = True,
) -> Suite:
    """Parse and validate *path*: every cell resolves its plugins and options, loads its data
    (unless ``check_data=False``) and checks that the model takes it. Raises
    :class:`SuiteError` naming file and line.

    The data folder is *data_root*, else the suite's ``data_root``, else ``PRIVBENCH_DATA``,
    resolved here so that jobs on other machines get the same absolute path. It does not enter
    a cell's key: moving the data does not make finished cells run again."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: no such suite file")
    text = path.read_text()

    def where(needle: str) -> str:
        line = _line_of(text, needle)
        return f"{path}:{line}:" if line else f"{path}:"

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from None
    registry = registry or get_registry()
    unknown = set(data) - {"suite", "recipe", *_LISTS}
    if unknown:
        raise SuiteError(f"{where(sorted(unknown)[0])} unknown section '{sorted(unknown)[0]}'")
    header = dict(data.get("suite", {}))
    name = header.pop("name", path.stem)
    seeds = header.pop("seeds", [0])
    rank_by = header.pop("rank_by", "tpr_at_0_1_fpr")
    if rank_by not in METRIC_COLUMNS:
        raise SuiteError(
            f"{where('rank_by')} rank_by '{rank_by}' is not a metric "
            f"(metrics: {', '.join(METRIC_COLUMNS)})"
        )
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds) or not seeds:
        raise SuiteError(f"{where('seeds')} seeds must be a list of integers")
    bad = set(header) - _SPEC_FIELDS
    if bad:
        raise SuiteError(
            f"{where(sorted(bad)[0])} unknown [suite] key '{sorted(bad)[0]}' "
            f"(known: name, seeds, rank_by, {', '.join(sorted(_SPEC_FIELDS))})"
        )
    recipe_values = data.get("recipe", {})
    try:
        recipe = TrainingRecipe(**recipe_values)
    except (TypeError, ValueError) as err:
        culprit = "[recipe]"
        for key, value in recipe_values.items():
            try:
                TrainingRecipe(**{key: value})
            except (TypeError, ValueError):
                culprit = key
                break
        raise SuiteError(f"{where(culprit)} bad [recipe] value '{culprit}': {err}") from None
    lists = {}
    for what in _LISTS:
        entries = data.get(what)
        if not isinstance(entries, list) or not entries:
            raise SuiteError(f"{path}: needs at least one [[{what}]] entry")
        lists[what] = [_choice(e, what, where) for e in entries]
    root = data_root or header.pop("data_root", None) or os.environ.get("PRIVBENCH_DATA")
    header.pop("data_root", None)
    if root:
        header["data_root"] = str(Path(root).expanduser().resolve())
    cells = []
    for dataset in lists["datasets"]:
        for model in lists["models"]:
            for defense in lists["defenses"]:
                for seed in seeds:
                    for attacks in _attack_groups(lists["attacks"]):
                        try:
                            spec = AuditSpec(
                                dataset=dataset,
                                model=model,
                                defense=defense,
                                attacks=attacks,
                                recipe=recipe,
                                seed=seed,
                                **header,
                            )
                        except (TypeError, ValueError) as err:
                            raise SuiteError(
                                f"{where('[suite]')} bad [suite] value: {err}"
                            ) from None
                        label = (
                            f"{dataset.name} / {_describe(model)} / {_describe(defense)} / "
                            f"seed {seed} / " + ", ".join(_describe(a) for a in attacks)
                        )
                        key = cell_key(spec)
                        cells.append(Cell(key, label, spec))
    _validate(cells, registry, path, text, check_data)
    return Suite(name, path, tuple(cells), rank_by)


def _entry_line(text: str, what: str, name: str) -> int | None:
    """The line of ``name = "NAME"`` in the first ``[[what]]`` entry that has it."""
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.split("#")[0].strip()
        if stripped.startswith("["):
            inside = stripped == f"[[{what}]]"
        elif inside and re.fullmatch(rf'name\s*=\s*"{re.escape(name)}"', stripped):
            return number
    return None


def cell_key(spec: AuditSpec) -> str:
    """A cell's content address: its spec less where the data lies and which device runs it
    (neither changes a result; the data's content is in every model's key)."""
    return digest(attrs.asdict(attrs.evolve(spec, data_root=None, device="auto")))[:16]


def _validate(
    cells: list[Cell], registry: Registry, path: Path, text: str, check_data: bool
) -> None:
    checked: set[tuple[str, ...]] = set()
    for cell in cells:
        spec = cell.spec
        try:
            audit = Audit.prepare(spec, registry)
            data_key = (
                repr(spec.dataset),
                repr(spec.model),
                repr(spec.defense),
                str(spec.population),
            )
            if check_data and data_key not in checked:
                dataset, _, _ = audit.load_data()
                audit.check_model(dataset)
                checked.add(data_key)
        except PrivbenchError as err:
            message = str(err)
            # The most specific entry the message quotes: an option's line beats its plugin's.
            quoted = re.findall(r"'([^']+)'", message)
            lines = [_line_of(text, q) for q in quoted]
            # Else the dataset's entry: loading the data is what failed (a missing folder).
            found = [line for line in lines if line is not None] or [
                line for line in [_entry_line(text, "datasets", spec.dataset.name)] if line
            ]
            place = f"{path}:{max(found)}:" if found else f"{path}:"
            raise SuiteError(f"{place} {message}") from None


@attrs.frozen
class CellOutcome:
    cell: Cell
    status: str
    """done (run now), cached (recorded by an earlier bench) or failed."""
    run_id: str | None = None
    error: str | None = None


@attrs.frozen
class TrainingJob:
    """Models of one cell's pool missing from the store: a job of the first wave. One model,
    or several that train as one ensemble (small models under a defense that trains by the
    recipe: :mod:`privbench.engine.ensemble`)."""

    spec: AuditSpec
    indices: tuple[int, ...]
    keys: tuple[str, ...]
    workspace: str


@attrs.frozen
class ScoringJob:
    """One scoring pass: the signals the pending cells' attacks will read from one stored
    model (and a target's test logits), computed into the cache. A job of the second wave."""

    spec: AuditSpec
    index: int
    key: str
    signals: tuple[Signal, ...]
    target: bool
    workspace: str


@attrs.frozen
class CellJob:
    """One cell's audit on its stored pool: a job of the third wave."""

    cell: Cell
    workspace: str


def train_models(job: TrainingJob, registry: Registry | None = None) -> int:
    """Run one training job (in whichever process the executor chose)."""
    audit = Audit.prepare(job.spec, registry)
    return audit.train_models(Workspace(job.workspace), job.indices)


def score_model(job: ScoringJob, registry: Registry | None = None) -> None:
    """Run one scoring job."""
    audit = Audit.prepare(job.spec, registry)
    audit.score_model(Workspace(job.workspace), job.index, job.signals, job.target)


def run_cell(job: CellJob, registry: Registry | None = None) -> RunResult:
    """Run one cell's audit; its run folder is written, the database is left to the driver."""
    return Audit.prepare(job.cell.spec, registry).run(Workspace(job.workspace), insert=False)


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


@attrs.frozen
class SuitePlan:
    """What a bench would do now: the cells already recorded, the jobs of each wave."""

    recorded: list[CellOutcome]
    pending: list[Cell]
    """Cells to run (wave 3), each after its models are stored."""
    training: list[TrainingJob]
    """Models missing from the store (wave 1), each once however many cells share it."""
    scoring: list[ScoringJob]
    """One scoring pass per model the pending cells use (wave 2), before the cells (wave 3)."""
    needs: dict[str, list[str]]
    """Cell key -> the store keys of its pool's models."""
    models: int
    """Distinct models the pending cells use, stored or not."""
    unplanned: list[tuple[Cell, str]]
    """Pending cells whose pool could not be laid out (their data failed to load), and why."""


def plan_suite(
    suite: Suite,
    workspace: Workspace,
    registry: Registry | None = None,
    *,
    retry_failed: bool = False,
) -> SuitePlan:
    """Expand the matrix into jobs against what *workspace* holds (reads, writes nothing)."""
    registry = registry or get_registry()
    recorded, pending = [], []
    previous_of: dict[str, Any] = {}
    if workspace.database.is_file():
        with ResultsDB(workspace.database) as db:
            previous_of = {cell.key: db.suite_cell(suite.name, cell.key) for cell in suite.cells}
    for cell in suite.cells:
        previous = previous_of.get(cell.key)
        if previous is not None and (previous["status"] == "done" or not retry_failed):
            status = "cached" if previous["status"] == "done" else "failed"
            recorded.append(CellOutcome(cell, status, previous["run_id"], previous["error"]))
        else:
            pending.append(cell)
    jobs: list[TrainingJob] = []
    planned: set[str] = set()
    scoring: dict[str, ScoringJob] = {}
    needs: dict[str, list[str]] = {}
    unplanned = []
    root = str(workspace.root)
    for cell in list(pending):
        try:
            audit = Audit.prepare(cell.spec, registry)
            keys = audit.model_keys()
            wanted = audit.signals()
        except Exception as err:
            pending.remove(cell)
            unplanned.append((cell, _error(err)))
            continue
        needs[cell.key] = keys
        targets = cell.spec.targets if cell.spec.targets is not None else len(keys)
        missing = [
            index
            for index, key in enumerate(keys)
            if key not in planned and not workspace.has_model(key)
        ]
        planned.update(keys[index] for index in missing)
        together = audit.ensemble_size() if len(missing) > 1 else 1
        for first in range(0, len(missing), together):
            chunk = tuple(missing[first : first + together])
            jobs.append(TrainingJob(cell.spec, chunk, tuple(keys[i] for i in chunk), root))
        for index, key in enumerate(keys):
            target = index < targets
            known = scoring.get(key)
            if known is None:
                scoring[key] = ScoringJob(cell.spec, index, key, tuple(wanted), target, root)
            else:  # another cell on the same pool: the union of what both read
                more = tuple(s for s in wanted if s not in known.signals)
                scoring[key] = attrs.evolve(
                    known, signals=known.signals + more, target=known.target or target
                )
    models = len({key for keys in needs.values() for key in keys})
    return SuitePlan(recorded, pending, jobs, list(scoring.values()), needs, models, unplanned)


def run_suite(
    suite: Suite,
    workspace: Workspace,
    registry: Registry | None = None,
    *,
    executor: Executor | None = None,
    retry_failed: bool = False,
    on_plan: Callable[[SuitePlan], None] | None = None,
    on_model: Callable[[TrainingJob, BaseException | None], None] | None = None,
    on_score: Callable[[ScoringJob, BaseException | None], None] | None = None,
) -> Iterator[CellOutcome]:
    """Run every cell not yet recorded for this suite in *workspace*, in three waves on
    *executor* (in this process by default): every missing model of every pending cell, each
    trained once however many cells share it; one scoring pass per model (the signals the
    attacks declared); then every pending cell's attacks. A failing job fails the cells that
    need it, with its error, and the others go on. *on_plan* hears the plan before any job
    starts; *on_model* and *on_score* hear each training and scoring job as it finishes."""
    registry = registry or get_registry()
    executor = executor or InlineExecutor()
    workspace.create()
    plan = plan_suite(suite, workspace, registry, retry_failed=retry_failed)
    yield from plan.recorded

    def finish(outcome: CellOutcome, result: RunResult | None = None) -> CellOutcome:
        def record(db: ResultsDB) -> None:
            db.record_suite_cell(suite.name, outcome.cell.key, outcome.cell.label,
                                 outcome.status, outcome.run_id, outcome.error)  # fmt: skip

        if result is not None:
            insert_run(workspace, result, then=record)  # the run and its cell: one transaction
        else:
            with ResultsDB(workspace.database) as db:
                record(db)
        return outcome

    for cell, error in plan.unplanned:
        yield finish(CellOutcome(cell, "failed", error=error))
    if on_plan is not None:
        on_plan(plan)

    def runnable(function: Callable[..., Any]) -> Callable[..., Any]:
        # In this process jobs use this registry (it may hold plugins loaded by hand);
        # elsewhere each worker loads its own.
        return functools.partial(function, registry=registry) if executor.in_process else function

    # Wave 1: the missing models.
    failed: dict[str, str] = {}
    for job, result in executor.map(runnable(train_models), plan.training):
        error = result if isinstance(result, BaseException) else None
        if error is not None:
            which = ", ".join(map(str, job.indices))
            for key in job.keys:
                failed[key] = f"model(s) {which} of its pool did not train: {_error(error)}"
        if on_model is not None:
            on_model(job, error)

    # Wave 2: one scoring pass per model. Only a head start: a pass that fails leaves its
    # signals to the cell, which computes them itself or fails with the reason.
    stored = [job for job in plan.scoring if job.key not in failed]
    for job, result in executor.map(runnable(score_model), stored):
        if on_score is not None:
            on_score(job, result if isinstance(result, BaseException) else None)

    # Wave 3: every cell whose models are all stored.
    cell_jobs = []
    for cell in plan.pending:
        broken = [failed[key] for key in plan.needs[cell.key] if key in failed]
        if broken:
            yield finish(CellOutcome(cell, "failed", error=broken[0]))
        else:
            cell_jobs.append(CellJob(cell, str(workspace.root)))
    for job, result in executor.map(runnable(run_cell), cell_jobs):
        if isinstance(result, BaseException):
            yield finish(CellOutcome(job.cell, "failed", error=_error(result)))
        else:
            yield finish(CellOutcome(job.cell, "done", result.run_id), result)
