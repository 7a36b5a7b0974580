"""Per-layer channel knowledge, in one place: which parameter axis carries a member's channels and
how to slice a module so it keeps only some of them.

A *member* is one channel axis of one module: `("model.2.cv1.conv", "out")`. Axes:
  - "out": the channels a layer produces (Conv out, BatchNorm features, Linear out). For a
    depthwise conv, "out" is its only axis (input channel j produces output channel j).
  - "in": the channels a layer reads (Conv in, Linear in).
  - "param:NAME@D": a bare parameter NAME of the module whose dim D is aligned with the channels
    of a tensor it is combined with element-wise (e.g. a learned per-channel scale).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def is_depthwise(conv: nn.Module) -> bool:
    """True for a conv whose every group maps one input channel to one output channel."""
    return (
        isinstance(conv, _CONV) and conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    )


def channel_count(module: nn.Module, axis: str) -> int:
    """Number of channels a module has on an axis ("out", "in" or "param:NAME@D")."""
    if axis.startswith("param:"):
        name, dim = _param_axis(axis)
        return getattr(module, name).shape[dim]
    if isinstance(module, _CONV + _CONV_T):
        return module.out_channels if axis == "out" else module.in_channels
    if isinstance(module, _NORM):
        return module.num_features
    if isinstance(module, nn.Linear):
        return module.out_features if axis == "out" else module.in_features
    raise TypeError(f"{type(module).__name__} has no channel axis {axis!r}")


def _param_axis(axis: str) -> tuple[str, int]:
    name, dim = axis[len("param:") :].rsplit("@", 1)
    return name, int(dim)


def _select(t: torch.Tensor | None, dim: int, keep: torch.Tensor) -> None:
    if t is not None:
        t.data = t.data.index_select(dim, keep.to(t.device)).contiguous()


def _slice_conv(m: nn.Module, axis: str, keep: torch.Tensor) -> None:
    n = len(keep)
    transposed = isinstance(m, _CONV_T)
    if axis == "out":
        if is_depthwise(m):
            _select(m.weight, 0, keep)
            m.in_channels = m.groups = n
        else:
            _select(m.weight, 1 if transposed else 0, keep)
        _select(m.bias, 0, keep)
        m.out_channels = n
    else:
        _select(m.weight, 0 if transposed else 1, keep)
        m.in_channels = n


def _slice_norm(m: nn.Module, axis: str, keep: torch.Tensor) -> None:
    for t in (m.weight, m.bias, m.running_mean, m.running_var):
        _select(t, 0, keep)
    m.num_features = len(keep)


def _slice_linear(m: nn.Module, axis: str, keep: torch.Tensor) -> None:
    if axis == "out":
        _select(m.weight, 0, keep)
        _select(m.bias, 0, keep)
        m.out_features = len(keep)
    else:
        _select(m.weight, 1, keep)
        m.in_features = len(keep)


_SLICERS: tuple[tuple[tuple[type, ...], Callable[[nn.Module, str, torch.Tensor], None]], ...] = (
    (_CONV + _CONV_T, _slice_conv),
    (_NORM, _slice_norm),
    ((nn.Linear,), _slice_linear),
)


def slice_member(module: nn.Module, axis: str, keep: torch.Tensor) -> None:
    """Keep only channels `keep` (sorted indices) of `module` on `axis`, in place."""
    if axis.startswith("param:"):
        name, dim = _param_axis(axis)
        _select(getattr(module, name), dim, keep)
        return
    for types, slicer in _SLICERS:
        if isinstance(module, types):
            slicer(module, axis, keep)
            return
    raise TypeError(f"yoloprune cannot slice a {type(module).__name__}")


def input_weight(module: nn.Module, axis: str) -> tuple[torch.Tensor, int] | None:
    """The weight and its dim that read the member's channels, for masking; None if it reads none."""
    if axis != "in":
        return None
    return module.weight, (0 if isinstance(module, _CONV_T) else 1)


def output_weight(module: nn.Module, axis: str) -> tuple[torch.Tensor, int] | None:
    """The weight and its dim that produce the member's channels (filters), for importance scores."""
    if axis != "out" or isinstance(module, _NORM):
        return None
    if isinstance(module, _CONV_T):
        return module.weight, 1
    return module.weight, 0


def producing_tensors(module: nn.Module, axis: str) -> list[tuple[torch.Tensor, int]]:
    """The tensors, each with the dim along the member's channels, that make those channels: a
    layer's filters and bias, a norm's affine terms, a bare parameter. With them zeroed the layer
    outputs exact zeros on those channels (after an affine norm, whatever its input); empty for "in"."""
    if axis.startswith("param:"):
        name, dim = _param_axis(axis)
        return [(getattr(module, name), dim)]
    if axis != "out":
        return []
    found = output_weight(module, axis)
    tensors = [found] if found is not None else []
    if isinstance(module, _NORM):
        tensors += [(module.weight, 0)] if module.weight is not None else []
    bias = getattr(module, "bias", None)
    return tensors + ([(bias, 0)] if isinstance(bias, torch.Tensor) else [])


def norm_scale(module: nn.Module, axis: str) -> torch.Tensor | None:
    """The per-channel scale (BatchNorm gamma) of a normalisation member; None for any other member."""
    if axis != "out" or not isinstance(module, _NORM) or module.weight is None:
        return None
    return module.weight


# The attributes slicing changes, per layer type: what a saved architecture records to rebuild widths.
_WIDTH_ATTRIBUTES: tuple[tuple[tuple[type, ...], tuple[str, ...]], ...] = (
    (_CONV + _CONV_T, ("in_channels", "out_channels", "groups")),
    (_NORM, ("num_features",)),
    ((nn.Linear,), ("in_features", "out_features")),
)


def width_attributes(module: nn.Module) -> dict[str, int]:
    """The width attributes of a sliceable layer (`{"in_channels": 16, ...}`); empty for other modules."""
    for types, names in _WIDTH_ATTRIBUTES:
        if isinstance(module, types):
            return {name: getattr(module, name) for name in names}
    return {}


def implied_widths(module: nn.Module) -> dict[str, int]:
    """The width attributes a sliceable layer's tensors imply (its `groups` taken as given); empty when
    it has no tensors. Equal to `width_attributes` for every consistent layer."""
    if isinstance(module, _CONV + _CONV_T):
        rows, cols = module.weight.shape[:2]
        cols *= module.groups  # weight: (out, in / groups, *k); transposed: (in, out / groups, *k)
        out, c_in = (cols, rows) if isinstance(module, _CONV_T) else (rows, cols)
        return {"in_channels": c_in, "out_channels": out, "groups": module.groups}
    if isinstance(module, _NORM):
        t = module.weight if module.weight is not None else module.running_mean
        return {} if t is None else {"num_features": t.shape[0]}
    if isinstance(module, nn.Linear):
        return {"in_features": module.weight.shape[1], "out_features": module.weight.shape[0]}
    return {}
