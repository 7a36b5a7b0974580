"""Prove a prune: the pruned model must compute what the original computes with the removed
channels masked, i.e. with every weight that reads a removed channel set to zero."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from yoloprune._layers import input_weight
from yoloprune.graph.groups import ChannelGraph
from yoloprune.graph.trace import flat_tensors

TOLERANCE = 1e-4


@dataclass(frozen=True)
class Equivalence:
    """Largest relative difference between pruned and masked outputs, over every output tensor."""

    max_rel_error: float
    outputs: int
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return self.max_rel_error <= self.tolerance


def masked_copy(model: nn.Module, graph: ChannelGraph, removed: frozenset[int]) -> nn.Module:
    """A copy of the unpruned `model` in which removed channels are read with zero weights."""
    masked = copy.deepcopy(model)
    modules = dict(masked.named_modules())
    rem = np.fromiter(removed, dtype=np.int64, count=len(removed))
    with torch.no_grad():
        for member, layout in graph.layout.items():
            found = input_weight(modules[member.module], member.axis)
            drop = np.flatnonzero(np.isin(layout, rem))
            if found is not None and len(drop):
                weight, dim = found
                weight.index_fill_(dim, torch.as_tensor(drop), 0.0)
    return masked


def compare(
    pruned: nn.Module,
    masked: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    select_outputs: Callable[[object], object] = lambda o: o,
) -> Equivalence:
    """Run both models in eval mode on `inputs` and measure how far their outputs differ."""
    outs = []
    for m in (pruned, masked):
        was = m.training
        m.eval()
        try:
            with torch.no_grad():
                outs.append(list(flat_tensors(select_outputs(m(*inputs)))))
        finally:
            m.train(was)
    a, b = outs
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=False)):
        return Equivalence(float("inf"), len(b))
    err = max((_rel_error(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    return Equivalence(err, len(b))


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


def excite(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random statistics and affine terms, in place, so that in a freshly
    initialised model every channel carries signal to the outputs. Equivalence checks on such a
    model are sharp; on a raw random init most channels fade out and a check proves little."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.1 + 0.15)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model
