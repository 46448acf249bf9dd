"""Progress leaves the engine through callbacks, as in Lightning: the engine calls hooks at each
step of an audit and prints nothing itself. The CLI's progress bars and its plain log lines are
two implementations (:mod:`privbench.cli.progress`); a Python caller is quiet by default and may
pass its own :class:`Callback` (or several) to ``privbench.audit(callback=...)``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from privbench.engine.spec import AuditSpec
    from privbench.results.parts import Failure
    from privbench.results.result import AuditResult


class Callback:
    """Hooks called as an audit runs; each does nothing unless a subclass overrides it.

    ``models`` are indices into the pool (model 0 is the first target). Hooks are called from
    the process that runs the audit, in order; one that raises stops the audit.
    """

    def on_audit_start(self, spec: AuditSpec, models: int, missing: int) -> None:
        """The pool is planned: *models* in all, *missing* of them not yet in the store."""

    def on_training_start(self, models: Sequence[int], epochs: int) -> None:
        """Training begins for one model, or for several at once (an ensemble)."""

    def on_training_epoch(self, models: Sequence[int], epoch: int, epochs: int) -> None:
        """*models* finished epoch *epoch* (1-based) of *epochs*."""

    def on_training_end(self, models: Sequence[int], seconds: float) -> None:
        """*models* are trained (stored once :meth:`on_model_ready` says so)."""

    def on_model_ready(self, index: int, trained: bool) -> None:
        """Model *index* is in the store and loaded: trained now, or reused."""

    def on_analysis_start(self, name: str) -> None:
        """An analysis begins: ``utility``, ``memorization``, ``scorer <name>`` or
        ``reconstruction <attack>``."""

    def on_analysis_end(self, name: str, seconds: float) -> None:
        """The analysis *name* is done."""

    def on_attack_start(self, name: str, targets: int) -> None:
        """A membership attack begins; it scores *targets* target models in turn."""

    def on_attack_target(self, name: str, done: int, targets: int) -> None:
        """The attack has scored *done* of its *targets* targets."""

    def on_attack_end(self, name: str, auc: float, seconds: float) -> None:
        """The attack is done: its pooled AUC and its cost in seconds."""

    def on_failure(self, failure: Failure) -> None:
        """An attack, scorer or analysis raised: it is recorded as failed (``failure.line``
        says what and why) and the audit goes on with the others."""

    def on_store_repair(self, message: str) -> None:
        """A stored entry failed its check and was moved to ``quarantine/``; it is rebuilt
        where the audit needs it. *message* is one line saying which and why."""

    def on_audit_end(self, result: AuditResult) -> None:
        """The audit is written (its files, and its database row unless the caller inserts)."""


class CallbackList(Callback):
    """Several callbacks heard as one, in the order given. A callback need not subclass
    :class:`Callback`: hooks it lacks are skipped."""

    def __init__(self, callbacks: Iterable[Any] = ()) -> None:
        self.callbacks = list(callbacks)


def _fan_out(name: str) -> Any:
    def hook(self: CallbackList, *args: Any, **kwargs: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, name, None)
            if method is not None:
                method(*args, **kwargs)

    hook.__name__ = name
    hook.__doc__ = getattr(Callback, name).__doc__
    return hook


for _hook in [name for name in vars(Callback) if name.startswith("on_")]:
    setattr(CallbackList, _hook, _fan_out(_hook))


def as_callback(callback: Any) -> Callback:
    """One callback from none, one (a :class:`Callback` or any object with some of its hooks)
    or an iterable of them."""
    if callback is None:
        return Callback()
    if isinstance(callback, Callback):
        return callback
    if any(name.startswith("on_") for name in dir(callback)):
        return CallbackList([callback])
    return CallbackList(callback)


class PrintProgress(Callback):
    """Progress as plain lines (``privbench run > log.txt``, CI, nohup, a script): the pool,
    each model as it is trained or reused, training epochs every ``1/steps`` of the way, each
    analysis and each attack as it finishes. Every line is flushed at once."""

    def __init__(self, stream: IO[str] | None = None, steps: int = 5) -> None:
        self.stream = stream
        self.steps = steps
        self.models = self.ready = 0

    def _line(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    @staticmethod
    def _which(models: Sequence[int]) -> str:
        if len(models) == 1:
            return f"model {models[0]}"
        return f"{len(models)} models together ({models[0]}-{models[-1]})"

    def on_audit_start(self, spec: AuditSpec, models: int, missing: int) -> None:
        self.models, self.ready = models, 0
        self._line(
            f"audit: {spec.dataset.name} / {spec.model.name} / defense {spec.defense.name}: "
            f"{models} models ({missing} to train, {models - missing} to load)"
        )

    def on_training_epoch(self, models: Sequence[int], epoch: int, epochs: int) -> None:
        step = max(1, epochs // self.steps)
        if epoch % step == 0 or epoch == epochs:
            self._line(f"training {self._which(models)}: epoch {epoch}/{epochs}")

    def on_training_end(self, models: Sequence[int], seconds: float) -> None:
        self._line(f"trained {self._which(models)} in {seconds:.1f} s")

    def on_model_ready(self, index: int, trained: bool) -> None:
        self.ready += 1
        how = "trained and stored" if trained else "loaded"
        self._line(f"model {index} {how} ({self.ready}/{self.models} ready)")

    def on_analysis_end(self, name: str, seconds: float) -> None:
        self._line(f"{name} done ({seconds:.1f} s)")

    def on_attack_target(self, name: str, done: int, targets: int) -> None:
        self._line(f"attack {name}: target {done}/{targets} scored")

    def on_attack_end(self, name: str, auc: float, seconds: float) -> None:
        self._line(f"attack {name} done: AUC {auc:.4f} ({seconds:.1f} s)")

    def on_failure(self, failure: Failure) -> None:
        self._line(f"failed: {failure.line}")

    def on_store_repair(self, message: str) -> None:
        self._line(message)

    def on_audit_end(self, result: AuditResult) -> None:
        self._line(f"run {result.run_id} written to {result.path}")
