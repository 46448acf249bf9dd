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
from privbench.hookspecs import PLUGIN_API, hookimpl
from privbench.interfaces import (
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

__version__ = "0.1.0"
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
