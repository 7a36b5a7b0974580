"""Trace one real forward pass into channel elements, members, pins and an op log.

Technique: a `TorchFunctionMode` records every torch function the model calls, at the level the
model's Python code calls it (`torch.cat`, `Tensor.chunk`, `F.conv2d` with the module's own weight
tensor), in one eval-mode forward on a small input. Each traced tensor carries one *channel axis*
and a list of *channel elements* along it. Ops copy, slice, concatenate or unify those elements
(union-find); layers bind them to their parameter axes (*members*). Elements that must not change
(model inputs and outputs, channels touched by ops the tracer does not understand) are *pinned*,
each pin with the member or op site that caused it and a reason. See docs/decisions.md for why
this beats autograd-graph walking and torch.export here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from yoloprune.graph.ops import OpKind, op_kind, op_name


@dataclass(frozen=True)
class Member:
    """One channel axis of one module, named by its `named_modules()` path."""

    module: str
    axis: str  # "out" | "in" | "param:NAME@DIM"


@dataclass(frozen=True)
class Pin:
    """Why some channels cannot be removed: the member or op site responsible, and the reason."""

    member: str
    reason: str


@dataclass
class Value:
    """A traced tensor: its channel axis and one element id per channel."""

    id: int
    cdim: int
    elems: np.ndarray  # (C,) element ids
    producer: int  # index of the Node that made it, -1 for model inputs


@dataclass
class Node:
    """One op call that touched traced channels."""

    index: int
    kind: OpKind
    op: str  # readable op name, e.g. "torch.cat"
    module: str  # innermost module running when the op was called ("" for the root)
    inputs: tuple[int, ...]  # Value ids read
    outputs: tuple[int, ...]  # Value ids made
    member: Member | None = None  # the layer axis this op reads (conv/linear "in", norm "out")
    detail: dict = field(default_factory=dict)


@dataclass
class Trace:
    """Everything one traced forward pass learned about the model's channels."""

    parent: list[int]  # union-find over element ids
    members: dict[Member, np.ndarray]  # member -> element id per channel position
    pins: list[tuple[np.ndarray, Pin]]
    nodes: list[Node]
    values: dict[int, Value]
    module_io: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  # module -> (in, out) channel counts
    module_types: dict[str, str]
    notes: tuple[str, ...] = ()  # what the trace could not do, e.g. a failed train-mode pass

    def find(self, e: int) -> int:
        return _find(self.parent, e)

    def roots(self, elems: np.ndarray) -> np.ndarray:
        return np.fromiter((self.find(int(e)) for e in elems), dtype=np.int64, count=len(elems))


def _find(parent: list[int], e: int) -> int:
    """Union-find root of element `e`, halving the path on the way."""
    while parent[e] != e:
        parent[e] = parent[parent[e]]
        e = parent[e]
    return e


class TraceError(RuntimeError):
    """The model's forward pass failed while being traced."""


def flat_tensors(obj: object) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from flat_tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from flat_tensors(o)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: object = None) -> object:
    return args[index] if len(args) > index else kwargs.get(name, default)


class _Tracer(TorchFunctionMode):
    def __init__(self, model: nn.Module, adapts_split: Callable[[nn.Module], bool]) -> None:
        super().__init__()
        self.adapts_split = adapts_split
        self.modules = dict(model.named_modules())
        self.params: dict[int, tuple[str, str]] = {}
        for name, mod in self.modules.items():
            for pname, p in [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]:
                self.params.setdefault(id(p), (name, pname))
        self.parent: list[int] = []
        self.members: dict[Member, np.ndarray] = {}
        self.pins: list[tuple[np.ndarray, Pin]] = []
        self.nodes: list[Node] = []
        self.values: dict[int, Value] = {}
        self.by_tensor: dict[int, Value] = {}
        self.alive: list[torch.Tensor] = []  # keeps traced tensors alive so id() stays unique
        self.stack: list[str] = [""]
        self.module_io: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self._handlers = {
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
            OpKind.FACTORY: lambda *a: None,
            OpKind.UNKNOWN: self._unknown,
        }
        self._func = None

    # -- elements ---------------------------------------------------------------------------
    def fresh(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = _find(self.parent, x), _find(self.parent, y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def pin(self, elems: np.ndarray, reason: str, member: str | None = None) -> None:
        if len(elems):
            self.pins.append((elems, Pin(member or self.site(), reason)))

    def bind(self, member: Member, elems: np.ndarray) -> None:
        if member in self.members:  # a module called twice: both calls share its channels
            self.union(self.members[member], elems)
        else:
            self.members[member] = elems.copy()

    def site(self) -> str:
        where = self.stack[-1] or "model"
        return f"{where} ({op_name(self._func)})"

    # -- values -----------------------------------------------------------------------------
    def info(self, t: object) -> Value | None:
        return self.by_tensor.get(id(t)) if isinstance(t, torch.Tensor) else None

    def set(self, t: torch.Tensor, cdim: int, elems: np.ndarray, producer: int = -1) -> Value:
        v = Value(len(self.values), cdim, elems, producer)
        self.values[v.id] = v
        self.by_tensor[id(t)] = v
        self.alive.append(t)
        return v

    def node(self, kind: OpKind, ins: list[Value], outs: list[tuple[torch.Tensor, int, np.ndarray]],
             member: Member | None = None, **detail: object) -> None:  # fmt: skip
        index = len(self.nodes)
        made = tuple(self.set(t, cdim, elems, index).id for t, cdim, elems in outs)
        self.nodes.append(
            Node(
                index,
                kind,
                op_name(self._func),
                self.stack[-1],
                tuple(v.id for v in ins),
                made,
                member,
                dict(detail),
            )
        )

    # -- the mode ---------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.Tensor.__setitem__:
            self._func = func
            for t in flat_tensors(args):
                v = self.info(t)
                if v is not None:
                    self.pin(v.elems, "written in place with x[...] = y; the tracer cannot follow it")
            return out
        ins = [v for v in (self.info(t) for t in flat_tensors((args, kwargs))) if v is not None]
        if not ins or not any(True for _ in flat_tensors(out)):
            return out
        self._func = func
        try:
            self._handlers[op_kind(func)](args, kwargs, out, ins)
        except Exception as e:  # a handler must never break the forward pass: pin instead
            self._unknown(args, kwargs, out, ins, f"the tracer could not follow {op_name(func)} ({e})")
        return out

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
        x, w = args[0], _arg(args, kwargs, 1, "weight")
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
        groups = int(_arg(args, kwargs, 6, "groups", 1))
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
        x, w = args[0], _arg(args, kwargs, 1, "weight")
        owner, xv = self._owner(w), self.info(x)
        if owner is None or xv is None or xv.cdim != x.ndim - 1:
            return self._unknown(args, kwargs, out, ins, "linear layer that does not read the channel axis")
        self.bind(Member(owner[0], "in"), xv.elems)
        elems = self.fresh(out.shape[-1])
        self.bind(Member(owner[0], "out"), elems)
        self.node(OpKind.LINEAR, [xv], [(out, out.ndim - 1, elems)], Member(owner[0], "in"))

    def _batch_norm(self, args, kwargs, out, ins) -> None:
        x, xv = args[0], ins[0]
        owner = self._owner(_arg(args, kwargs, 3, "weight")) or self._owner(
            _arg(args, kwargs, 1, "running_mean")
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
                self.pin(elems, f"combined element-wise with a constant tensor of {size} channels")
        self.node(OpKind.BROADCAST, ins, [(out, cdim, elems)])

    def _cat(self, args, kwargs, out, ins) -> None:
        tensors = list(_arg(args, kwargs, 0, "tensors"))
        dim = int(_arg(args, kwargs, 1, "dim", 0)) % out.ndim
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
        dim = int(_arg(args, kwargs, 1 if unbind else 2, "dim", 0)) % x.ndim
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
        x, xv = args[0], ins[0]
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        if not isinstance(out, torch.Tensor) or any(
            not (i is None or i is Ellipsis or isinstance(i, (int, slice))) for i in index
        ):
            return self._unknown(args, kwargs, out, ins, "advanced indexing")
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
        dim = _arg(args, kwargs, 1, "dim")
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
        dim = _arg(args, kwargs, 1, "dim")
        if dim is None or int(dim) % x.ndim == xv.cdim:
            return self._unknown(args, kwargs, out, ins, "softmax across the channel axis")
        self._place(args, kwargs, out, ins, xv.cdim, "")

    def _stack(self, args, kwargs, out, ins) -> None:
        tensors = list(_arg(args, kwargs, 0, "tensors"))
        dim = int(_arg(args, kwargs, 1, "dim", 0)) % out.ndim
        if len(ins) != len(tensors) or len({v.cdim for v in ins}) != 1:
            return self._unknown(args, kwargs, out, ins, "stack of tensors the tracer cannot align")
        for v in ins[1:]:
            self.union(ins[0].elems, v.elems)
        self._place(args, kwargs, out, ins, ins[0].cdim + (dim <= ins[0].cdim), "")

    # -- module context ---------------------------------------------------------------------
    def pre_hook(self, name: str):
        def hook(module, args):
            parent = self.stack[-1]
            if parent and not name.startswith(parent + "."):  # a module shared by many parents
                owner = self.modules.get(parent)
                child = next((k for k, c in owner.named_children() if c is module), None) if owner else None
                self.stack.append(f"{parent}.{child}" if child else name)
            else:
                self.stack.append(name)

        return hook

    def post_hook(self, name: str):
        def hook(module, args, output):
            self.stack.pop()
            if name not in self.module_io:
                sizes_in = tuple(
                    len(v.elems) for v in (self.info(t) for t in flat_tensors(args)) if v is not None
                )
                sizes_out = tuple(
                    len(v.elems) for v in (self.info(t) for t in flat_tensors(output)) if v is not None
                )
                self.module_io[name] = (sizes_in, sizes_out)

        return hook


def _forward(tracer: _Tracer, model: nn.Module, inputs: tuple, select_outputs: Callable) -> None:
    with torch.no_grad(), tracer:
        output = model(*inputs)
    for t in flat_tensors(select_outputs(output)):
        v = tracer.info(t)
        if v is not None:
            tracer.pin(v.elems, "reaches the model output", "output")


def trace(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    adapts_split: Callable[[nn.Module], bool] = lambda module: False,
    select_outputs: Callable[[object], object] = lambda output: output,
) -> Trace:
    """Run `model(*example_inputs)` in eval mode, then in train mode, and record how its channels
    are coupled. The train-mode pass finds layers only training uses (auxiliary heads); buffers
    such as BatchNorm statistics are restored after it, and a failing train pass is noted, not fatal.

    `adapts_split(module)` says whether a `split` with explicit sizes called inside `module` takes
    its sizes from attributes that pruning keeps up to date (otherwise such a split pins).
    `select_outputs(output)` picks the outputs whose channels are fixed (the predictions); other
    returned tensors (e.g. intermediate features returned for a loss) are free to change.

    Example:
        >>> t = trace(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 1)),
        ...           (torch.zeros(1, 3, 8, 8),))
        >>> sorted(m.module + "." + m.axis for m in t.members)
        ['0.in', '0.out', '1.in', '1.out']
    """
    tracer = _Tracer(model, adapts_split)
    handles = []
    for name, module in tracer.modules.items():
        handles.append(module.register_forward_pre_hook(tracer.pre_hook(name)))
        handles.append(module.register_forward_hook(tracer.post_hook(name)))
    was_training = model.training
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    notes = []
    try:
        for x in example_inputs:
            tracer.pin(tracer.set(x, 1, tracer.fresh(x.shape[1])).elems, "model input channels", "input")
        try:
            _forward(tracer, model.eval(), example_inputs, select_outputs)
        except Exception as e:
            raise TraceError(f"the model's forward pass failed while tracing at {tracer.site()}: {e}") from e
        try:
            _forward(tracer, model.train(), example_inputs, select_outputs)
        except Exception as e:  # e.g. heads whose training forward needs targets
            notes.append(f"train-mode forward failed at {tracer.site()} ({type(e).__name__}: {e})")
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.train(was_training)
    types = {name: type(m).__name__ for name, m in tracer.modules.items()}
    return Trace(
        tracer.parent, tracer.members, tracer.pins, tracer.nodes, tracer.values, tracer.module_io, types,
        tuple(notes),
    )  # fmt: skip
