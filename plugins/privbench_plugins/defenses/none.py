"""The baseline: no defense, standard training, the model released as trained."""

from __future__ import annotations

from typing import ClassVar

import attrs

from privbench import Defense, hookimpl


@attrs.frozen
class NoDefense(Defense):
    name: ClassVar[str] = "none"
    description: ClassVar[str] = "No defense: standard training, the model released as trained."
    trains_by_recipe: ClassVar[bool] = True


@hookimpl
def register_defenses(register):
    register(NoDefense)
