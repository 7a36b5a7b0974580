"""Model size and cost: parameters and FLOPs, counted by torch itself."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from yoloprune.pruning.copies import meta_copy


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs (2 per multiply-add) of one eval-mode forward on `inputs`, counted on shapes alone
    (meta tensors) when the model allows it, else by running it."""
    return flops_by_module(model, inputs)[""]


def flops_by_module(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, int]:
    """`count_flops` per `named_modules()` path, each module counting its children's FLOPs too;
    "" is the whole forward pass."""
    for device in ("meta", None):
        m = meta_copy(model) if device else model
        was = m.training
        m.eval()
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                m(*(x.to(device) if device else x for x in inputs))
            counts = {  # keys are "Global" and "<root class>.<path>"
                name.partition(".")[2]: sum(ops.values())
                for name, ops in counter.get_flop_counts().items()
                if "." in name
            }
            return {**counts, "": int(counter.get_total_flops())}
        except (RuntimeError, NotImplementedError):
            if not device:
                raise
        finally:
            m.train(was)
    raise AssertionError("unreachable")
