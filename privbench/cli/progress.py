"""An audit's progress as rich bars on the terminal (stderr), from the engine's callbacks. When
standard output is not a terminal, ``privbench run`` uses :class:`~privbench.engine.progress.
PrintProgress` instead, so a long run logged to a file is never silent."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.progress import Progress, TaskID

from privbench.engine.progress import Callback
from privbench.engine.spec import AuditSpec
from privbench.results.parts import Failure


class RichProgress(Callback):
    """The pool's models, the model (or ensemble) in training, analyses and attacks as bars."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.pool: TaskID | None = None
        self.tasks: dict[Any, TaskID] = {}

    def _start(self, key: Any, description: str, total: float | None) -> None:
        self.tasks[key] = self.progress.add_task(description, total=total)

    def _stop(self, key: Any) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            self.progress.remove_task(task)

    def on_audit_start(self, spec: AuditSpec, models: int, missing: int) -> None:
        self.pool = self.progress.add_task("models", total=models)

    def on_training_start(self, models: Sequence[int], epochs: int) -> None:
        what = f"model {models[0]}" if len(models) == 1 else f"{len(models)} models together"
        self._start(("training", tuple(models)), f"  training {what}", epochs)

    def on_training_epoch(self, models: Sequence[int], epoch: int, epochs: int) -> None:
        task = self.tasks.get(("training", tuple(models)))
        if task is not None:
            self.progress.update(task, completed=epoch)

    def on_training_end(self, models: Sequence[int], seconds: float) -> None:
        self._stop(("training", tuple(models)))

    def on_model_ready(self, index: int, trained: bool) -> None:
        if self.pool is not None:
            self.progress.advance(self.pool)

    def on_analysis_start(self, name: str) -> None:
        self._start(("analysis", name), name, None)

    def on_analysis_end(self, name: str, seconds: float) -> None:
        self._stop(("analysis", name))

    def on_attack_start(self, name: str, targets: int) -> None:
        self._start(("attack", name), f"attack {name}", targets)

    def on_attack_target(self, name: str, done: int, targets: int) -> None:
        task = self.tasks.get(("attack", name))
        if task is not None:
            self.progress.update(task, completed=done)

    def on_attack_end(self, name: str, auc: float, seconds: float) -> None:
        self._stop(("attack", name))

    def on_failure(self, failure: Failure) -> None:
        self._stop(("attack", failure.name))
        self.progress.console.print(f"failed: {failure.line}", markup=False, highlight=False)

    def on_store_repair(self, message: str) -> None:
        self.progress.console.print(message, markup=False, highlight=False)


class StoreRepairs(Callback):
    """What ``--quiet`` still says, on stderr: entries of the store moved to quarantine."""

    def on_store_repair(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
