"""Prove a prune: the pruned model must compute what the original computes with the removed
channels masked, i.e. with every weight that reads a removed channel, and every weight, bias and
norm affine term that makes one, set to zero (a removed channel is zero, and nothing reads it; the
makers matter where a channel is read without a weight, as attention's q and k are). When it does
not, say where: the first layer, in execution order, whose output differs (`first_divergence`),
and for weights, the first tensor that differs (`first_state_difference`)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from yoloprune.graph.adapter import PLAIN, ModelAdapter
from yoloprune.graph.groups import ChannelGraph
from yoloprune.graph.trace import flat_tensors
from yoloprune.pruning.apply import pruned_copy
from yoloprune.pruning.copies import shallow_copy
from yoloprune.pruning.layers import input_weight, producing_tensors

TOLERANCE = 1e-4


@dataclass(frozen=True)
class Equivalence:
    """Largest relative difference between pruned and masked outputs, over every output tensor."""

    max_rel_error: float
    outputs: int
    tolerance: float = TOLERANCE
    signal: float | None = None  # how much the outputs change with the input (None: not measured)
    first_divergence: tuple[str, float] | None = None  # (layer path, its rel error); None when ok

    @property
    def ok(self) -> bool:
        return self.max_rel_error <= self.tolerance

    @property
    def informative(self) -> bool:
        """False when the outputs barely depend on the input (e.g. untrained weights): then even a
        wrong model could pass, and only a check on signal-carrying weights (`excite`) proves much."""
        return self.signal is None or self.signal > 10 * self.tolerance


def _masked_weights(model: nn.Module, graph: ChannelGraph, removed: frozenset[int]):
    """(tensor, dim, indices) of every slice that reads or makes a removed channel."""
    modules = dict(model.named_modules())
    rem = np.fromiter(removed, dtype=np.int64, count=len(removed))
    for member, layout in graph.layout.items():
        drop = np.flatnonzero(np.isin(layout, rem))
        if not len(drop):
            continue
        module = modules[member.module]
        reads = input_weight(module, member.axis)
        for tensor, dim in [*([reads] if reads else []), *producing_tensors(module, member.axis)]:
            yield tensor, dim, torch.as_tensor(drop)


def masked_copy(model: nn.Module, graph: ChannelGraph, removed: frozenset[int]) -> nn.Module:
    """A copy of the unpruned `model` in which removed channels are zero and read with zero weights
    (only the tensors it zeroes are copied; the rest share storage with `model`)."""
    masked = shallow_copy(model)
    for weight, dim, drop in _masked_weights(masked, graph, removed):
        weight.data = weight.data.index_fill(dim, drop, 0.0)
    return masked


@contextlib.contextmanager
def masking(model: nn.Module, graph: ChannelGraph, removed: frozenset[int]) -> Iterator[nn.Module]:
    """Zero, in place, the tensors that make or read removed channels, for the duration of the block; then
    put the saved slices back. Costs only the removed slices' memory, not a copy of the model."""
    saved = []
    with torch.no_grad():
        for weight, dim, drop in _masked_weights(model, graph, removed):
            saved.append((weight, dim, drop, weight.index_select(dim, drop).clone()))
            weight.index_fill_(dim, drop, 0.0)
    try:
        yield model
    finally:
        with torch.no_grad():
            for weight, dim, drop, values in reversed(saved):
                weight.index_copy_(dim, drop, values.to(weight.dtype))


@contextlib.contextmanager
def excited(model: nn.Module, inputs: tuple[torch.Tensor, ...], seed: int = 0) -> Iterator[nn.Module]:
    """`excite` the model in place for the duration of the block, then restore every BatchNorm."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    try:
        yield excite(model, inputs, seed)
    finally:
        for m, state in zip(norms, saved, strict=True):
            m.load_state_dict(state)


def eval_outputs(
    m: nn.Module, inputs: tuple[torch.Tensor, ...], select: Callable[[object], object], dtype: torch.dtype
) -> list:
    """The tensors of `select(m(*inputs))`, run in eval mode in `dtype` (the model is put back after)."""
    was, own = m.training, next((p.dtype for p in m.parameters()), torch.float32)
    m.eval().to(dtype)
    try:
        with torch.no_grad():
            return list(flat_tensors(select(m(*(x.to(dtype) for x in inputs)))))
    finally:
        m.to(own).train(was)


def kept_outputs(graph: ChannelGraph, removed: frozenset[int]) -> dict[str, torch.Tensor]:
    """Output channel positions each layer keeps, for every layer whose output a prune narrows."""
    rem = np.fromiter(removed, dtype=np.int64, count=len(removed))
    kept = {}
    for member, layout in graph.layout.items():
        keep = np.flatnonzero(~np.isin(layout, rem))
        if member.axis == "out" and len(keep) < len(layout):
            kept[member.module] = torch.as_tensor(keep)
    return kept


def _layer_outputs(m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[tuple[str, int], list]:
    """(module path, call number) -> its output tensors in float64, in the order the calls finish."""
    calls: dict[tuple[str, int], list] = {}
    count: dict[str, int] = {}

    def record(name: str, out: object) -> None:
        count[name] = count.get(name, 0) + 1
        calls[name, count[name]] = [t.detach().to(torch.float64, copy=True) for t in flat_tensors(out)]

    hooks = [
        module.register_forward_hook(lambda _m, _a, out, name=name: record(name, out))
        for name, module in m.named_modules()
    ]
    try:
        eval_outputs(m, inputs, lambda o: o, torch.float64)
    finally:
        for h in hooks:
            h.remove()
    return calls


def _aligned(x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor | None:
    """`y` (a masked-original output) cut to the channels `x` (the pruned one) has; None if unknown."""
    if x.shape == y.shape:
        return y
    dims = [d for d in range(y.ndim) if x.ndim == y.ndim and x.shape[d] != y.shape[d]]
    if keep is None or len(dims) != 1 or x.shape[dims[0]] != len(keep):
        return None
    return y.index_select(dims[0], keep)


def first_divergence(
    pruned: nn.Module,
    masked: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    kept: Mapping[str, torch.Tensor] | None = None,
    tolerance: float = TOLERANCE,
) -> tuple[str, float] | None:
    """The first layer, in the order the pruned model's layers finish, whose output differs from the
    masked original's by more than `tolerance` (float64), with that relative error. Outputs a prune
    narrows are compared on the kept channels (`kept`, see `kept_outputs`); other outputs of a
    different shape are skipped. None when no layer's output differs."""
    theirs = _layer_outputs(masked, inputs)
    for (name, call), outs in _layer_outputs(pruned, inputs).items():
        ref = theirs.get((name, call))
        if ref is None or len(ref) != len(outs):
            continue
        keep = (kept or {}).get(name)
        errors = [
            _rel_error(x, y)
            for x, y in ((x, _aligned(x, y, keep)) for x, y in zip(outs, ref, strict=True))
            if y is not None
        ]
        if errors and max(errors) > tolerance:
            return (name or "the model", max(errors))
    return None


def first_state_difference(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], values: bool
) -> tuple[str, str] | None:
    """The first tensor (in `expected`'s order) whose shape differs, or that is missing or extra;
    with `values`, else the first whose values differ: (tensor name, what differs). None if none."""
    for key, e in expected.items():
        f = found.get(key)
        if f is None:
            return key, "missing from the pruned model"
        if f.shape != e.shape:
            return key, f"shape {tuple(f.shape)}, the plan gives {tuple(e.shape)}"
        if values and not torch.equal(e, f.to(e.dtype)):
            diff = (f.to(torch.float64) - e.to(torch.float64)).abs().max()
            scale = e.to(torch.float64).abs().max().clamp_min(1e-12)
            return key, f"max rel difference {(diff / scale).item():.3g}"
    extra = next((k for k in found if k not in expected), None)
    return None if extra is None else (extra, "not in the original pruned by the plan")


def _difference(a: list, b: list) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=False)):
        return float("inf")
    return max((_rel_error(x, y) for x, y in zip(a, b, strict=True)), default=0.0)


def compare_outputs(
    pruned: nn.Module,
    masked: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    adapter: ModelAdapter = PLAIN,
    measure_signal: bool = False,
    kept: Mapping[str, torch.Tensor] | None = None,
) -> Equivalence:
    """Run both models in eval mode on `inputs` and measure how far their outputs differ; with
    `measure_signal`, also how far the masked model's outputs move for another input. When they
    differ, `first_divergence` names the first layer that does (`kept`: see `kept_outputs`).

    float32 first; a difference above the tolerance is measured again in float64, where rounding
    can neither hide nor fake one (deep nets reach ~1e-4 in float32 on reordered sums alone).
    Only `adapter.select_outputs(output)` is compared: the predictions.
    """
    select_outputs = adapter.select_outputs
    b = eval_outputs(masked, inputs, select_outputs, torch.float32)
    err = _difference(eval_outputs(pruned, inputs, select_outputs, torch.float32), b)
    if TOLERANCE < err < float("inf"):
        err = _difference(
            eval_outputs(pruned, inputs, select_outputs, torch.float64),
            eval_outputs(masked, inputs, select_outputs, torch.float64),
        )
    signal = None
    if measure_signal and err < float("inf"):
        other = eval_outputs(masked, tuple(x.flip(-1) for x in inputs), select_outputs, torch.float32)
        signal = _difference(other, b)
    where = first_divergence(pruned, masked, inputs, kept) if err > TOLERANCE else None
    return Equivalence(err, len(b), signal=signal, first_divergence=where)


def prune_and_compare(
    model: nn.Module,
    graph: ChannelGraph,
    removed: frozenset[int],
    inputs: tuple[torch.Tensor, ...],
    adapter: ModelAdapter = PLAIN,
    measure_signal: bool = False,
    own: bool = False,
) -> tuple[nn.Module, dict[str, tuple[int, int]], Equivalence]:
    """Prune a copy of `model` and compare it with the masked original: (pruned, widths, result).

    The pruned copy shares unsliced tensors with `model` unless `own` asks for a full copy (do so
    for a model that will be trained or handed to a user)."""
    pruned, widths = pruned_copy(model, graph, removed, adapter, copy.deepcopy if own else shallow_copy)
    kept = kept_outputs(graph, removed)
    with masking(model, graph, removed) as masked:
        return pruned, widths, compare_outputs(pruned, masked, inputs, adapter, measure_signal, kept)


def _rel_error(x: torch.Tensor, y: torch.Tensor) -> float:
    """Max |x - y| per channel (dim 1) over that channel's max |y|, so that small-valued channels
    (class scores beside pixel-scale boxes) are checked as strictly as large ones."""
    if not y.numel():
        return 0.0
    if y.ndim < 2:
        x, y = x.reshape(1, -1), y.reshape(1, -1)
    diff = (x - y).abs().transpose(0, 1).reshape(y.shape[1], -1).amax(1)
    scale = y.abs().transpose(0, 1).reshape(y.shape[1], -1).amax(1)
    floor = 1e-3 * scale.max().clamp_min(1e-12)  # channels that are ~0 everywhere: compare absolutely
    return (diff / torch.maximum(scale, floor)).max().item()


def excite(model: nn.Module, inputs: tuple[torch.Tensor, ...], seed: int = 0) -> nn.Module:
    """Make every channel of a model carry input-dependent signal, in place: random BatchNorm
    affine terms, then BatchNorm statistics recalibrated on `inputs` (a train-mode forward), so
    every normalised activation is O(1) and varies with the input. On raw random init most
    channels fade to constants and an equivalence check proves little; on this, it is sharp."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    with torch.no_grad():
        for m in norms:
            if m.affine:
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the statistics of exactly this batch
        was = model.training
        model.train()
        try:
            model(*inputs)
        finally:
            model.train(was)
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
    return model
