"""privbench: how much does a trained image classifier leak about its training data?

Two audiences, one facade:

- Researchers and auditors: :func:`audit` runs an audit and returns an :class:`AuditResult`
  (``summary()``, ``to_pandas()``, per-attack metrics, ROC points, per-sample scores);
  :func:`load_run` reads an earlier run back; a :class:`Callback` (:class:`PrintProgress`, or
  your own) hears the progress. The
  ``privbench`` command line is a client of these.
- Plugin authors: the interfaces (:class:`Attack`, :class:`Defense`, :class:`Scorer`,
  :class:`ModelFactory`, :class:`DatasetSource`), what they receive (:class:`AttackContext`,
  :class:`ModelView`, :class:`TensorData`, ...), :data:`hookimpl` and the errors. Plugins import
  nothing else from the core but :mod:`privbench.helpers` and the test kit
  :mod:`privbench.testing`.
"""

from privbench.api import audit, audit_outputs, load_run
from privbench.engine.progress import Callback, PrintProgress
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.errors import (
    AccessDeniedError,
    DatasetNotFoundError,
    OptionError,
    PluginConflictError,
    PluginLoadError,
    PrivbenchError,
    TrainingDivergedError,
    UnknownPluginError,
    WorkspaceError,
    did_you_mean,
)
from privbench.plugins.hookspecs import PLUGIN_API, hookimpl
from privbench.plugins.interfaces import (
    Access,
    Attack,
    AttackContext,
    DatasetSource,
    Defense,
    LoadedDataset,
    Model,
    ModelFactory,
    ModelView,
    ReconstructionAttack,
    ReconstructionContext,
    Scorer,
    Signal,
    TensorData,
    Trainer,
    TrainingRecipe,
)
from privbench.results.parts import AttackResult, Failure
from privbench.results.result import AuditResult
from privbench.version import __version__

__plugin_api__ = PLUGIN_API

__all__ = [
    "Access",
    "AccessDeniedError",
    "Attack",
    "AttackContext",
    "AttackResult",
    "AuditResult",
    "AuditSpec",
    "Callback",
    "DatasetNotFoundError",
    "DatasetSource",
    "Defense",
    "Failure",
    "LoadedDataset",
    "Model",
    "ModelFactory",
    "ModelView",
    "OptionError",
    "PluginChoice",
    "PluginConflictError",
    "PluginLoadError",
    "PrintProgress",
    "PrivbenchError",
    "ReconstructionAttack",
    "ReconstructionContext",
    "Scorer",
    "Signal",
    "TensorData",
    "Trainer",
    "TrainingDivergedError",
    "TrainingRecipe",
    "UnknownPluginError",
    "WorkspaceError",
    "__version__",
    "audit",
    "audit_outputs",
    "did_you_mean",
    "hookimpl",
    "load_run",
]
