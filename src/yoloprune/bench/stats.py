"""Model size and cost: parameters and FLOPs, counted by torch itself."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` on the meta device: same shapes, no data, made without copying weights."""
    memo: dict[int, object] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        meta = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def count_flops(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs (2 per multiply-add) of one eval-mode forward on `inputs`, counted on shapes alone
    (meta tensors) when the model allows it, else by running it."""
    for device in ("meta", None):
        m = meta_copy(model) if device else model
        was = m.training
        m.eval()
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                m(*(x.to(device) if device else x for x in inputs))
            return int(counter.get_total_flops())
        except (RuntimeError, NotImplementedError):
            if not device:
                raise
        finally:
            m.train(was)
    raise AssertionError("unreachable")
