"""The hook specifications of privbench, one ``register_*`` hook per plugin kind.

A plugin is a module with functions marked ``@hookimpl``; it is found through an entry point of
group ``privbench`` (see ``[project.entry-points.privbench]`` in privbench's own pyproject, which
declares the built-in plugins exactly as a third party declares theirs)::

    from privbench import hookimpl

    @hookimpl
    def register_attacks(register):
        register(MyAttack)

Each ``register`` callback takes a plugin *class*: an attrs class with a unique ``name`` whose
fields are its options (see :mod:`privbench.plugins.interfaces`); the core instantiates it from the
user's validated options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

PLUGIN_API = 1
"""The plugin interface's version (``privbench.__plugin_api__``), raised when a change breaks
plugins. A plugin module may say which it was written for, ``PRIVBENCH_PLUGIN_API = 1``; one
written for another is refused at load with a one-line error instead of failing later."""

hookspec = pluggy.HookspecMarker("privbench")
hookimpl = pluggy.HookimplMarker("privbench")

Register = Callable[[type[Any]], None]


@hookspec
def register_attacks(register: Register) -> None:
    """Register membership-inference or reconstruction attacks (:class:`privbench.Attack`)."""


@hookspec
def register_defenses(register: Register) -> None:
    """Register defenses that change training, data or inference (:class:`privbench.Defense`)."""


@hookspec
def register_scorers(register: Register) -> None:
    """Register per-sample statistics of a model on a batch (:class:`privbench.Scorer`)."""


@hookspec
def register_models(register: Register) -> None:
    """Register model architectures (:class:`privbench.ModelFactory`)."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets (:class:`privbench.DatasetSource`)."""


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add sub-commands to the ``privbench`` command line (a typer app)."""
