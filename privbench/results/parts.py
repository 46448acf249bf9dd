"""The parts of an audit's result, each a typed record of one thing it measured: the settings
it ran with (:class:`RunSpec`), each attack's metrics, ROC and per-sample scores
(:class:`AttackResult`), utility, training, scorers, memorization and reconstructions. Each
converts to and from its JSON form in ``results.json``; :mod:`privbench.results.result` puts
them together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from privbench.analysis.metrics import AttackMetrics
from privbench.analysis.one_run import OneRunBound
from privbench.analysis.slices import SliceResult
from privbench.plugins.interfaces import TrainingRecipe

# What every trainer records about itself; the rest of a target's metadata is the defense's own
# report (accountant epsilon, synthetic-image similarity, teacher accuracy, ...).
TRAINING_BOOKKEEPING = frozenset(
    {"device", "ensemble", "final_train_loss", "privbench", "train_seconds", "index", "members"}
    | {"external", "weights", "sha256", "outputs"}  # what a target the user brought records
)


def _array_eq(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b))


@attrs.frozen
class PluginRecord:
    """A configured plugin as a run recorded it: name, options, and where it came from."""

    name: str
    options: dict[str, Any] = attrs.field(factory=dict)
    plugin: str | None = None
    """The plugin (entry point) that provided it."""
    version: str | None = None
    files: dict[str, str] = attrs.field(factory=dict)
    """SHA-256 of files its options name (a checkpoint)."""

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> PluginRecord:
        fields = attrs.fields_dict(cls)
        return cls(**{k: v for k, v in record.items() if k in fields})


@attrs.frozen
class RunSpec:
    """The settings a run was made with (the spec, resolved: population and targets counted)."""

    dataset: PluginRecord
    model: PluginRecord
    defense: PluginRecord
    recipe: TrainingRecipe
    shadows: int
    targets: int
    population: int
    seed: int
    paired: bool = False
    device: str = "cpu"
    target: dict[str, Any] | None = None
    """The trained model the user brought (``weights``, ``sha256``, ``members``), audited with
    ``shadows`` reference models; None when privbench trained the whole pool."""
    one_run: dict[str, Any] | None = None
    """A one-run audit's ``canaries`` (how many) and ``canary_kind``; None in LiRA's game."""

    @property
    def models(self) -> int:
        return self.shadows + 1

    def to_record(self) -> dict[str, Any]:
        record = attrs.asdict(self, recurse=True)
        for optional in ("target", "one_run"):
            if record[optional] is None:
                del record[optional]
        return record

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> RunSpec:
        recipe_fields = attrs.fields_dict(TrainingRecipe)
        return cls(
            dataset=PluginRecord.of(record["dataset"]),
            model=PluginRecord.of(record["model"]),
            defense=PluginRecord.of(record["defense"]),
            recipe=TrainingRecipe(
                **{k: v for k, v in record.get("recipe", {}).items() if k in recipe_fields}
            ),
            shadows=record["shadows"],
            targets=record["targets"],
            population=record["population"],
            seed=record["seed"],
            paired=record.get("paired", False),
            device=record.get("device", "cpu"),
            target=record.get("target"),
            one_run=record.get("one_run"),
        )


@attrs.frozen
class Roc:
    """A compact ROC as stored: the best TPR at each of ~200 log-spaced FPRs (never above what
    the attack achieved; :func:`privbench.analysis.metrics.roc_points`)."""

    fpr: np.ndarray = attrs.field(eq=attrs.cmp_using(eq=_array_eq), repr=False)
    tpr: np.ndarray = attrs.field(eq=attrs.cmp_using(eq=_array_eq), repr=False)

    @classmethod
    def of(cls, points: Mapping[str, Any]) -> Roc:
        return cls(np.asarray(points["fpr"], dtype=float), np.asarray(points["tpr"], dtype=float))

    def to_record(self) -> dict[str, list[float]]:
        return {"fpr": self.fpr.tolist(), "tpr": self.tpr.tolist()}


@attrs.frozen
class MembershipScores:
    """An attack's per-sample scores over every target turn (higher = member), one entry per
    (target, sample): ``score``, ``member`` (the truth), ``sample`` (the sample's index in the
    dataset's train split) and ``target`` (the pool index of the target model)."""

    score: np.ndarray = attrs.field(eq=attrs.cmp_using(eq=_array_eq), repr=False)
    member: np.ndarray = attrs.field(eq=attrs.cmp_using(eq=_array_eq), repr=False)
    sample: np.ndarray = attrs.field(eq=attrs.cmp_using(eq=_array_eq), repr=False)
    target: np.ndarray = attrs.field(eq=attrs.cmp_using(eq=_array_eq), repr=False)

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def for_target(self, target: int) -> MembershipScores:
        """The entries of one target turn."""
        keep = self.target == target
        return MembershipScores(
            self.score[keep], self.member[keep], self.sample[keep], self.target[keep]
        )

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """The full ROC ``(fpr, tpr)`` at every distinct score."""
        from privbench.analysis.metrics import roc

        fpr, tpr, _ = roc(self.score, self.member)
        return fpr, tpr


@attrs.frozen
class Spread:
    """Each metric's mean and sample standard deviation over the target models."""

    mean: dict[str, float] = attrs.field(factory=dict)
    std: dict[str, float] = attrs.field(factory=dict)


@attrs.frozen
class EpsilonBound:
    """The empirical epsilon of an attack: a lower bound at ``confidence`` (Clopper-Pearson on
    held-out scores) and the optimistic same-data estimate, for (epsilon, ``delta``)-DP."""

    lower: float
    estimate: float
    confidence: float = 0.95
    delta: float = 1e-5


@attrs.frozen
class AttackResult:
    """One membership attack's result over every target turn."""

    name: str
    access: str
    """The threat model it declared (``labels``, ``logits``, ``input-gradients``, ...)."""
    options: dict[str, Any]
    metrics: AttackMetrics
    """Over the pooled scores of every target turn."""
    per_target: Spread
    seconds: float
    """Its cost: its own work plus computing the signals it lists (``signal_seconds``)."""
    signal_seconds: float = 0.0
    roc: Roc | None = None
    scores: MembershipScores | None = None
    """Per-sample scores (None for runs recorded before they were kept)."""
    slices: tuple[SliceResult, ...] = ()
    """Its metrics per slice of the samples (by class, by correct classification, ...)."""
    vulnerable: tuple[int, ...] = ()
    """The members it was surest of, most vulnerable first: their sample ids."""
    one_run: OneRunBound | None = None
    """In a one-run audit: the ε lower bound of Steinke et al. from its canary scores."""

    @property
    def epsilon(self) -> EpsilonBound:
        return EpsilonBound(self.metrics.epsilon_lower, self.metrics.epsilon_estimate)

    def to_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "access": self.access,
            "options": self.options,
            "metrics": self.metrics.as_dict(),
            "per_target": {"mean": self.per_target.mean, "std": self.per_target.std},
            "seconds": self.seconds,
            "signal_seconds": self.signal_seconds,
            **({"roc": self.roc.to_record()} if self.roc is not None else {}),
            **({"slices": [s.to_record() for s in self.slices]} if self.slices else {}),
            **({"vulnerable": list(self.vulnerable)} if self.vulnerable else {}),
            **({"one_run": self.one_run.to_record()} if self.one_run is not None else {}),
        }

    @classmethod
    def of(cls, record: Mapping[str, Any], scores: MembershipScores | None) -> AttackResult:
        stored = record["metrics"]
        fields = attrs.fields_dict(AttackMetrics).items()
        missing = {f: math.nan if d.default is attrs.NOTHING else d.default for f, d in fields}
        metrics = AttackMetrics(**{f: stored.get(f, default) for f, default in missing.items()})
        spread = record.get("per_target", {})
        return cls(
            name=record["name"],
            access=record["access"],
            options=dict(record.get("options", {})),
            metrics=metrics,
            per_target=Spread(dict(spread.get("mean", {})), dict(spread.get("std", {}))),
            seconds=record.get("seconds", math.nan),
            signal_seconds=record.get("signal_seconds", 0.0),
            roc=Roc.of(record["roc"]) if record.get("roc") else None,
            scores=scores,
            slices=tuple(SliceResult.of(s) for s in record.get("slices", ())),
            vulnerable=tuple(record.get("vulnerable", ())),
            one_run=OneRunBound.of(record["one_run"]) if record.get("one_run") else None,
        )


@attrs.frozen
class TargetUtility:
    target: int
    train_accuracy: float
    """On the target's own members."""
    test_accuracy: float


@attrs.frozen
class Utility:
    """Accuracy of the released target models (means over targets, and each target's)."""

    train_accuracy: float
    test_accuracy: float
    generalization_gap: float
    per_target: tuple[TargetUtility, ...] = ()

    def to_record(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Utility:
        return cls(
            train_accuracy=record["train_accuracy"],
            test_accuracy=record["test_accuracy"],
            generalization_gap=record.get(
                "generalization_gap", record["train_accuracy"] - record["test_accuracy"]
            ),
            per_target=tuple(TargetUtility(**t) for t in record.get("per_target", ())),
        )


@attrs.frozen
class Training:
    """How the pool came to be: models in all, trained now, reused from the store (a target the
    user brought is neither trained nor reused)."""

    models: int
    trained: int
    reused: int
    seconds: float
    target_meta: dict[str, Any] = attrs.field(factory=dict)
    """What the first target's training recorded (its defense's measurements among it)."""

    @property
    def defense_measurements(self) -> dict[str, Any]:
        """The defense's own report on the first target (accountant epsilon, teacher accuracy,
        synthetic-image similarity, ...): the target's metadata less training bookkeeping."""
        return {k: v for k, v in self.target_meta.items() if k not in TRAINING_BOOKKEEPING}


@attrs.frozen
class ScorerSummary:
    """A scorer's values on the target models, for members and for non-members."""

    options: dict[str, Any]
    access: str
    members: dict[str, float]
    """``mean`` and ``median`` over members."""
    non_members: dict[str, float]
    membership_auc: float
    """AUC of the value as a membership score (0.5: it does not separate them)."""


@attrs.frozen
class MemorizationSummary:
    """Feldman-Zhang memorization over the pool (every value in ``memorization.csv``)."""

    models: int
    mean: float
    above_0_5: int
    spearman_curvature: float | None = None
    """Spearman rank correlation with the mean curvature where trained (ICML 2024 Sec. 6.3)."""
    spearman_p_value: float | None = None

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


@attrs.frozen
class ReconstructionResult:
    """A reconstruction attack's candidates matched to one target's training images."""

    name: str
    access: str
    options: dict[str, Any]
    target: int
    train_size: int
    candidates: int
    metrics: dict[str, Any]
    """Identified and recovered fractions with their chance levels, SSIM, L2, PSNR."""
    grid: str
    """File name of the PNG of training images above their reconstructions."""
    seconds: float
    declared_training_set: dict[str, Any] | None = None
    """The same against the images the defense declared it trained on (KIP, synthesis)."""

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


@attrs.frozen
class Failure:
    """A part of an audit that raised (an attack, a scorer, an analysis): recorded beside the
    results of the others, which are kept."""

    kind: str
    """``attack``, ``scorer``, ``memorization`` or ``reconstruction``."""
    name: str
    error: str
    """The exception, as one line: ``ValueError: ...``."""

    @classmethod
    def of(cls, kind: str, name: str, error: BaseException) -> Failure:
        text = " ".join(str(error).split()) or "(no message)"
        return cls(kind, name, f"{type(error).__name__}: {text[:300]}")

    @property
    def line(self) -> str:
        return f"{self.kind} '{self.name}' failed: {self.error}"
