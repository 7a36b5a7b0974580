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
