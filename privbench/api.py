"""The front door: ``privbench.audit(...)`` runs an audit and returns its typed result;
``privbench.load_run(...)`` reads an earlier one back. ``privbench run`` and ``privbench show``
are clients of these two functions, and suites build their cells with the same
:func:`~privbench.engine.settings.build_spec`.

Keyword arguments are named like ``privbench run``'s flags (``--batch-size`` -> ``batch_size``,
``--attack`` -> ``attacks``, ``--attack-opt`` -> ``attack_options``); one left as None is unset,
so an attack's victim setting or the preset may fill it in, else it takes its default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from privbench.engine.progress import Callback, as_callback
from privbench.engine.settings import RUN_PARAMETERS, build_spec
from privbench.engine.store import Workspace
from privbench.plugins import get_registry
from privbench.results.result import AuditResult

PluginArgument = Any
"""A plugin: its name (``"lira"``, ``"timm/resnet18"``), ``(name, options)``, a
``{"name": ..., "options": ...}`` mapping, a ``PluginChoice``, or an instance of its class."""

DEFAULT_WORKSPACE = "privbench-workspace"


def workspace_path(workspace: str | os.PathLike[str] | None = None) -> Path:
    """*workspace*, else ``PRIVBENCH_WORKSPACE``, else ``./privbench-workspace``."""
    if workspace is not None:
        return Path(workspace).expanduser()
    return Path(os.environ.get("PRIVBENCH_WORKSPACE") or DEFAULT_WORKSPACE)


def audit(
    *,
    attacks: PluginArgument | Sequence[PluginArgument] | None = None,
    defense: PluginArgument | None = None,
    model: PluginArgument | None = None,
    dataset: PluginArgument | None = None,
    attack_options: Mapping[str, Any] | None = None,
    defense_options: Mapping[str, Any] | None = None,
    model_options: Mapping[str, Any] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    scorers: PluginArgument | Sequence[PluginArgument] | None = None,
    scorer_options: Mapping[str, Any] | None = None,
    preset: str | None = None,
    target: str | os.PathLike[str] | None = None,
    members: str | os.PathLike[str] | Sequence[int] | Sequence[bool] | None = None,
    shadows: int | None = None,
    targets: int | None = None,
    paired: bool | None = None,
    population: int | None = None,
    memorization: bool | None = None,
    slices: Sequence[str] | None = None,
    audit: str | None = None,
    canaries: int | None = None,
    canary_kind: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    augment: str | None = None,
    loss: str | None = None,
    schedule: str | None = None,
    seed: int | None = None,
    workspace: str | os.PathLike[str] | None = None,
    data_root: str | None = None,
    device: str | None = None,
    callback: Callback | Sequence[Callback] | None = None,
    registry: Any = None,
) -> AuditResult:
    """Train (or reuse) a target and its shadow models, run the attacks, return the result.

    :param attacks: membership or reconstruction attacks run on the same models (``loss``).
    :param defense: applied to the target and every shadow model (``none``).
    :param model: the architecture (``small-cnn``; ``timm/<arch>`` for timm).
    :param dataset: where the population comes from (``digits``).
    :param attack_options: ``{key: value}`` for every given attack that has the option, or
        ``{"attack.key": value}`` for one; likewise ``scorer_options``. ``defense_options``,
        ``model_options`` and ``dataset_options`` add to the options given with the plugin.
    :param scorers: per-sample statistics reported for members and non-members of the targets.
    :param preset: a paper's protocol (``curvature-clues``, ``quick``); what you give wins.
    :param target: the weights (safetensors) of a model you trained elsewhere, whose
        architecture is ``model``: it becomes the one target, and privbench trains only its
        reference models (``shadows`` of them; none when no attack needs any).
    :param members: the samples *target* trained on, as indices into the dataset's train split
        or a boolean mask over it: a file (.npy, .csv, .txt) or an array.
    :param shadows: shadow models beside the target (7): the pool holds ``shadows + 1``.
    :param targets: how many models of the pool take a turn as target (all of them).
    :param paired: Curvature Clues' complementary Bernoulli keep-masks instead of halves.
    :param population: samples drawn from the train split (all of it).
    :param memorization: also estimate each sample's Feldman-Zhang memorization.
    :param slices: also report every attack per slice of the samples: ``class``, ``correct``
        (whether the target classified the sample correctly), ``FILE.csv:COLUMN``.
    :param audit: ``membership`` (LiRA's game over the pool) or ``one-run``: Steinke et al.'s
        audit of one model trained with ``canaries`` canaries (1,000, at most half the
        population), each included with probability 1/2, of ``canary_kind`` ``mislabelled``
        (the default) or ``natural``; each attack's result then holds ``one_run``, the ε lower
        bound from its scores on the canaries.
    :param epochs: and ``batch_size``, ``optimizer``, ``lr``, ``momentum``, ``weight_decay``,
        ``augment``, ``loss``, ``schedule``: the training recipe of every model.
    :param seed: the seed of the population, the masks and every model's training (0).
    :param workspace: where models, signals, runs and the database live (``PRIVBENCH_WORKSPACE``,
        else ``./privbench-workspace``).
    :param data_root: the folder holding downloaded datasets (``PRIVBENCH_DATA``).
    :param device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    :param callback: hears the audit's progress (:class:`privbench.Callback`); quiet if None.
    :param registry: the plugin registry to resolve names in (the installed plugins).
    :returns: the :class:`privbench.AuditResult`, also written to its run folder and database.
    :raises privbench.PrivbenchError: for any bad input, with a one-line message, before any
        model is trained.
    """
    from privbench.engine.audit import run_audit  # on use: it loads scikit-learn and scipy

    registry = registry or get_registry()
    parameters = {k: v for k, v in locals().items() if k in RUN_PARAMETERS}
    spec, notes = build_spec(registry, preset=preset, **parameters)
    return run_audit(
        spec,
        Workspace(workspace_path(workspace)),
        registry=registry,
        callback=as_callback(callback),
        notes=notes,
    )


def load_run(
    run: str | os.PathLike[str], *, workspace: str | os.PathLike[str] | None = None
) -> AuditResult:
    """An earlier run as the :class:`privbench.AuditResult` it returned: *run* is its folder,
    its ``results.json``, or its id (a unique prefix of one, or ``latest``) in *workspace*'s
    database. Its per-sample scores are verified against the digest its record holds."""
    from privbench.results.runs import find_run

    return find_run(run, workspace_path(workspace))


def audit_outputs(
    *,
    member: Any,
    logits: Any = None,
    probabilities: Any = None,
    losses: Any = None,
    labels: Any = None,
    reference_logits: Any = None,
    reference_probabilities: Any = None,
    reference_losses: Any = None,
    reference_keep: Any = None,
    attacks: PluginArgument | Sequence[PluginArgument] | None = None,
    attack_options: Mapping[str, Any] | None = None,
    sample_ids: Any = None,
    slices: Sequence[str] = (),
    name: str = "outputs",
    seed: int = 0,
    workspace: str | os.PathLike[str] | None = None,
    callback: Callback | Sequence[Callback] | None = None,
    registry: Any = None,
) -> AuditResult:
    """Audit a model by its outputs alone (post hoc, black box), into the same result.

    :param member: for each sample, whether the model trained on it (booleans or 0/1).
    :param logits: ``N x C`` logits of the model on the samples; or ``probabilities`` (``N x
        C``); or ``losses`` (``N`` per-sample cross-entropies, read as the two-class view
        ``(p_y, 1 - p_y)``). Numpy arrays or torch tensors; exactly one of the three.
    :param labels: each sample's class (not needed with ``losses``).
    :param reference_logits: the same outputs of reference models trained on known halves
        (``K x N x C``, or ``K x N`` losses), of the same kind as the target's, with
        ``reference_keep`` (``K x N`` booleans: which samples each trained on).
    :param attacks: as for :func:`audit`; by default every installed attack these outputs can
        serve (logits access, no more reference models than given).
    :param sample_ids: a stable id per sample (default ``0..N-1``), kept with the scores.
    :param slices: as for :func:`audit` (a ``FILE.csv:COLUMN`` is keyed by the sample ids).
    :param name: what the runs database and leaderboards call the data.
    :returns: an :class:`privbench.AuditResult` like any audit's, written to the workspace.
    """
    from privbench.engine.outputs import audit_outputs as run
    from privbench.engine.outputs import supported_attacks
    from privbench.engine.settings import attack_choices
    from privbench.errors import OptionError

    registry = registry or get_registry()
    given = {"logits": logits, "probabilities": probabilities, "losses": losses}
    kinds = [kind for kind, value in given.items() if value is not None]
    if len(kinds) != 1:
        raise OptionError("give the target's logits, probabilities or losses (exactly one)")
    kind = kinds[0]
    reference = {"logits": reference_logits, "probabilities": reference_probabilities,
                 "losses": reference_losses}  # fmt: skip
    other = [k for k, v in reference.items() if v is not None and k != kind]
    if other:
        raise OptionError(f"the reference outputs are {other[0]} but the target's are {kind}")
    if kind != "losses" and labels is None:
        raise OptionError(f"{kind} need the samples' labels")
    references = reference[kind]
    count = 0 if references is None else len(references)
    chosen = (
        attack_choices(attacks, attack_options, registry)
        if attacks is not None
        else supported_attacks(registry, count)
    )
    return run(
        registry=registry,
        workspace=Workspace(workspace_path(workspace)),
        kind=kind,
        outputs=given[kind],
        labels=labels if labels is not None else [0] * len(given[kind]),
        member=member,
        attacks=chosen,
        reference=references,
        reference_keep=reference_keep,
        sample=sample_ids,
        name=name,
        seed=seed,
        callback=as_callback(callback),
        skip_unsupported=attacks is None,
        slices=tuple(slices),
    )
