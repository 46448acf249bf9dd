"""User-facing errors.

Everything the CLI can blame on its input derives from :class:`PrivbenchError`; the CLI prints
such errors as one line and exits with status 2, never with a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PrivbenchError(Exception):
    """An error caused by the user's input or environment, with an actionable message."""


class UnknownPluginError(PrivbenchError):
    """A plugin name that no loaded plugin provides."""


class PluginConflictError(PrivbenchError):
    """Two plugins registered the same name for the same kind."""


class PluginLoadError(PrivbenchError):
    """A plugin failed to load while loading was strict."""


class OptionError(PrivbenchError):
    """A plugin option that does not exist or has an invalid value."""


class DatasetNotFoundError(PrivbenchError):
    """A dataset whose files are not where privbench was told to look."""


class WorkspaceError(PrivbenchError):
    """A workspace privbench cannot use as it is (not a folder, not writable, a link leading
    out of it, a damaged database)."""


class TrainingDivergedError(PrivbenchError):
    """Training produced non-finite weights or loss; nothing of that model was stored."""


class AccessDeniedError(PrivbenchError):
    """An attack asked its model view for more access than it declared."""


def one_line(text: str) -> str:
    """*text* as an error message may quote it: newlines and other control characters escaped,
    so that the message stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` suffix for *name*, or an empty string when nothing is close."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.5)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(f"'{m}'" for m in matches) + "?"
