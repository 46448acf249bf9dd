"""What defines one audit, as data: the plugins it names (with their options), the training
recipe, the pool's size and shape, the seed. CLI flags, ``privbench.audit(...)`` keyword
arguments and suite cells all become one :class:`AuditSpec` (see :mod:`privbench.engine.settings`),
which is validated by :func:`privbench.engine.components.resolve` before any work.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping
from typing import Any

import attrs

from privbench.engine.canaries import CANARY_KINDS
from privbench.engine.target import TargetSpec
from privbench.plugins.interfaces import TrainingRecipe


@attrs.frozen
class PluginChoice:
    """A plugin by name (``base/argument`` allowed, e.g. ``timm/resnet18``) with its options as
    given (strings from the command line, TOML or Python values): validated when resolved."""

    name: str
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)


MAX_SHADOWS = 100_000
"""The most shadow models a pool may have: far beyond any published audit (memorization studies
train a few thousand models), yet small enough that an absurd count fails here, in milliseconds,
rather than while its masks are allocated. The machine's memory sets the practical limit
(:meth:`privbench.engine.pool.Pool.plan` checks that the masks fit)."""


def seed_problem(seed: object) -> str | None:
    """Why *seed* is not a seed (numpy's SeedSequence, which every draw goes through, takes
    integers of 0 or more only), or None."""
    try:
        value = operator.index(seed)  # type: ignore[arg-type]
    except TypeError:
        value = -1
    if isinstance(seed, bool) or value < 0:
        return f"--seed {seed}: a seed is an integer of 0 or more; give one such as 0"
    return None


def _seed(instance: object, attribute: object, value: object) -> None:
    if (problem := seed_problem(value)) is not None:
        raise ValueError(problem)


def _shadows(instance: object, attribute: object, value: int) -> None:
    if value < 0:
        raise ValueError(f"--shadows {value}: give 0 or more shadow models")
    if value > MAX_SHADOWS:
        raise ValueError(
            f"--shadows {value}: at most {MAX_SHADOWS:,} shadow models are supported; give fewer"
        )


AUDITS = ("membership", "one-run")
"""The games an audit plays: LiRA's membership game over a pool of models, each a target in
turn, or Steinke et al.'s one-run audit of one model trained with canaries."""


def _audit(instance: object, attribute: object, value: str) -> None:
    if value not in AUDITS:
        raise ValueError(f"--audit {value}: use {' or '.join(AUDITS)}")


def _canaries(instance: object, attribute: object, value: int | None) -> None:
    if value is not None and value < 2:
        raise ValueError(f"--canaries {value}: give 2 or more (the paper's audits use 1,000)")


def _canary_kind(instance: object, attribute: object, value: str) -> None:
    if value not in CANARY_KINDS:
        raise ValueError(f"--canary-kind {value}: use {' or '.join(CANARY_KINDS)}")


@attrs.frozen
class AuditSpec:
    """Everything that defines one audit; CLI flags, Python calls and suite cells become one."""

    dataset: PluginChoice = PluginChoice("digits")
    model: PluginChoice = PluginChoice("small-cnn")
    defense: PluginChoice = PluginChoice("none")
    attacks: tuple[PluginChoice, ...] = (PluginChoice("loss"),)
    recipe: TrainingRecipe = attrs.field(factory=TrainingRecipe)
    shadows: int = attrs.field(default=7, validator=_shadows)
    """Shadow models beside the target: the pool holds ``shadows + 1`` models."""
    targets: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    """How many models of the pool take a turn as target (the others are its shadows); all of
    them by default, giving ``(shadows + 1) x population`` evaluation points."""
    population: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(4))
    )
    """Population size drawn from the dataset's train split (all of it by default)."""
    memorization: bool = False
    """Also estimate each sample's memorization from the pool (``memorization.csv``)."""
    scorers: tuple[PluginChoice, ...] = ()
    """Scorer plugins to report on the target models: summaries for members and non-members,
    and every value in ``scores-<name>.csv``."""
    paired: bool = False
    """Curvature Clues' masks: Bernoulli(0.5) keep-masks in complementary pairs (each sample is
    in exactly half the models) instead of exact random halves."""
    seed: int = attrs.field(default=0, validator=_seed)
    data_root: str | None = None
    device: str = "auto"
    slices: tuple[str, ...] = ()
    """Report every attack's metrics per slice too: ``class``, ``correct`` (whether the target
    classified the sample correctly), or ``FILE.csv:COLUMN`` (a group per sample id)."""
    target: TargetSpec | None = None
    """A trained model the user brings (weights and member split): the one target, audited
    with ``shadows`` reference models that privbench trains; None: privbench trains them all."""
    audit: str = attrs.field(default="membership", validator=_audit)
    """``membership``: LiRA's game over the pool; ``one-run``: one model trained with canaries,
    each included with probability 1/2, and the ε lower bound of Steinke et al. from the
    attacks' scores on them (:mod:`privbench.engine.canaries`)."""
    canaries: int | None = attrs.field(default=None, validator=_canaries)
    """A one-run audit's canary count (default: 1,000, at most half the population)."""
    canary_kind: str = attrs.field(default="mislabelled", validator=_canary_kind)
    """``mislabelled`` (a wrong label each: the tightest black-box audit) or ``natural``."""

    @property
    def one_run(self) -> bool:
        return self.audit == "one-run"

    @property
    def pool_size(self) -> int:
        return self.shadows + 1

    @property
    def target_count(self) -> int:
        """How many models take a turn as target (the user's model alone, if one is given)."""
        if self.target is not None:
            return 1
        return self.targets if self.targets is not None else self.pool_size


# Recipe fields added after the store format was fixed: left out of a model's key while at
# their defaults, so models stored before they existed keep their keys and are reused.
_RECIPE_FIELDS_SINCE_FORMAT = {"loss": "cross-entropy", "schedule": "cosine"}


def recipe_identity(recipe: TrainingRecipe) -> dict[str, Any]:
    """The recipe as it enters a model's content address."""
    fields = attrs.asdict(recipe)
    for name, default in _RECIPE_FIELDS_SINCE_FORMAT.items():
        if fields.get(name) == default:
            del fields[name]
    return fields


def spec_record(spec: AuditSpec) -> dict[str, Any]:
    """*spec* as JSON-ready data (a stored model's manifest keeps it, to retrain the model)."""
    return json.loads(json.dumps(attrs.asdict(spec, recurse=True), default=str))


def spec_from_record(record: Mapping[str, Any]) -> AuditSpec:
    """The :class:`AuditSpec` :func:`spec_record` wrote.

    :raises ValueError: for a record that is not one (with the reason).
    """
    try:
        fields = dict(record)
        for name in ("dataset", "model", "defense"):
            fields[name] = PluginChoice(**fields[name])
        for name in ("attacks", "scorers"):
            fields[name] = tuple(PluginChoice(**choice) for choice in fields[name])
        fields["recipe"] = TrainingRecipe(**fields["recipe"])
        fields["slices"] = tuple(fields.get("slices", ()))
        if fields.get("target") is not None:
            members = fields["target"]["members"]
            fields["target"] = TargetSpec(
                fields["target"]["weights"],
                members if isinstance(members, str) else tuple(members),
            )
        return AuditSpec(**fields)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a recorded audit spec ({type(err).__name__}: {err})") from None
