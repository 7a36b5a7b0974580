"""Prove a prune: the pruned model must compute what the original computes with the removed
channels masked, i.e. with every weight that reads a removed channel set to zero."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from yoloprune._layers import input_weight
from yoloprune._meta import shallow_copy
from yoloprune.graph.groups import ChannelGraph
from yoloprune.graph.trace import flat_tensors
from yoloprune.pruning.apply import apply_plan

TOLERANCE = 1e-4


@dataclass(frozen=True)
class Equivalence:
    """Largest relative difference between pruned and masked outputs, over every output tensor."""

    max_rel_error: float
    outputs: int
    tolerance: float = TOLERANCE
    signal: float | None = None  # how much the outputs change with the input (None: not measured)

    @property
    def ok(self) -> bool:
        return self.max_rel_error <= self.tolerance

    @property
    def informative(self) -> bool:
        """False when the outputs barely depend on the input (e.g. untrained weights): then even a
        wrong model could pass, and only a check on signal-carrying weights (`excite`) proves much."""
        return self.signal is None or self.signal > 10 * self.tolerance


def _masked_weights(model: nn.Module, graph: ChannelGraph, removed: frozenset[int]):
    """(weight, dim, indices) of every weight slice that reads a removed channel."""
    modules = dict(model.named_modules())
    rem = np.fromiter(removed, dtype=np.int64, count=len(removed))
    for member, layout in graph.layout.items():
        found = input_weight(modules[member.module], member.axis)
        drop = np.flatnonzero(np.isin(layout, rem))
        if found is not None and len(drop):
            yield found[0], found[1], torch.as_tensor(drop)


def masked_copy(model: nn.Module, graph: ChannelGraph, removed: frozenset[int]) -> nn.Module:
    """A copy of the unpruned `model` in which removed channels are read with zero weights (only
    the weights it zeroes are copied; the rest share storage with `model`)."""
    masked = shallow_copy(model)
    for weight, dim, drop in _masked_weights(masked, graph, removed):
        weight.data = weight.data.index_fill(dim, drop, 0.0)
    return masked


@contextlib.contextmanager
def masking(model: nn.Module, graph: ChannelGraph, removed: frozenset[int]) -> Iterator[nn.Module]:
    """Zero, in place, the weights that read removed channels, for the duration of the block; then
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


def _outputs(
    m: nn.Module, inputs: tuple[torch.Tensor, ...], select: Callable[[object], object], dtype: torch.dtype
) -> list:
    was, own = m.training, next((p.dtype for p in m.parameters()), torch.float32)
    m.eval().to(dtype)
    try:
        with torch.no_grad():
            return list(flat_tensors(select(m(*(x.to(dtype) for x in inputs)))))
    finally:
        m.to(own).train(was)


def _difference(a: list, b: list) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=False)):
        return float("inf")
    return max((_rel_error(x, y) for x, y in zip(a, b, strict=True)), default=0.0)


def compare(
    pruned: nn.Module,
    masked: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    select_outputs: Callable[[object], object] = lambda o: o,
    measure_signal: bool = False,
) -> Equivalence:
    """Run both models in eval mode on `inputs` and measure how far their outputs differ; with
    `measure_signal`, also how far the masked model's outputs move for another input.

    float32 first; a difference above the tolerance is measured again in float64, where rounding
    can neither hide nor fake one (deep nets reach ~1e-4 in float32 on reordered sums alone).
    """
    b = _outputs(masked, inputs, select_outputs, torch.float32)
    err = _difference(_outputs(pruned, inputs, select_outputs, torch.float32), b)
    if TOLERANCE < err < float("inf"):
        err = _difference(
            _outputs(pruned, inputs, select_outputs, torch.float64),
            _outputs(masked, inputs, select_outputs, torch.float64),
        )
    signal = None
    if measure_signal and err < float("inf"):
        other = _outputs(masked, tuple(x.flip(-1) for x in inputs), select_outputs, torch.float32)
        signal = _difference(other, b)
    return Equivalence(err, len(b), signal=signal)


def prune_and_compare(
    model: nn.Module,
    graph: ChannelGraph,
    removed: frozenset[int],
    inputs: tuple[torch.Tensor, ...],
    fix_attributes: Callable[[nn.Module], None] = lambda m: None,
    select_outputs: Callable[[object], object] = lambda o: o,
    measure_signal: bool = False,
    own: bool = False,
) -> tuple[nn.Module, dict[str, tuple[int, int]], Equivalence]:
    """Prune a copy of `model` and compare it with the masked original: (pruned, widths, result).

    The pruned copy shares unsliced tensors with `model` unless `own` asks for a full copy (do so
    for a model that will be trained or handed to a user)."""
    pruned = copy.deepcopy(model) if own else shallow_copy(model)
    widths = apply_plan(pruned, graph, removed)
    fix_attributes(pruned)
    with masking(model, graph, removed) as masked:
        return pruned, widths, compare(pruned, masked, inputs, select_outputs, measure_signal)


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
