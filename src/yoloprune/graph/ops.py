"""The closed set of op kinds the channel tracer understands, and which torch functions map to each.

Every torch function seen during a trace is looked up here by identity (never by name). A function
that is not listed, and that touches a tensor carrying traced channels, is `UNKNOWN`: the tracer pins
the channels it touches and says so in the explanation. `KNOWN_OPS` is the checked list of
understood functions; `op_kind` is the one lookup everybody uses.
"""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F


class OpKind(enum.Enum):
    """How an op moves channels from its inputs to its outputs."""

    CONV = "conv"  # conv1d/2d/3d: input channels are read, output channels are new
    CONV_TRANSPOSE = "conv_transpose"  # transposed conv: weight axes swapped
    LINEAR = "linear"  # last dim is read, a new last dim is produced
    BATCH_NORM = "batch_norm"  # per-channel affine, channels pass through
    ELEMENTWISE = "elementwise"  # unary, shape-preserving: channels pass through
    BROADCAST = "broadcast"  # binary with broadcasting: equal channels are coupled
    CAT = "cat"  # along the channel axis: channels are concatenated; else coupled
    SPLIT = "split"  # chunk/split/unbind: channels are sliced into pieces
    INDEX = "index"  # x[...], gather: channels pass through unless the channel axis is picked from
    RESHAPE = "reshape"  # view/reshape/flatten/squeeze: the channel axis must survive intact
    PERMUTE = "permute"  # permute/transpose: the channel axis moves
    EXPAND = "expand"  # broadcast to a bigger shape: the channel axis must keep its size
    SPATIAL = "spatial"  # pooling, resizing, padding, dropout: channels pass through
    REDUCE = "reduce"  # sum/mean/max over dims: fine unless the channel axis is reduced
    SOFTMAX = "softmax"  # normalises over one dim: fine unless it is the channel axis
    STACK = "stack"  # adds a new dim: channels of all inputs are coupled
    FACTORY = "factory"  # new_zeros/zeros_like...: reads only shape, dtype and device
    NORM = "norm"  # layer/group norm: channels pass through, pinned when normalised together
    ATTENTION = "attention"  # nn.MultiheadAttention: one width for query, key, value, heads, output
    MODULE = "module"  # glue a module rule reported (graph.adapter.Glue); no torch function maps here
    UNKNOWN = "unknown"  # anything else: pins every channel it touches


T = torch.Tensor

_TABLE: dict[OpKind, tuple] = {
    OpKind.CONV: (torch.conv1d, torch.conv2d, torch.conv3d, F.conv1d, F.conv2d, F.conv3d),
    OpKind.CONV_TRANSPOSE: (torch.conv_transpose1d, torch.conv_transpose2d, F.conv_transpose2d),
    OpKind.LINEAR: (F.linear, torch._C._nn.linear),
    OpKind.BATCH_NORM: (F.batch_norm, torch.batch_norm),
    OpKind.ELEMENTWISE: (
        F.silu, F.relu, F.relu6, F.gelu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.mish, F.elu,
        F.softplus, F.sigmoid, F.tanh, F.hardtanh, torch.sigmoid, torch.tanh, torch.relu, torch.exp,
        torch.abs, torch.neg, torch.clamp, torch.sqrt, torch.square, torch.sin, torch.cos,
        T.sigmoid, T.tanh, T.relu, T.exp, T.abs, T.neg, T.__neg__, T.clamp, T.clamp_, T.sqrt,
        T.square, T.contiguous, T.clone, T.detach, T.float, T.half, T.to, T.type_as, T.type,
        T.sigmoid_, T.relu_, T.requires_grad_, T.cpu, T.cuda, T.double, T.bfloat16, T.pow, T.__pow__,
        torch.pow, torch.log, T.log,
    ),
    OpKind.BROADCAST: (
        torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum,
        T.add, T.sub, T.mul, T.div, T.add_, T.sub_, T.mul_, T.div_,
        T.__add__, T.__radd__, T.__iadd__, T.__sub__, T.__rsub__, T.__isub__,
        T.__mul__, T.__rmul__, T.__imul__, T.__truediv__, T.__rtruediv__, T.__itruediv__,
    ),
    OpKind.CAT: (torch.cat, torch.concat, torch.concatenate),
    OpKind.SPLIT: (torch.chunk, torch.split, torch.unbind, T.chunk, T.split, T.unbind),
    OpKind.INDEX: (T.__getitem__, T.gather, torch.gather),
    OpKind.RESHAPE: (
        T.view, T.reshape, T.flatten, T.unflatten, T.squeeze, T.unsqueeze, T.view_as, T.reshape_as,
        torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze,
    ),
    OpKind.PERMUTE: (T.permute, T.transpose, T.movedim, torch.permute, torch.transpose, torch.movedim),
    OpKind.EXPAND: (T.expand, T.expand_as),
    OpKind.SPATIAL: (
        F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
        F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate,
        F.upsample, F.pad, F.dropout, F.dropout2d, torch.max_pool2d, torch.avg_pool1d,
    ),
    OpKind.REDUCE: (
        torch.sum, torch.mean, torch.amax, torch.amin, torch.max, torch.min,
        T.sum, T.mean, T.amax, T.amin, T.max, T.min,
    ),
    OpKind.SOFTMAX: (F.softmax, F.log_softmax, torch.softmax, T.softmax, T.log_softmax),
    OpKind.STACK: (torch.stack,),
    OpKind.NORM: (F.layer_norm, torch.layer_norm, F.group_norm, torch.group_norm),
    OpKind.ATTENTION: (F.multi_head_attention_forward,),
    OpKind.FACTORY: (
        T.new_full, T.new_zeros, T.new_ones, T.new_empty, T.new_tensor, torch.zeros_like,
        torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like, torch.randn_like,
    ),
}  # fmt: skip

KNOWN_OPS: dict[object, OpKind] = {fn: kind for kind, fns in _TABLE.items() for fn in fns}


def op_kind(func: object) -> OpKind:
    """The kind of a torch function, `OpKind.UNKNOWN` when it is not in the checked list."""
    return KNOWN_OPS.get(func, OpKind.UNKNOWN)


def op_name(func: object) -> str:
    """A short readable name for a torch function (`torch.cat`, `Tensor.chunk`, `F.silu`)."""
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "fn" and func is F.max_pool2d:
        return "F.max_pool2d"
    qual = getattr(func, "__qualname__", name)
    if qual.startswith(("TensorBase.", "Tensor.")):
        return "Tensor." + qual.split(".", 1)[1]
    module = getattr(func, "__module__", "") or ""
    if module.startswith("torch.nn.functional"):
        return "F." + name
    if qual.startswith("getset_descriptor"):
        return "Tensor attribute"
    return "torch." + name
