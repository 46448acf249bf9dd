"""The KEY=VALUE flags the study scripts share (``--model-option width=16``, ``--recipe
batch-size=256``): parsed by privbench's own ``parse_assignments``, a malformed one a one-line
usage error, and written back into the command line that a result file records."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from privbench import OptionError
from privbench.plugins.options import parse_assignments


def key_values(parser: argparse.ArgumentParser, values: list[str], flag: str) -> dict[str, str]:
    """The *values* given to *flag* as a dict, each key spelt with ``_`` for ``-`` (as run
    parameters and plugin options are); a malformed one ends the script with a usage error."""
    try:
        parsed = parse_assignments(values, flag=flag)
    except OptionError as err:
        parser.error(str(err))
    return {key.replace("-", "_"): value for key, value in parsed.items()}


def as_flags(flag: str, values: Mapping[str, str]) -> str:
    """`` FLAG key=value`` for each item, keys spelt with ``-`` as on a command line."""
    return "".join(f" {flag} {key.replace('_', '-')}={value}" for key, value in values.items())
