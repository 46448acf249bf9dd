"""Any timm architecture by name: ``--model timm/resnet18``.

Always built with ``pretrained=False``: privbench never downloads weights. Starting weights come
only from a local safetensors file (``checkpoint=PATH``), never from pickle.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import ClassVar

# Any accidental model-hub access must fail at once instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import attrs
import timm
from safetensors.torch import load_file
from torch import nn

from privbench import PrivbenchError, hookimpl

log = logging.getLogger(__name__)


def load_local_weights(net: nn.Module, checkpoint: str) -> list[str]:
    """Copy the tensors of a local safetensors file into *net*; returns the keys left out.

    Tensors whose shape differs (a classifier head for another class count, a stem for another
    channel count) are left at their fresh initialisation, as timm does when adapting pretrained
    weights.
    """
    path = Path(checkpoint).expanduser()
    if path.suffix != ".safetensors":
        raise PrivbenchError(
            f"checkpoint {path} is not a .safetensors file; privbench loads weights only from "
            "safetensors (convert it with safetensors.torch.save_file)"
        )
    if not path.is_file():
        raise PrivbenchError(f"checkpoint {path} does not exist")
    stored = load_file(str(path))
    own = net.state_dict()
    usable = {k: v for k, v in stored.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise PrivbenchError(f"checkpoint {path} has no tensor that fits this architecture")
    skipped = sorted(set(own) - set(usable))
    net.load_state_dict(usable, strict=False)
    if skipped:
        log.warning("checkpoint %s: kept fresh initialisation for %s", path, ", ".join(skipped))
    return skipped


@attrs.frozen
class TimmModel:
    name: ClassVar[str] = "timm"
    description: ClassVar[str] = "any timm architecture (timm/<arch>), pretrained=False"

    arch: str = "resnet18"
    pretrained: bool = False
    """Only with ``checkpoint``: privbench never downloads weights."""
    checkpoint: str | None = None
    """A local .safetensors file with starting weights."""
    drop_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.lt(1.0)]
    )

    def __attrs_post_init__(self) -> None:
        if self.pretrained and not self.checkpoint:
            raise ValueError(
                "pretrained=true needs checkpoint=PATH to a local .safetensors file "
                "(privbench never downloads weights)"
            )
        if not timm.is_model(self.arch):
            close = difflib.get_close_matches(self.arch, timm.list_models(), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"timm has no architecture '{self.arch}'{hint}")

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        kwargs = {
            "pretrained": False,
            "num_classes": num_classes,
            "in_chans": input_shape[0],
            "drop_rate": self.drop_rate,
        }
        try:
            # Transformers fix their input size at construction; convolutional nets take no size.
            net = timm.create_model(self.arch, img_size=tuple(input_shape[1:]), **kwargs)
        except TypeError:
            net = timm.create_model(self.arch, **kwargs)
        if self.checkpoint:
            load_local_weights(net, self.checkpoint)
        return net


@hookimpl
def register_models(register):
    register(TimmModel, positional_option="arch")
