"""The tracer's op rules: for each kind of op (`graph/ops.py`), how the channel elements of its
inputs become those of its outputs (copied, sliced, concatenated, unified, bound to a layer, or
pinned with a reason).

Scope: `OpRules` is a mixin of the tracer in `trace.py`, which owns the element store (`fresh`,
`union`, `pin`, `bind`, `set`, `info`, `node`); each rule reads the op's arguments and its result.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from yoloprune.graph.elements import Member, flat_tensors
from yoloprune.graph.ops import OpKind, op_kind, op_name
from yoloprune.text import plural

LAYER_NORM_REASON = (
    "LayerNorm normalises across the channel axis: removing a channel changes the mean and variance "
    "every kept channel is normalised with, so no prune of these channels is exact"
)
GROUP_NORM_REASON = (
    "GroupNorm normalises channels in groups: removing a channel changes its group's mean and variance "
    "(and the group count is fixed), so no prune of these channels is exact"
)
ATTENTION_REASON = (
    "nn.MultiheadAttention has one width, embed_dim, for its query, key, value, heads and output: a "
    "head can go only with as many channels of the query stream (embed_dim = num_heads x head_dim), a "
    "per-head q/k dim not at all (q, k and v share head_dim, which also sets the softmax scale)"
)


def call_arg(args: tuple, kwargs: dict, index: int, name: str, default: object = None) -> object:
    return args[index] if len(args) > index else kwargs.get(name, default)


class OpRules:
    """One method per op kind; `rules()` maps each `OpKind` to its method."""

    def rules(self) -> dict[OpKind, Callable]:
        return {
            OpKind.CONV: self._conv,
            OpKind.CONV_TRANSPOSE: self._conv,
            OpKind.LINEAR: self._linear,
            OpKind.BATCH_NORM: self._batch_norm,
            OpKind.ELEMENTWISE: self._elementwise,
            OpKind.BROADCAST: self._broadcast,
            OpKind.CAT: self._cat,
            OpKind.SPLIT: self._split,
            OpKind.INDEX: self._index,
            OpKind.RESHAPE: self._reshape,
            OpKind.PERMUTE: self._view_by_stride,
            OpKind.EXPAND: self._view_by_stride,
            OpKind.SPATIAL: self._spatial,
            OpKind.REDUCE: self._reduce,
            OpKind.SOFTMAX: self._softmax,
            OpKind.STACK: self._stack,
            OpKind.NORM: self._norm,
            OpKind.ATTENTION: self._attention,
            OpKind.FACTORY: lambda *a: None,
            OpKind.MODULE: lambda *a: None,
            OpKind.UNKNOWN: self._unknown,
        }

    # -- handlers: each sets the labels of the op's outputs ----------------------------------
    def _unknown(self, args, kwargs, out, ins, reason: str | None = None) -> None:
        reason = reason or f"{op_name(self._func)} is not an op the tracer understands"
        for v in ins:
            self.pin(v.elems, reason)
        outs = []
        for t in flat_tensors(out):
            if t.ndim >= 2 and id(t) not in self.by_tensor:
                elems = self.fresh(t.shape[1])
                self.pin(elems, reason)
                outs.append((t, 1, elems))
        self.node(OpKind.UNKNOWN, ins, outs, reason=reason)

    def _owner(self, t: object) -> tuple[str, str] | None:
        return self.params.get(id(t)) if isinstance(t, torch.Tensor) else None

    def _conv(self, args, kwargs, out, ins) -> None:
        x, w = args[0], call_arg(args, kwargs, 1, "weight")
        owner, xv = self._owner(w), self.info(x)
        if owner is None or xv is None:
            return self._unknown(
                args, kwargs, out, ins, "convolution with a weight that is not a module parameter"
            )
        if xv.cdim != 1:
            return self._unknown(
                args, kwargs, out, ins, "convolution over an axis that is not the channel axis"
            )
        name = owner[0]
        groups = int(call_arg(args, kwargs, 6, "groups", 1))
        c_in, c_out = x.shape[1], out.shape[1]
        if groups == 1:
            self.bind(Member(name, "in"), xv.elems)
            elems = self.fresh(c_out)
            self.bind(Member(name, "out"), elems)
        elif groups == c_in == c_out:
            elems = xv.elems
            self.bind(Member(name, "out"), elems)
        else:
            reason = (
                f"grouped conv (groups={groups}) ties channels in blocks; only depthwise convs are pruned"
            )
            self.pin(xv.elems, reason, name)
            elems = self.fresh(c_out)
            self.bind(Member(name, "out"), elems)
            self.pin(elems, reason, name)
        self.node(OpKind.CONV, [xv], [(out, 1, elems)], Member(name, "in"), groups=groups)

    def _linear(self, args, kwargs, out, ins) -> None:
        x, w = args[0], call_arg(args, kwargs, 1, "weight")
        owner, xv = self._owner(w), self.info(x)
        if owner is None or xv is None or xv.cdim != x.ndim - 1:
            return self._unknown(args, kwargs, out, ins, "linear layer that does not read the channel axis")
        self.bind(Member(owner[0], "in"), xv.elems)
        elems = self.fresh(out.shape[-1])
        self.bind(Member(owner[0], "out"), elems)
        self.node(OpKind.LINEAR, [xv], [(out, out.ndim - 1, elems)], Member(owner[0], "in"))

    def _batch_norm(self, args, kwargs, out, ins) -> None:
        x, xv = args[0], ins[0]
        owner = self._owner(call_arg(args, kwargs, 3, "weight")) or self._owner(
            call_arg(args, kwargs, 1, "running_mean")
        )
        if xv.cdim != 1 or x.ndim < 2:
            return self._unknown(
                args, kwargs, out, ins, "batch norm over an axis that is not the channel axis"
            )
        member = Member(owner[0], "out") if owner else None
        if member:
            self.bind(member, xv.elems)
        self.node(OpKind.BATCH_NORM, [xv], [(out, 1, xv.elems)], member)

    def _elementwise(self, args, kwargs, out, ins) -> None:
        x, xv = args[0], self.info(args[0])
        if xv is None:  # e.g. arange(w).type_as(feature): only dtype and device are read
            return None
        if self._func in (torch.pow, torch.Tensor.pow, torch.Tensor.__pow__) and len(ins) > 1:
            return self._broadcast(args, kwargs, out, ins)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            return self._unknown(args, kwargs, out, ins)
        self.node(OpKind.ELEMENTWISE, [xv], [(out, xv.cdim, xv.elems)])

    def _broadcast(self, args, kwargs, out, ins) -> None:
        operands = [a for a in args[:2] if isinstance(a, torch.Tensor)]
        cdims = {self.info(t).cdim + out.ndim - t.ndim for t in operands if self.info(t) is not None}
        if len(cdims) != 1:
            return self._unknown(args, kwargs, out, ins, "element-wise op between different channel axes")
        cdim = cdims.pop()
        size = out.shape[cdim]
        elems = None
        for t in operands:
            v, d = self.info(t), cdim - (out.ndim - t.ndim)
            along = t.shape[d] if d >= 0 else 1
            if v is None:
                continue
            if along == size:
                if elems is None:
                    elems = v.elems
                else:
                    self.union(elems, v.elems)
            else:
                self.pin(v.elems, f"a {along}-channel tensor is broadcast over {size} channels")
        if elems is None:  # only a broadcast labelled operand: the output's channels are new
            elems = self.fresh(size)
            self.pin(elems, f"a 1-channel tensor is broadcast over {size} channels")
        for t in operands:
            d = cdim - (out.ndim - t.ndim)
            if self.info(t) is not None or d < 0 or t.shape[d] == 1 or size == 1:
                continue
            owner = self._owner(t)
            if owner is not None:
                self.bind(Member(owner[0], f"param:{owner[1]}@{d}"), elems)
            else:
                self.pin(elems, f"combined element-wise with a constant tensor of {plural(size, 'channel')}")
        self.node(OpKind.BROADCAST, ins, [(out, cdim, elems)])

    def _cat(self, args, kwargs, out, ins) -> None:
        tensors = list(call_arg(args, kwargs, 0, "tensors"))
        dim = int(call_arg(args, kwargs, 1, "dim", 0)) % out.ndim
        cdims = {self.info(t).cdim for t in tensors if self.info(t) is not None}
        if len(cdims) != 1:
            return self._unknown(
                args, kwargs, out, ins, "concatenation of tensors with different channel axes"
            )
        cdim = cdims.pop()
        if dim == cdim:
            parts = []
            for t in tensors:
                v = self.info(t)
                if v is None:
                    v_elems = self.fresh(t.shape[dim])
                    self.pin(v_elems, "constant channels are concatenated here")
                    parts.append(v_elems)
                else:
                    parts.append(v.elems)
            slots = [len(p) for p in parts]
            return self.node(OpKind.CAT, ins, [(out, cdim, np.concatenate(parts))], slots=slots)
        first = ins[0].elems
        for v in ins[1:]:
            self.union(first, v.elems)
        for t in tensors:
            if self.info(t) is None and t.shape[cdim] > 1:
                self.pin(first, "concatenated with a constant tensor along another axis")
        self.node(OpKind.CAT, ins, [(out, cdim, first)], slots=None)

    def _split(self, args, kwargs, out, ins) -> None:
        x, xv = args[0], ins[0]
        pieces = list(out) if isinstance(out, (tuple, list)) else [out]
        unbind = self._func in (torch.unbind, torch.Tensor.unbind)
        dim = int(call_arg(args, kwargs, 1 if unbind else 2, "dim", 0)) % x.ndim
        if unbind:
            if dim == xv.cdim:
                return self._unknown(args, kwargs, out, ins, "unbind along the channel axis")
            cdim = xv.cdim - (dim < xv.cdim)
            return self.node(OpKind.SPLIT, ins, [(p, cdim, xv.elems) for p in pieces])
        if dim != xv.cdim:
            return self.node(OpKind.SPLIT, ins, [(p, xv.cdim, xv.elems) for p in pieces])
        sizes = [p.shape[dim] for p in pieces]
        bounds = np.cumsum([0, *sizes])
        parts = [xv.elems[a:b] for a, b in itertools.pairwise(bounds)]
        chunk = self._func in (torch.chunk, torch.Tensor.chunk)
        module = self.modules.get(self.stack[-1])
        adapts = chunk or (module is not None and self.adapts_split(module))
        if adapts and len(set(sizes)) == 1:
            for p in parts[1:]:  # equal pieces stay equal: piece k loses the channels piece 0 loses
                self.union(parts[0], p)
        elif adapts:
            self.pin(xv.elems, f"split into unequal pieces {sizes} of the channel axis")
        else:
            kind = type(module).__name__ if module is not None else "the model"
            self.pin(xv.elems, f"split into fixed sizes {sizes} of the channel axis (constants of {kind})")
        self.node(OpKind.SPLIT, ins, [(p, xv.cdim, e) for p, e in zip(pieces, parts, strict=True)],
                  sizes=sizes, chunk=chunk)  # fmt: skip

    def _index(self, args, kwargs, out, ins) -> None:
        if self._func in (torch.gather, torch.Tensor.gather):
            return self._gather_rows(args, kwargs, out, ins)
        x, xv = args[0], ins[0]
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        if self.info(x) is None:  # constants picked by traced indices: no channels to follow
            return None
        if not isinstance(out, torch.Tensor):
            return self._unknown(args, kwargs, out, ins, "advanced indexing")
        if any(not (i is None or i is Ellipsis or isinstance(i, (int, slice))) for i in index):
            return self._gather(args, kwargs, out, ins)
        consuming = sum(1 for i in index if i is not None and i is not Ellipsis)
        expanded: list = []
        for i in index:
            expanded.extend([slice(None)] * (x.ndim - consuming) if i is Ellipsis else [i])
        expanded.extend([slice(None)] * (x.ndim - sum(1 for i in expanded if i is not None)))
        in_d = out_d = 0
        for i in expanded:
            if i is None:
                out_d += 1
                continue
            if in_d == xv.cdim:
                if isinstance(i, int):
                    return self._unknown(args, kwargs, out, ins, "a single channel is picked by index")
                elems = xv.elems[i]
                if len(elems) != len(xv.elems):
                    self.pin(xv.elems, f"the channel axis is sliced with fixed offsets [{i.start}:{i.stop}]")
                return self.node(OpKind.INDEX, ins, [(out, out_d, elems)])
            in_d += 1
            out_d += not isinstance(i, int)
        self._unknown(args, kwargs, out, ins, "indexing the tracer could not follow")

    def _gather(self, args, kwargs, out, ins) -> None:
        """Advanced indexing (`x[rows, cols]`, `x[mask]`): run the same index on a tensor holding each
        channel's position; the channels pass through when one output dim reads them all in order."""
        x, xv = args[0], ins[0]
        c = x.shape[xv.cdim]
        where = [1] * x.ndim
        where[xv.cdim] = c
        picked = torch.arange(c, device=x.device).view(where).expand(x.shape)[args[1]]  # out's shape
        for k in range(picked.ndim):
            if picked.shape[k] != c:
                continue
            along = [1] * picked.ndim
            along[k] = c
            if torch.equal(picked, torch.arange(c, device=x.device).view(along).expand(picked.shape)):
                return self.node(OpKind.INDEX, ins, [(out, k, xv.elems)])
        self._unknown(args, kwargs, out, ins, "advanced indexing picks or reorders channels")

    def _gather_rows(self, args, kwargs, out, ins) -> None:
        """`x.gather(dim, index)` along another axis, with the same index for every channel: the
        channels pass through (e.g. boxes gathered by query index)."""
        x, xv = args[0], self.info(args[0])
        dim, index = call_arg(args, kwargs, 1, "dim"), call_arg(args, kwargs, 2, "index")
        if xv is None:
            return None
        if (
            int(dim) % x.ndim == xv.cdim
            or index.shape[xv.cdim] != x.shape[xv.cdim]
            or not torch.equal(index, index.narrow(xv.cdim, 0, 1).expand_as(index))
        ):
            return self._unknown(args, kwargs, out, ins, "gather picks or reorders channels")
        self.node(OpKind.INDEX, ins, [(out, xv.cdim, xv.elems)])

    def _norm(self, args, kwargs, out, ins) -> None:
        """LayerNorm (over the trailing `normalized_shape` dims) and GroupNorm (over groups of dim 1
        and every later dim): channels normalised together share a mean and a variance, which
        removing any of them changes, so they are pinned; channels normalised apart pass through."""
        x, xv = args[0], self.info(args[0])
        if xv is None or not isinstance(out, torch.Tensor) or out.shape != x.shape:
            return self._unknown(args, kwargs, out, ins)
        if self._func in (F.layer_norm, torch.layer_norm):
            shape = call_arg(args, kwargs, 1, "normalized_shape")
            first = x.ndim - (1 if isinstance(shape, int) else len(shape))  # first normalised dim
            reason = LAYER_NORM_REASON
        else:
            first, reason = 1, GROUP_NORM_REASON
        if xv.cdim < first:
            return self.node(OpKind.NORM, [xv], [(out, xv.cdim, xv.elems)])
        owner = self._owner(call_arg(args, kwargs, 2, "weight"))
        self.pin(xv.elems, reason, owner[0] if owner else None)
        member = None
        for t in (call_arg(args, kwargs, 2, "weight"), call_arg(args, kwargs, 3, "bias")):
            found, d = self._owner(t), xv.cdim - first
            if found is not None and t.ndim > d and t.shape[d] == len(xv.elems):
                member = Member(found[0], f"param:{found[1]}@{d}")
                self.bind(member, xv.elems)
        self.node(OpKind.NORM, [xv], [(out, xv.cdim, xv.elems)], member)

    def _attention(self, args, kwargs, out, ins) -> None:
        """`F.multi_head_attention_forward` (`nn.MultiheadAttention`): its query, key, value, heads and
        output share one width; everything it touches is pinned with `ATTENTION_REASON`."""
        seq = [call_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value"))]
        if any(self.info(t) is not None and self.info(t).cdim != t.ndim - 1 for t in seq):
            reason = "attention over an axis that is not the channel axis"
            return self._unknown(args, kwargs, out, ins, reason)
        packed = self._owner(call_arg(args, kwargs, 5, "in_proj_weight"))
        owner = packed or self._owner(call_arg(args, kwargs, 18, "q_proj_weight"))
        site = owner[0] if owner else None
        query, y = seq[0], out[0]
        elems = self.info(query).elems if self.info(query) is not None else self.fresh(query.shape[-1])
        for t in seq:
            v = self.info(t)
            if v is not None and packed and len(v.elems) == len(elems):  # in_proj's columns read q, k, v
                self.union(elems, v.elems)
            if v is not None:
                self.pin(v.elems, ATTENTION_REASON, site)
        self.pin(elems, ATTENTION_REASON, site)
        if packed:
            self.bind(Member(packed[0], f"param:{packed[1]}@1"), elems)
        proj = self._owner(call_arg(args, kwargs, 11, "out_proj_weight"))
        if proj is not None and y.shape[-1] == len(elems):
            self.bind(Member(proj[0], "in"), elems)  # the heads: num_heads x head_dim = embed_dim
            self.bind(Member(proj[0], "out"), elems)
        self.node(OpKind.ATTENTION, ins, [(y, y.ndim - 1, elems)])

    def _place(self, args, kwargs, out, ins, cdim: int | None, reason: str) -> None:
        xv = ins[0]
        if cdim is None:
            return self._unknown(args, kwargs, out, ins, reason)
        self.node(op_kind(self._func), ins, [(out, cdim, xv.elems)])

    def _reshape(self, args, kwargs, out, ins) -> None:
        x, xv = args[0], ins[0]
        prefix, size = math.prod(x.shape[: xv.cdim]), x.shape[xv.cdim]
        found = None
        for k in range(out.ndim):
            if out.shape[k] == size and math.prod(out.shape[:k]) == prefix:
                found = k
                break
        reason = f"reshape merges or splits the channel axis ({tuple(x.shape)} -> {tuple(out.shape)})"
        self._place(args, kwargs, out, ins, found, reason)

    def _view_by_stride(self, args, kwargs, out, ins) -> None:
        x, xv = args[0], ins[0]
        size, stride = x.shape[xv.cdim], x.stride(xv.cdim)
        found = next((k for k in range(out.ndim) if out.shape[k] == size and out.stride(k) == stride), None)
        self._place(
            args, kwargs, out, ins, found, "the channel axis is moved in a way the tracer cannot follow"
        )

    def _spatial(self, args, kwargs, out, ins) -> None:
        x, xv = args[0], ins[0]
        y = out[0] if isinstance(out, tuple) else out
        ok = isinstance(y, torch.Tensor) and y.ndim == x.ndim and y.shape[xv.cdim] == x.shape[xv.cdim]
        self._place(
            args, kwargs, y, ins, xv.cdim if ok else None, "pooling or padding changes the channel axis"
        )

    def _reduce(self, args, kwargs, out, ins) -> None:
        x, xv = args[0], ins[0]
        dim = call_arg(args, kwargs, 1, "dim")
        if isinstance(dim, torch.Tensor):  # torch.max(a, b) is element-wise
            return self._broadcast(args, kwargs, out, ins)
        y = out[0] if isinstance(out, tuple) else out
        dims = None if dim is None else {d % x.ndim for d in ((dim,) if isinstance(dim, int) else dim)}
        if dims is None or xv.cdim in dims:
            return self._unknown(args, kwargs, out, ins, "a reduction over the channel axis")
        cdim = xv.cdim if y.ndim == x.ndim else xv.cdim - sum(d < xv.cdim for d in dims)
        self._place(args, kwargs, y, ins, cdim, "")

    def _softmax(self, args, kwargs, out, ins) -> None:
        x, xv = args[0], ins[0]
        dim = call_arg(args, kwargs, 1, "dim")
        if dim is None or int(dim) % x.ndim == xv.cdim:
            return self._unknown(args, kwargs, out, ins, "softmax across the channel axis")
        self._place(args, kwargs, out, ins, xv.cdim, "")

    def _stack(self, args, kwargs, out, ins) -> None:
        tensors = list(call_arg(args, kwargs, 0, "tensors"))
        dim = int(call_arg(args, kwargs, 1, "dim", 0)) % out.ndim
        if len(ins) != len(tensors) or len({v.cdim for v in ins}) != 1:
            return self._unknown(args, kwargs, out, ins, "stack of tensors the tracer cannot align")
        for v in ins[1:]:
            self.union(ins[0].elems, v.elems)
        self._place(args, kwargs, out, ins, ins[0].cdim + (dim <= ins[0].cdim), "")
