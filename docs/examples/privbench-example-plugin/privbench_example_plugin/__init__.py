"""An example privbench plugin: one attack, one scorer and one command.

- attack ``entropy``: members get confident, low-entropy predictions (Salem et al. 2019), so
  the score is the negated entropy of the (temperature-scaled) softmax. Threat model: the
  target's logits, no shadow models.
- scorer ``margin``: each sample's logit margin, its true class's logit minus the largest other
  logit (a per-sample statistic other attacks and reports can use). Needs logits.
- command ``privbench example-plugin-info``: what this plugin registers, and for which plugin
  API it was written.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np
import torch
import typer

from privbench import Access, AttackContext, ModelView, Signal, hookimpl

PRIVBENCH_PLUGIN_API = 1
"""The plugin API this was written for: privbench refuses it, with the reason, if it differs."""


@attrs.frozen
class EntropyAttack:
    """Negated prediction entropy: the more confident the target, the likelier a member."""

    name: ClassVar[str] = "entropy"
    description: ClassVar[str] = "Salem et al. 2019: members get low-entropy predictions"
    access: ClassVar[Access] = Access.LOGITS  # the threat model: the target's logits only
    min_shadows: ClassVar[int] = 0

    temperature: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    """Softmax temperature applied to the logits before the entropy."""

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        # What score() reads from each model: lets privbench bench compute it ahead, in parallel.
        return (Signal.logits("none"),)

    def score(self, context: AttackContext) -> np.ndarray:
        logits = context.target.population_logits("none").double() / self.temperature
        log_p = torch.log_softmax(logits, dim=1)
        return (log_p.exp() * log_p).sum(1).numpy()  # = -entropy


@attrs.frozen
class MarginScorer:
    """True-class logit minus the largest other logit, per sample."""

    name: ClassVar[str] = "margin"
    description: ClassVar[str] = "logit margin: true class minus the best other class"
    access: ClassVar[Access] = Access.LOGITS

    def score(self, model: ModelView, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model.logits(x).double()
        true = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.scatter(1, y[:, None], float("-inf")).max(1).values
        return true - others


def plugin_info() -> None:
    """What the example plugin registers, and the plugin API it was written for."""
    typer.echo(f"privbench-example-plugin (plugin API {PRIVBENCH_PLUGIN_API})")
    typer.echo(f"  attack {EntropyAttack.name}: {EntropyAttack.description}")
    typer.echo(f"  scorer {MarginScorer.name}: {MarginScorer.description}")


@hookimpl
def register_attacks(register):
    register(EntropyAttack)


@hookimpl
def register_scorers(register):
    register(MarginScorer)


@hookimpl
def register_commands(app):
    app.command("example-plugin-info")(plugin_info)
