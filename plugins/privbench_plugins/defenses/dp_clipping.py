"""Per-sample gradient clipping in one backward pass, without per-sample gradients in memory.

DP-SGD needs ``sum_i clip(g_i)``: every sample's gradient scaled to norm at most C, summed.
opacus' reference mode stores every per-sample gradient of every parameter (``B x P`` numbers,
205 MB for ``conv-fc`` at batch 128) and clips afterwards. Book-keeping (Bu, Wang, Zha &
Karypis, "Differentially Private Optimization on Large Model at Small Cost", ICML 2023) needs
one backward pass and the two tensors that make up every layer's gradient: the layer's input
``a`` (kept by a forward hook) and the gradient ``g`` of the loss with respect to its output
(caught by a tensor hook on the output):

1. the backward pass computes only the ``g`` of every layer (parameters do not require grad
   during it, so autograd skips their gradients);
2. each sample's squared gradient norm, layer by layer: for a linear layer on vectors it is
   ``|a_i|^2 |g_i|^2`` (the "ghost norm" of Goodfellow 2015, Li et al. 2022), for a convolution
   on unfolded inputs either the ghost norm ``sum_{t,s} (a_t.a_s)(g_t.g_s)`` or the
   per-sample gradient itself, whichever costs fewer multiplications (Bu et al.'s layer-wise
   choice), for a norm layer its per-sample affine gradients (one number per channel);
3. the clip factors ``c_i = min(1, C / (|g_i| + 1e-6))`` (opacus' formula);
4. the clipped sum as one matrix product per layer, ``(c * g)^T a``: the weight gradient of
   the batch with each sample's output gradient scaled by its clip factor.

Layers it knows: ``nn.Linear``, ``nn.Conv2d`` (any stride, padding, dilation; ``groups=1``),
``nn.GroupNorm`` and ``nn.LayerNorm`` (exactly these types: a subclass may compute something
else). :func:`unsupported` names any other module holding a trainable parameter; DP-SGD then
needs one of opacus' modes.

Models that modify tensors in place (timm's ResNets: ``ReLU(inplace=True)``, ``x += shortcut``)
work: a tensor hook receives the gradient with respect to the value the layer returned even
when later ops change it in place, and a layer input changed in place after it was kept is
detected (its version counter) and refused rather than used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

SUPPORTED = (nn.Linear, nn.Conv2d, nn.GroupNorm, nn.LayerNorm)
"""The layer types whose per-sample gradient norms and clipped sums this module computes."""


class UnsupportedModelError(ValueError):
    """A model with a trainable parameter in a layer book-keeping does not know."""


def unsupported(model: nn.Module) -> list[str]:
    """Why book-keeping cannot clip *model*'s per-sample gradients: one reason per module
    holding trainable parameters it cannot handle (empty when it can)."""
    reasons = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        label = f"{name or 'the model'} ({type(module).__name__})"
        if len(own) != len(list(module.parameters(recurse=False))):
            reasons.append(f"{label} has both frozen and trainable parameters")
            continue
        if type(module) not in SUPPORTED:
            reasons.append(f"{label} is not one of Linear, Conv2d, GroupNorm, LayerNorm")
        elif isinstance(module, nn.Conv2d) and (
            module.groups != 1 or module.padding_mode != "zeros" or module.padding == "same"
        ):
            reasons.append(f"{label} has groups, 'same' or non-zero padding")
    return reasons


class _Tap:
    """One layer's input (kept in the forward pass) and the gradient of the loss with respect
    to its output (caught in the backward pass)."""

    __slots__ = ("grad", "inputs", "layer", "shape", "version")

    def __init__(self, layer: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> None:
        self.layer = layer
        self.inputs = inputs
        self.version = inputs._version
        self.shape = output.shape
        self.grad: torch.Tensor | None = None

    def catch(self, grad: torch.Tensor) -> None:
        self.grad = grad

    def output_grad(self, batch: int) -> torch.Tensor:
        """The gradient of the *sum* of per-sample losses with respect to the layer's output
        (the loss is a mean over ``batch`` samples)."""
        if self.inputs._version != self.version:
            raise UnsupportedModelError(
                f"the input of a {type(self.layer).__name__} layer was modified in place after "
                "the layer read it; book-keeping cannot clip this model"
            )
        if self.grad is None:  # the layer's output did not reach the loss
            return self.inputs.new_zeros(self.shape)
        return self.grad * batch


class BookKeeping:
    """Clipped per-sample gradient sums of *model* for DP-SGD, by book-keeping.

    Use as a context manager around training: inside it the model's parameters do not require
    grad (autograd computes only the output gradients the clipping needs) and every supported
    layer records its input and output gradient at each forward pass. After ``loss.backward()``
    of a batch's *mean* loss, :meth:`clipped_sum` returns ``sum_i clip(grad_i)`` per parameter.
    """

    def __init__(self, model: nn.Module, max_grad_norm: float) -> None:
        reasons = unsupported(model)
        if reasons:
            raise UnsupportedModelError("; ".join(reasons))
        self.model = model
        self.max_grad_norm = max_grad_norm
        self.layers = [
            m
            for m in model.modules()
            if isinstance(m, SUPPORTED) and any(p.requires_grad for p in m.parameters(False))
        ]
        self.taps: list[_Tap] = []

    @contextmanager
    def active(self) -> Iterator[BookKeeping]:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        handles = [layer.register_forward_hook(self._record) for layer in self.layers]
        for p in trainable:
            p.requires_grad_(False)
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            for p in trainable:
                p.requires_grad_(True)
            self.taps = []

    def _record(self, layer: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> Any:
        if not torch.is_grad_enabled() or not layer.training:
            return None
        tap = _Tap(layer, inputs[0].detach(), output)
        self.taps.append(tap)
        if output.requires_grad:
            # A tensor hook gets the gradient with respect to the value the layer returned,
            # even when later ops change that tensor in place (ReLU(inplace=True), +=).
            output.register_hook(tap.catch)
            return None
        # Nothing before this layer requires grad (its parameters are frozen here): a zero
        # tensor that does is added, so that the backward pass reaches the layer's output.
        probe = torch.zeros_like(output, requires_grad=True)
        probe.register_hook(tap.catch)
        return output + probe

    def clipped_sum(self) -> tuple[dict[nn.Parameter, torch.Tensor], torch.Tensor]:
        """Per parameter, the sum over the batch of the clipped per-sample gradients; and the
        per-sample gradient norms before clipping."""
        taps, self.taps = self.taps, []
        if Counter(id(t.layer) for t in taps) != Counter(map(id, self.layers)):
            raise UnsupportedModelError(
                "every layer with parameters must run exactly once per forward pass for "
                "book-keeping clipping"
            )
        batch = taps[0].inputs.shape[0]
        grads = [tap.output_grad(batch) for tap in taps]
        squared = torch.zeros(batch, dtype=torch.float32, device=grads[0].device)
        prepared = []
        for tap, grad in zip(taps, grads, strict=True):
            norm2, state = _NORMS[type(tap.layer)](tap.layer, tap.inputs, grad)
            squared += norm2.float()
            prepared.append(state)
        norms = squared.sqrt()
        clip = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        sums: dict[nn.Parameter, torch.Tensor] = {}
        for tap, state in zip(taps, prepared, strict=True):
            sums.update(_SUMS[type(tap.layer)](tap.layer, state, clip))
        return sums, norms


# Each layer kind: (layer, input, output grad) -> (per-sample squared norm, state for the sum),
# then (layer, state, clip factors) -> {parameter: clipped sum}.


def _linear_norms(layer: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, Any]:
    batch = a.shape[0]
    if a.dim() == 2:
        norm2 = a.square().sum(1) * g.square().sum(1)
        if layer.bias is not None:
            norm2 = norm2 + g.square().sum(1)
        return norm2, (a, g)
    a3, g3 = a.reshape(batch, -1, a.shape[-1]), g.reshape(batch, -1, g.shape[-1])
    norm2 = _weight_norms(a3.transpose(1, 2), g3.transpose(1, 2))
    if layer.bias is not None:
        norm2 = norm2 + g3.sum(1).square().sum(1)
    return norm2, (a3, g3)


def _linear_sums(
    layer: nn.Linear, state: Any, clip: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    a, g = state
    scaled = g * clip.view(-1, *([1] * (g.dim() - 1))).to(g.dtype)
    sums = {layer.weight: scaled.reshape(-1, g.shape[-1]).T @ a.reshape(-1, a.shape[-1])}
    if layer.bias is not None:
        sums[layer.bias] = scaled.reshape(-1, g.shape[-1]).sum(0)
    return sums


def _weight_norms(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample squared norm of ``g_i a_i^T`` for ``a: B x K x T``, ``g: B x O x T``, by the
    cheaper of the ghost norm (``T^2 (K + O)`` multiplications a sample) and instantiating the
    ``O x K`` gradient (``O K T``)."""
    _, k, t = a.shape
    o = g.shape[1]
    if t * t * (k + o) < o * k * t:
        return (torch.bmm(a.transpose(1, 2), a) * torch.bmm(g.transpose(1, 2), g)).sum((1, 2))
    return torch.linalg.vector_norm(torch.bmm(g, a.transpose(1, 2)), dim=(1, 2)).square()


def _unfold(layer: nn.Conv2d, a: torch.Tensor) -> torch.Tensor:
    """The input patches each output position sees, ``B x (C kh kw) x (H' W')``, in the
    weight's order. ``F.unfold`` does the same but took 0.5-1.5 s for a batch of 128 one-channel
    28x28 images on this CPU; a strided view of the padded input copied once takes
    milliseconds."""
    (ph, pw), (sh, sw), (dh, dw) = layer.padding, layer.stride, layer.dilation
    kh, kw = layer.kernel_size
    padded = F.pad(a, (pw, pw, ph, ph)) if ph or pw else a
    b, c, h, w = padded.shape
    out_h, out_w = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    s0, s1, s2, s3 = padded.stride()
    patches = padded.as_strided(
        (b, c, kh, kw, out_h, out_w), (s0, s1, s2 * dh, s3 * dw, s2 * sh, s3 * sw)
    )
    return patches.reshape(b, c * kh * kw, out_h * out_w)


def _conv_norms(layer: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, Any]:
    g3 = g.flatten(2)
    norm2 = _weight_norms(_unfold(layer, a), g3)
    if layer.bias is not None:
        norm2 = norm2 + g3.sum(2).square().sum(1)
    return norm2, (a, g)


def _conv_sums(
    layer: nn.Conv2d, state: Any, clip: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    a, g = state
    scaled = g * clip.view(-1, 1, 1, 1).to(g.dtype)
    # sum_i c_i g_i a_i^T: the batch's weight gradient with each sample's output gradient
    # scaled, by the convolution's own backward kernel
    _, weight, _ = torch.ops.aten.convolution_backward(
        scaled,
        a,
        layer.weight,
        None,
        layer.stride,
        layer.padding,
        layer.dilation,
        False,
        [0, 0],
        layer.groups,
        [False, True, False],
    )
    sums = {layer.weight: weight}
    if layer.bias is not None:
        sums[layer.bias] = scaled.sum((0, 2, 3))
    return sums


def _normalized(layer: nn.Module, a: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.GroupNorm):
        return F.group_norm(a, layer.num_groups, eps=layer.eps)
    return F.layer_norm(a, layer.normalized_shape, eps=layer.eps)


def _norm_layer_grads(
    layer: nn.GroupNorm | nn.LayerNorm, a: torch.Tensor, g: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-sample gradients of the affine weight and bias: ``B x (parameter shape)``."""
    weighted = _normalized(layer, a) * g
    if isinstance(layer, nn.GroupNorm):  # one weight per channel (dim 1)
        dims = tuple(range(2, a.dim()))
        return {"weight": weighted.sum(dims), "bias": g.sum(dims)}
    # one weight per element of the normalised trailing shape
    shape, batch = layer.normalized_shape, a.shape[0]
    return {
        "weight": weighted.reshape(batch, -1, *shape).sum(1),
        "bias": g.reshape(batch, -1, *shape).sum(1),
    }


def _norm_layer_norms(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> tuple[Any, Any]:
    grads = {
        name: value
        for name, value in _norm_layer_grads(layer, a, g).items()  # type: ignore[arg-type]
        if getattr(layer, name, None) is not None
    }
    norm2 = sum(v.flatten(1).square().sum(1) for v in grads.values())
    return norm2, grads


def _norm_layer_sums(
    layer: nn.Module, state: Any, clip: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    return {
        getattr(layer, name): torch.einsum("b,b...->...", clip.to(value.dtype), value)
        for name, value in state.items()
    }


_NORMS = {
    nn.Linear: _linear_norms,
    nn.Conv2d: _conv_norms,
    nn.GroupNorm: _norm_layer_norms,
    nn.LayerNorm: _norm_layer_norms,
}
_SUMS = {
    nn.Linear: _linear_sums,
    nn.Conv2d: _conv_sums,
    nn.GroupNorm: _norm_layer_sums,
    nn.LayerNorm: _norm_layer_sums,
}
