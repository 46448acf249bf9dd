"""Any timm architecture by name: ``--model timm/resnet18``.

Always built with ``pretrained=False``: privbench never downloads weights. Starting weights come
only from a local safetensors file (``checkpoint=PATH``), never from pickle, which can run code.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

# Any accidental model-hub access must fail at once instead of retrying for half a minute
# (huggingface_hub reads this when first imported, hence before timm).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import attrs
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from privbench import PrivbenchError, did_you_mean, hookimpl

log = logging.getLogger(__name__)


def _known_arch(instance: Any, attribute: attrs.Attribute, arch: str) -> None:
    import timm  # imported on use: it takes seconds, and most commands never build a model

    if not timm.is_model(arch):
        hint = did_you_mean(arch, timm.list_models())
        raise ValueError(f"timm has no architecture '{arch}'{hint} (see timm.list_models())")


def _local_safetensors(instance: Any, attribute: attrs.Attribute, checkpoint: str | None) -> None:
    if checkpoint is None:
        return
    path = Path(checkpoint).expanduser()
    if path.suffix != ".safetensors":
        raise ValueError(
            f"checkpoint {path} is not a .safetensors file; privbench loads weights only from "
            "safetensors, never pickle (convert with safetensors.torch.save_file)"
        )
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")


def _names(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_local_weights(net: nn.Module, checkpoint: str) -> list[str]:
    """Copy the tensors of a local safetensors file into *net*; returns the keys left fresh.

    Adapts as timm does for its pretrained weights: a stem for another channel count is summed
    or repeated to fit, and other tensors whose shape differs (a classifier head for another
    class count) keep their fresh initialisation. Keys under ``net.`` (weights privbench stored
    for a whole model) are read as the network's own.
    """
    from timm.models import adapt_input_conv

    path = Path(checkpoint).expanduser()
    try:
        stored = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise PrivbenchError(f"cannot read checkpoint {path}: {err}") from None
    own = net.state_dict()
    stored = {k[4:] if k.startswith("net.") and k not in own else k: v for k, v in stored.items()}
    first_conv = (getattr(net, "pretrained_cfg", None) or {}).get("first_conv") or ()
    for conv in [first_conv] if isinstance(first_conv, str) else first_conv:
        key = f"{conv}.weight"
        if key in stored and key in own and stored[key].shape != own[key].shape:
            # Left as is when it cannot be adapted: then it stays fresh like any other misfit.
            with contextlib.suppress(NotImplementedError, ValueError, AssertionError):
                stored[key] = adapt_input_conv(own[key].shape[1], stored[key], stored[key].shape[1])
    usable = {k: v for k, v in stored.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise PrivbenchError(
            f"checkpoint {path} has no tensor that fits this architecture; was it saved from "
            "another one?"
        )
    net.load_state_dict(usable, strict=False)
    fresh = sorted(set(own) - set(usable))
    unused = sorted(set(stored) - set(usable))
    if fresh:
        log.warning("checkpoint %s: kept fresh initialisation for %s", path, _names(fresh))
    if unused:
        log.warning("checkpoint %s: ignored %s", path, _names(unused))
    return fresh


@attrs.frozen
class TimmModel:
    """Options are checked when configured, so a typo fails before any training starts."""

    name: ClassVar[str] = "timm"
    description: ClassVar[str] = "any timm architecture (timm/<arch>), pretrained=False"

    arch: str = attrs.field(default="resnet18", validator=_known_arch)
    """A timm model name, as in timm.list_models()."""
    pretrained: bool = False
    """Start from pretrained weights, which must come from ``checkpoint``."""
    checkpoint: str | None = attrs.field(default=None, validator=_local_safetensors)
    """A local .safetensors file with starting weights (mismatched tensors stay fresh)."""
    drop_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.lt(1.0)]
    )
    """Dropout probability before the classifier (0: none)."""
    small_input_stem: bool = False
    """Replace a ResNet's ImageNet stem by one 3x3 stride-1 convolution, for small images.
    The ImageNet stem (7x7 stride-2 convolution, then max-pool) leaves the last stage 1x1 on
    32x32 images; the CIFAR ResNet-18 of the LiRA and Curvature Clues experiments has the small
    stem. For timm's ResNet family (a ``conv1`` convolution and a ``maxpool``)."""

    def __attrs_post_init__(self) -> None:
        if self.pretrained and not self.checkpoint:
            raise ValueError(
                "pretrained=true needs checkpoint=PATH to a local .safetensors file "
                "(privbench never downloads weights)"
            )

    def create(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        import timm

        c, h, w = input_shape
        kwargs: dict[str, Any] = {"pretrained": False, "num_classes": num_classes, "in_chans": c}
        if self.drop_rate:  # not every architecture takes it; ask only when it matters
            kwargs["drop_rate"] = self.drop_rate
        try:
            try:
                # Transformers fix their input size when built; convolutional nets take no size.
                net = timm.create_model(self.arch, img_size=(h, w), **kwargs)
            except TypeError as err:
                if "img_size" not in str(err):
                    raise
                net = timm.create_model(self.arch, **kwargs)
        except Exception as err:
            raise PrivbenchError(
                f"timm cannot build '{self.arch}' for {c}x{h}x{w} inputs and {num_classes} "
                f"classes: {type(err).__name__}: {err}"
            ) from None
        if self.small_input_stem:
            stem = getattr(net, "conv1", None)
            if not isinstance(stem, nn.Conv2d) or not hasattr(net, "maxpool"):
                raise PrivbenchError(
                    f"small_input_stem needs a ResNet stem (conv1 and maxpool); timm's "
                    f"'{self.arch}' has none"
                )
            net.conv1 = nn.Conv2d(c, stem.out_channels, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        if self.checkpoint:
            load_local_weights(net, self.checkpoint)
        return net


@hookimpl
def register_models(register):
    register(TimmModel, positional_option="arch")
