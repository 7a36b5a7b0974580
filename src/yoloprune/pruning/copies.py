"""Shape-only copies of models on the meta device, made without copying any weight data."""

from __future__ import annotations

import copy
import itertools

from torch import nn


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` on the meta device: same shapes, no data, made without copying weights."""
    memo: dict[int, object] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        meta = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def shallow_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters and buffers share storage with the original's.

    Rebinding a tensor's data in the copy (slicing, dtype changes) leaves the original untouched;
    writing into a tensor in place would not, so clone a tensor before changing it in place.
    """
    memo: dict[int, object] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        alias = t.detach()
        memo[id(t)] = nn.Parameter(alias, t.requires_grad) if isinstance(t, nn.Parameter) else alias
    return copy.deepcopy(model, memo)
