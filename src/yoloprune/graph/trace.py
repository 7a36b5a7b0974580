"""Trace one real forward pass into channel elements, members, pins and an op log.

Technique: a `TorchFunctionMode` records every torch function the model calls, at the level the
model's Python code calls it (`torch.cat`, `Tensor.chunk`, `F.conv2d` with the module's own weight
tensor), in one eval-mode forward on a small input. Each traced tensor carries one *channel axis*
and a list of *channel elements* along it. Ops copy, slice, concatenate or unify those elements
(union-find); layers bind them to their parameter axes (*members*). Elements that must not change
(model inputs and outputs, channels touched by ops the tracer does not understand) are *pinned*,
each pin with the member or op site that caused it and a reason. See docs/decisions.md for why
this beats autograd-graph walking and torch.export here. What a trace is made of lives in
`elements.py`; how each kind of op moves channel elements, in `rules.py`. A module the adapter gives
a *module rule* (e.g. attention, whose heads no op-level rule can see) runs through that rule while
traced: its layers are traced as usual, and the rule reports the glue between them (`Glue`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from yoloprune.graph.adapter import PLAIN, ModelAdapter
from yoloprune.graph.elements import Member, Node, Pin, Trace, TraceError, Value, find_root, flat_tensors
from yoloprune.graph.ops import OpKind, op_kind, op_name
from yoloprune.graph.rules import OpRules


class _Tracer(OpRules, TorchFunctionMode):
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
        self._handlers = self.rules()
        self._func = None
        self._paused = 0

    # -- elements ---------------------------------------------------------------------------
    def fresh(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = find_root(self.parent, x), find_root(self.parent, y)
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
        return where if self._func is None else f"{where} ({op_name(self._func)})"

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

    # -- the glue a module rule reports (graph.adapter.Glue) ----------------------------------
    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            self._func = None  # what the rule reports next is the module's, not an op's

    def elems(self, t: torch.Tensor) -> np.ndarray:
        self._func = None  # a module rule is reporting: what it pins is the module's, not an op's
        v = self.info(t)
        if v is None:
            raise TraceError(f"a module rule in {self.stack[-1] or 'the model'} asked for an untraced tensor")
        return v.elems.copy()

    def couple(self, a: np.ndarray, b: np.ndarray) -> None:
        self.union(np.asarray(a).ravel(), np.asarray(b).ravel())

    def traced(self, t: torch.Tensor) -> bool:
        return self.info(t) is not None

    def label(self, t: torch.Tensor, elems: np.ndarray, reads: Sequence[torch.Tensor], rule: str) -> None:
        ins = [v for v in (self.info(r) for r in reads) if v is not None]
        self._func = None
        index = len(self.nodes)
        made = self.set(t, 1, np.asarray(elems, dtype=np.int64).ravel(), index)
        inputs = tuple(v.id for v in ins)
        self.nodes.append(Node(index, OpKind.MODULE, rule, self.stack[-1], inputs, (made.id,)))

    # -- the mode ---------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._paused:
            return out
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


def _forward(tracer: _Tracer, model: nn.Module, inputs: tuple, adapter: ModelAdapter) -> None:
    with torch.no_grad(), tracer:
        output = model(*inputs)
    for t in flat_tensors(adapter.select_outputs(output)):
        v = tracer.info(t)
        if v is not None:
            tracer.pin(v.elems, "reaches the model output", "output")


def trace(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    adapter: ModelAdapter = PLAIN,
) -> Trace:
    """Run `model(*example_inputs)` in eval mode, then in train mode, and record how its channels
    are coupled. The train-mode pass finds layers only training uses (auxiliary heads); buffers
    such as BatchNorm statistics are restored after it, and a failing train pass is noted, not fatal.

    Two of `adapter`'s hooks apply: `adapts_split(module)` says whether a `split` with explicit sizes
    called inside `module` takes its sizes from attributes that pruning keeps up to date (otherwise
    such a split pins); `select_outputs(output)` picks the outputs whose channels are fixed (the
    predictions); other returned tensors (e.g. features returned for a loss) are free to change.

    Example:
        >>> t = trace(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 1)),
        ...           (torch.zeros(1, 3, 8, 8),))
        >>> sorted(m.module + "." + m.axis for m in t.members)
        ['0.in', '0.out', '1.in', '1.out']
    """
    tracer = _Tracer(model, adapter.adapts_split)
    handles, ruled = [], []
    for name, module in tracer.modules.items():
        handles.append(module.register_forward_pre_hook(tracer.pre_hook(name)))
        handles.append(module.register_forward_hook(tracer.post_hook(name)))
        rule = adapter.module_rule(module)
        if rule is not None:  # an instance attribute, deleted below: the class's forward is untouched
            module.forward = functools.partial(rule, tracer, module)
            ruled.append(module)
    was_training = model.training
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    notes = []
    try:
        for x in example_inputs:
            tracer.pin(tracer.set(x, 1, tracer.fresh(x.shape[1])).elems, "model input channels", "input")
        try:
            _forward(tracer, model.eval(), example_inputs, adapter)
        except Exception as e:
            raise TraceError(f"the model's forward pass failed while tracing at {tracer.site()}: {e}") from e
        try:
            _forward(tracer, model.train(), example_inputs, adapter)
        except Exception as e:  # e.g. heads whose training forward needs targets
            notes.append(f"train-mode forward failed at {tracer.site()} ({type(e).__name__}: {e})")
    finally:
        for h in handles:
            h.remove()
        for module in ruled:
            del module.forward
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.train(was_training)
    types = {name: type(m).__name__ for name, m in tracer.modules.items()}
    return Trace(
        tracer.parent, tracer.members, tracer.pins, tracer.nodes, tracer.values, tracer.module_io, types,
        tuple(notes),
    )  # fmt: skip
