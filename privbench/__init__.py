"""privbench: how much does a trained image classifier leak about its training data?

The public API for plugin authors is what this module exports; plugins import nothing else from
the core.
"""

from privbench.errors import (
    AccessDeniedError,
    DatasetNotFoundError,
    OptionError,
    PluginConflictError,
    PluginLoadError,
    PrivbenchError,
    UnknownPluginError,
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
from privbench.version import __version__

__plugin_api__ = PLUGIN_API

__all__ = [
    "Access",
    "AccessDeniedError",
    "Attack",
    "AttackContext",
    "DatasetNotFoundError",
    "DatasetSource",
    "Defense",
    "LoadedDataset",
    "Model",
    "ModelFactory",
    "ModelView",
    "OptionError",
    "PluginConflictError",
    "PluginLoadError",
    "PrivbenchError",
    "ReconstructionAttack",
    "ReconstructionContext",
    "Scorer",
    "Signal",
    "TensorData",
    "Trainer",
    "TrainingRecipe",
    "UnknownPluginError",
    "__version__",
    "did_you_mean",
    "hookimpl",
]
