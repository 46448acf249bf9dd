"""Shared logic for plugins: the core's public helper API, importable by any plugin, built-in
or third-party (``from privbench.helpers import ...``), beside the interfaces that
:mod:`privbench` exports.

Each module has one job:

- :mod:`~privbench.helpers.gaussian`: per-sample Gaussian fits to IN / OUT shadow signals, the
  fill-in of a missing side, the Gaussian log-density (LiRA, Curvature Clues);
- :mod:`~privbench.helpers.queries`: population logits averaged over the image and its mirror;
- :mod:`~privbench.helpers.evaluation`: batched outputs, predictions and accuracy of a model;
- :mod:`~privbench.helpers.training`: the seeded epoch loop of a defense that trains its own
  way, and ``autocast``;
- :mod:`~privbench.helpers.models`: the timm-style backbone / pool / head base class;
- :mod:`~privbench.helpers.datasets`: a ``LoadedDataset`` with the train split's per-channel
  statistics, and the seeded subset of a ``limit`` option;
- :mod:`~privbench.helpers.idx`: the idx files of the MNIST family, gzipped or not, verified as
  they are read.
"""

from privbench.helpers.datasets import channel_stats, limit_indices, loaded_dataset
from privbench.helpers.evaluation import accuracy, count_classes, model_outputs, predictions
from privbench.helpers.gaussian import GaussianFit, fill_missing_means, mean_shift, normal_logpdf
from privbench.helpers.idx import read_idx
from privbench.helpers.models import TimmStyleNet, mlp_features
from privbench.helpers.queries import mirror_averaged_logits
from privbench.helpers.training import (
    autocast,
    seeded_generator,
    shuffled_batches,
    train_epochs,
)

__all__ = [
    "GaussianFit",
    "TimmStyleNet",
    "accuracy",
    "autocast",
    "channel_stats",
    "count_classes",
    "fill_missing_means",
    "limit_indices",
    "loaded_dataset",
    "mean_shift",
    "mirror_averaged_logits",
    "mlp_features",
    "model_outputs",
    "normal_logpdf",
    "predictions",
    "read_idx",
    "seeded_generator",
    "shuffled_batches",
    "train_epochs",
]
