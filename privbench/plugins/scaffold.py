"""``privbench new-plugin NAME``: a plugin package skeleton that installs, loads and keeps the
contracts as written, for the author to change (no cookiecutter needed)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from privbench.errors import OptionError
from privbench.plugins.hookspecs import PLUGIN_API

_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "privbench-{name}"
version = "0.1.0"
description = "A privbench plugin: {name}"
requires-python = ">=3.10"
dependencies = ["privbench"]

# privbench finds the plugin through this entry point (group "privbench").
[project.entry-points.privbench]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]
"""

MODULE = '''\
"""privbench plugin {name}: an attack to start from (replace its score with your own)."""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np
import torch

from privbench import Access, AttackContext, Signal, hookimpl

PRIVBENCH_PLUGIN_API = {api}


@attrs.frozen
class {cls}:
    """Members get confident predictions: the score is the true class's log-probability."""

    name: ClassVar[str] = "{name}"
    description: ClassVar[str] = "true-class log-probability (edit me)"
    access: ClassVar[Access] = Access.LOGITS  # the threat model: what the attack may see
    min_shadows: ClassVar[int] = 0  # shadow models it needs

    temperature: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    """An option: set with --attack-opt temperature=2."""

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        return (Signal.logits("none"),)  # what score() reads from each model

    def score(self, context: AttackContext) -> np.ndarray:
        logits = context.target.population_logits("none").double() / self.temperature
        log_p = torch.log_softmax(logits, dim=1)
        return log_p.gather(1, context.population.y[:, None]).squeeze(1).numpy()


@hookimpl
def register_attacks(register):
    register({cls})
'''

TESTS = """\
from {module} import {cls}

from privbench.testing import AttackContract


class Test{cls}(AttackContract):
    plugin_class = {cls}
"""

CONFTEST = """\
pytest_plugins = ["privbench.testing"]  # privbench's fixtures and contract classes
"""

README = """\
# privbench-{name}

A privbench plugin. Install it into privbench's environment and try it:

```bash
pip install -e .
privbench plugins --check {name}      # privbench's contract checks on its classes
privbench run --attack {name}
pytest tests
```

See privbench's docs/plugins.md for every hook and docs/examples/privbench-example-plugin for a
fuller example.
"""


def new_plugin(name: str, directory: Path) -> Path:
    """Write the skeleton of plugin *name* into ``directory/privbench-NAME``; returns it."""
    if not _NAME.fullmatch(name):
        raise OptionError(
            f"plugin name '{name}' must be lowercase letters and digits, words joined by '-'"
        )
    directory = Path(directory).expanduser()
    _check_directory(directory)
    root = directory / f"privbench-{name}"
    if root.exists():
        raise OptionError(f"{root} exists already; pick another name or --directory")
    module = "privbench_" + name.replace("-", "_")
    cls = "".join(part.capitalize() for part in name.split("-")) + "Attack"
    values = {"name": name, "module": module, "cls": cls, "api": PLUGIN_API}
    files = {
        "pyproject.toml": PYPROJECT,
        f"{module}/__init__.py": MODULE,
        "tests/test_contracts.py": TESTS,
        "tests/conftest.py": CONFTEST,
        "README.md": README,
    }
    staging = directory / f".privbench-{name}-{secrets.token_hex(4)}"
    try:
        # Written beside, then renamed: a failure leaves no half skeleton behind.
        staging.mkdir(parents=True)
    except OSError as err:
        raise OptionError(
            f"cannot write in --directory {directory} ({err.strerror or err}): give a folder "
            "you can write to"
        ) from None
    try:
        for relative, template in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(template.format(**values))
        os.replace(staging, root)
    except OSError as err:
        raise OptionError(
            f"cannot write {root} ({err.strerror or err}): nothing was left there; free some "
            "space or give another --directory"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _check_directory(directory: Path) -> None:
    """That *directory* is a folder, or a path where one can be made (not under a file)."""
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "is a file" if candidate == directory else f"lies under {candidate}, a file"
                raise OptionError(
                    f"--directory {directory} {where}, not a folder: give a folder (it is made "
                    "if missing)"
                )
            return
