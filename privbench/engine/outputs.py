"""Audits of outputs alone (post hoc, black box): a model's per-sample outputs on members and
non-members (logits, probabilities, or losses), and optionally the same outputs of reference
models with their keep matrix (LiRA's layout, models x samples), audited by the same attack
plugins as a full audit, into the same kind of result, database and leaderboards.

Each model becomes a lookup table that answers exactly the population's own queries: an attack
that asks for anything else (input gradients, perturbed or mirrored inputs) is refused with the
reason rather than answered wrongly. Outputs are turned into logits once: probabilities by their
log, losses by the two-class view ``(p_y, 1 - p_y)`` with ``p_y = exp(-loss)``, which is exact for
every attack that reads the true class's probability (loss, confidence, LiRA, RMIA and the
calibrated baselines) and gives the two-class entropy to those that read the others.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from privbench.engine import attacks as attack_runner
from privbench.engine import recording
from privbench.engine.components import Components, Configured
from privbench.engine.fitting import FittedPool
from privbench.engine.pool import Pool
from privbench.engine.preflight import check_workspace
from privbench.engine.progress import Callback
from privbench.engine.signals import SignalCache
from privbench.engine.slicing import check_slices, slice_groups
from privbench.engine.spec import AuditSpec, PluginChoice, seed_problem
from privbench.engine.store import Workspace, digest, tensor_digest
from privbench.errors import AccessDeniedError, OptionError, PrivbenchError
from privbench.plugins import Registry
from privbench.plugins.data import LoadedDataset, Model, TensorData
from privbench.plugins.views import Access, ModelView
from privbench.results.parts import Failure, TargetUtility, Utility
from privbench.results.result import AuditResult

KINDS = ("logits", "probabilities", "losses")


def _array(name: str, value: Any, dims: int) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim != dims:
        raise OptionError(f"{name} must have {dims} dimension(s), not {array.ndim}")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise OptionError(f"{name} must be numbers, not {array.dtype}")
    return array


def to_logits(kind: str, values: Any, labels: np.ndarray, name: str) -> torch.Tensor:
    """``N x C`` logits from one model's outputs of *kind* (the last axis classes), in their own
    floating-point precision (float32 outputs give the attacks the numbers a full audit of
    the same model would), float64 for anything else."""
    per_sample = kind == "losses"
    array = _array(name, values, 1 if per_sample else 2)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if array.shape[0] != len(labels):
        raise OptionError(f"{name} has {array.shape[0]} rows but there are {len(labels)} labels")
    if not per_sample and (labels.max() >= array.shape[1]):
        raise OptionError(f"a label is {int(labels.max())} but {name} has {array.shape[1]} classes")
    if np.isnan(array).any():
        raise OptionError(f"{name} holds NaN")
    if kind == "logits":
        return torch.from_numpy(array)
    if kind == "probabilities":
        if (array < 0).any() or (array > 1).any():
            raise OptionError(f"{name}: probabilities must lie in [0, 1]")
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(array))
    if (array < 0).any():
        raise OptionError(f"{name}: a loss (cross-entropy) is never negative")
    with np.errstate(divide="ignore"):
        two_class = np.stack([-array, np.log(-np.expm1(-array))], axis=1)
    return torch.from_numpy(two_class)


class UnsupportedQuery(PrivbenchError):
    """An attack asked given outputs for something they do not hold."""


class OutputsModel(nn.Module):
    """A model known only by its outputs: answers the population's own queries (each sample's
    index, as the population's inputs encode it) from a table, and refuses any other input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = x.reshape(x.shape[0], -1)[:, 0]
        inside = not len(index) or (index.min() >= 0 and index.max() < len(self.table))
        if x[0].numel() != 1 or not torch.equal(index, index.round()) or not inside:
            raise UnsupportedQuery(
                "this audit has only the outputs given for each sample: an attack that queries "
                "other inputs (perturbed, mirrored, or gradients) cannot run on it"
            )
        return self.table[index.long()]


def _lookup(logits: torch.Tensor) -> Model:
    return Model(OutputsModel(logits), [0.0], [1.0]).eval()


@attrs.define(eq=False)
class OutputsPool(Pool):
    """A pool of given outputs: model 0 is the target, models 1.. its reference models."""

    digests: list[str] = attrs.Factory(list)
    """Each model's signal-cache key: a digest of its outputs, the labels and the data's name."""

    @property
    def keys(self) -> list[str]:  # type: ignore[override]
        return self.digests

    def missing(self, workspace: Workspace) -> list[int]:
        return []


class OutputsCache(SignalCache):
    """Signals of given outputs, cached as any others; no view grants more than ``logits``."""

    def view(self, index: int, model: Model, access: Access) -> ModelView:
        return super().view(index, model, min(access, Access.LOGITS))


def _digest(name: str, logits: torch.Tensor, labels: torch.Tensor) -> str:
    return digest([name, tensor_digest(logits, labels)])


def _components(registry: Registry, spec: AuditSpec, name: str) -> Components:
    attacks = []
    for choice in spec.attacks:
        component = registry.get("attack", choice.name)
        attack = Configured(component, registry.create("attack", choice.name, choice.options))
        if callable(getattr(attack.instance, "reconstruct", None)):
            raise OptionError(f"attack '{choice.name}' needs parameters; outputs give logits")
        if attack.instance.access > Access.LOGITS:
            raise OptionError(
                f"attack '{choice.name}' needs '{attack.instance.access.label}' access; "
                "outputs give 'logits' at most"
            )
        if attack.instance.min_shadows > spec.shadows:
            raise OptionError(
                f"attack '{choice.name}' needs at least {attack.instance.min_shadows} reference "
                f"models' outputs; {spec.shadows} given"
            )
        attacks.append(attack)
    plain = {"options": {}, "files": {}, "plugin": None, "version": None}
    return Components(
        spec=spec,
        registry=registry,
        dataset=None,
        model=None,
        defense=None,
        attacks=tuple(attacks),
        reconstructions=(),
        scorers=(),
        device=torch.device("cpu"),
        identity={
            "dataset": {"name": name, **plain},
            "model": {"name": "given outputs", **plain},
            "defense": {"name": "unknown", **plain},
        },
    )


def audit_outputs(
    *,
    registry: Registry,
    workspace: Workspace,
    kind: str,
    outputs: Any,
    labels: Any,
    member: Any,
    attacks: Sequence[PluginChoice],
    reference: Any = None,
    reference_keep: Any = None,
    sample: Any = None,
    name: str = "outputs",
    seed: int = 0,
    callback: Callback | None = None,
    insert: bool = True,
    skip_unsupported: bool = False,
    slices: Sequence[str] = (),
) -> AuditResult:
    """Every attack of *attacks* on a target known by its *outputs* of *kind* (``logits``,
    ``probabilities`` or ``losses``) on samples with *labels* and *member* truth, and on
    optional *reference* outputs (``K x N [x C]``) with their ``K x N`` *reference_keep*.
    With *skip_unsupported*, an attack that queries what outputs cannot answer is left out
    (and a note says so) instead of failing the audit. *slices* as for any audit (``class``
    and ``correct`` need the labels, so not losses)."""
    check_workspace(workspace.root, database=insert)
    if (problem := seed_problem(seed)) is not None:
        raise OptionError(problem)
    callback = callback or Callback()
    started = time.perf_counter()
    if kind not in KINDS:
        raise OptionError(f"outputs are one of {', '.join(KINDS)}, not '{kind}'")
    labels_array = _array("labels", labels, 1).astype(np.int64)
    truth = _array("member", member, 1)
    if truth.dtype != np.bool_ and not np.isin(truth, (0, 1)).all():
        raise OptionError("member must be booleans or 0/1, one per sample")
    truth = truth.astype(bool)
    if len(truth) != len(labels_array):
        raise OptionError(f"{len(truth)} membership labels for {len(labels_array)} samples")
    if truth.all() or not truth.any():
        raise OptionError("membership needs members and non-members among the samples")
    check_slices(slices)
    if kind == "losses":
        if set(slices) & {"class", "correct"}:
            raise OptionError(
                "losses alone say neither the class nor the prediction: slice them by a "
                "FILE.csv:COLUMN, or give logits or probabilities"
            )
        labels_array = np.zeros_like(labels_array)  # the true class of the two-class view
    tables = [to_logits(kind, outputs, labels_array, kind)]
    masks = [truth]
    if reference is not None:
        if reference_keep is None:
            raise OptionError("reference outputs need their keep matrix (models x samples)")
        keep = _array("reference keep", reference_keep, 2).astype(bool)
        stacked = np.asarray(reference) if not isinstance(reference, torch.Tensor) else reference
        if len(stacked) != len(keep) or keep.shape[1] != len(truth):
            raise OptionError(
                f"reference keep is {keep.shape[0]} x {keep.shape[1]}, but there are "
                f"{len(stacked)} reference models and {len(truth)} samples"
            )
        tables += [
            to_logits(kind, outputs_k, labels_array, f"reference {k}")
            for k, outputs_k in enumerate(stacked)
        ]
        masks += list(keep)
    ids = np.arange(len(truth)) if sample is None else _array("sample ids", sample, 1)
    y = torch.from_numpy(labels_array)
    population = TensorData(torch.arange(len(truth), dtype=torch.float32).view(-1, 1, 1, 1), y)
    classes = int(tables[0].shape[1])
    empty = TensorData(torch.empty(0, 1, 1, 1), torch.empty(0, dtype=torch.long))
    spec = AuditSpec(attacks=tuple(attacks), shadows=len(tables) - 1, targets=1, seed=seed)
    components = _components(registry, spec, name)
    pool = OutputsPool(
        components,
        LoadedDataset(population, empty, classes, (0.0,), (1.0,), hflip_preserves_label=False),
        population,
        ids.astype(np.int64),
        np.stack(masks),
        digests=[_digest(name, t, y) for t in tables],
    )
    workspace.create()
    callback.on_audit_start(spec, len(tables), 0)
    fitted = FittedPool([_lookup(t) for t in tables], [{"index": 0}], 0, 0.0)
    cache = OutputsCache(pool, workspace)
    results, curves, notes = [], {}, [f"outputs given as {kind}: no model was trained or queried"]
    failures: list[Failure] = []
    groups = slice_groups(slices, pool, fitted.models, cache)
    for attack in components.attacks:
        try:
            result, curves[attack.name] = attack_runner.run_attack(
                pool, fitted, cache, attack, callback, groups
            )
        except (UnsupportedQuery, AccessDeniedError) as err:
            if not skip_unsupported:
                raise
            notes.append(f"attack {attack.name} left out: {err}")
            continue
        except Exception as err:  # a plugin error fails that attack alone, as in an audit
            failures.append(Failure.of("attack", attack.name, err))
            callback.on_failure(failures[-1])
            continue
        results.append(result)
    correct = (tables[0].argmax(1).numpy() == labels_array) if kind != "losses" else None
    result = recording.assemble(
        components,
        population=len(truth),
        attacks=results,
        utility=_utility(correct, truth),
        metas=[{"outputs": kind}] * len(tables),
        trained=0,
        training_seconds=0.0,
        seconds=time.perf_counter() - started,
        scorers={},
        memorization=None,
        reconstructions=(),
        notes=notes,
        failures=failures,
        num_classes=classes if kind != "losses" else 0,
        references=len(tables) - 1,
    )
    recording.write(workspace, result, curves, {}, {})
    if insert:
        recording.insert_run(workspace, result)
    callback.on_audit_end(result)
    return result


def _utility(correct: np.ndarray | None, member: np.ndarray) -> Utility:
    """Accuracy on members and (in place of a test split) on non-members; NaN from losses."""
    if correct is None:
        return Utility(float("nan"), float("nan"), float("nan"))
    train, test = float(correct[member].mean()), float(correct[~member].mean())
    return Utility(train, test, train - test, (TargetUtility(0, train, test),))


def supported_attacks(registry: Registry, references: int) -> list[PluginChoice]:
    """Every installed membership attack that outputs can serve with their defaults: logits
    access at most, and no more reference models than given."""
    chosen = []
    for component in registry.components("attack"):
        try:
            attack = component.create()
        except PrivbenchError:
            continue
        if callable(getattr(attack, "reconstruct", None)) or attack.access > Access.LOGITS:
            continue
        if attack.min_shadows <= references:
            chosen.append(PluginChoice(component.name))
    return chosen


def read_outputs(path: str, *, reference: bool = False) -> dict[str, Any]:
    """Outputs from a file: an ``.npz`` with ``logits``, ``probabilities`` or ``loss`` (the
    reference models' stacked, with their ``keep``), ``labels``, ``member`` and optionally
    ``sample``; or, for a target, a ``.csv`` with a header: ``member``, ``label``, and ``loss``
    or ``logit_0``, ``logit_1``, ... or ``prob_0``, ``prob_1``, ... (``sample`` optional)."""
    from pathlib import Path

    file = Path(path).expanduser()
    if not file.is_file():
        raise OptionError(f"no outputs file {file}")
    if file.suffix == ".npz":
        try:
            with np.load(file, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as err:
            raise OptionError(f"{file} is not a readable .npz file: {err}") from None
    elif file.suffix == ".csv" and not reference:
        arrays = _read_csv(file)
    else:
        formats = ".npz" if reference else ".npz or .csv"
        raise OptionError(f"{file}: outputs come as {formats}, not '{file.suffix}'")
    found = [key for key in ("logits", "probabilities", "loss") if key in arrays]
    if len(found) != 1:
        raise OptionError(f"{file} needs exactly one of logits, probabilities or loss")
    kind = {"loss": "losses"}.get(found[0], found[0])
    needed = ("keep",) if reference else ("member",) + (("labels",) if kind != "losses" else ())
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise OptionError(f"{file} lacks '{missing[0]}'")
    return {"kind": kind, "outputs": arrays[found[0]], **{k: arrays[k] for k in arrays
            if k in ("labels", "member", "sample", "keep")}}  # fmt: skip


def _read_csv(file: Any) -> dict[str, np.ndarray]:
    import csv

    try:
        with file.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise OptionError(f"cannot read {file}: {err}") from None
    if not rows:
        raise OptionError(f"{file} has no rows")
    columns = list(rows[0])

    def column(name: str, dtype: Any) -> np.ndarray:
        try:
            return np.array([row[name] for row in rows], dtype=dtype)
        except (ValueError, TypeError):
            raise OptionError(
                f"{file}: column '{name}' holds a value that is not a number"
            ) from None

    arrays: dict[str, np.ndarray] = {}
    for name, dtype in (("member", np.int64), ("label", np.int64), ("sample", np.int64),
                        ("loss", np.float64)):  # fmt: skip
        if name in columns:
            arrays["labels" if name == "label" else name] = column(name, dtype)
    for prefix, key in (("logit_", "logits"), ("prob_", "probabilities")):
        names = sorted(
            (c for c in columns if c.startswith(prefix) and c[len(prefix) :].isdigit()),
            key=lambda c: int(c[len(prefix) :]),
        )
        if names:
            arrays[key] = np.stack([column(c, np.float64) for c in names], axis=1)
    return arrays
