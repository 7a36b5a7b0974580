"""Physically remove channels: slice every member of the removed classes, in place."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from yoloprune.graph.groups import ChannelGraph
from yoloprune.pruning.layers import slice_member


def apply_plan(model: nn.Module, graph: ChannelGraph, removed: frozenset[int]) -> dict[str, tuple[int, int]]:
    """Slice `model` (the traced one) so no member keeps a removed class, in place.

    Returns `"path.axis" -> (channels before, channels after)` for every member that changed.
    """
    modules = dict(model.named_modules())
    rem = np.fromiter(removed, dtype=np.int64, count=len(removed))
    widths = {}
    for member, layout in graph.layout.items():
        keep = np.flatnonzero(~np.isin(layout, rem))
        if len(keep) == len(layout):
            continue
        slice_member(modules[member.module], member.axis, torch.as_tensor(keep, dtype=torch.long))
        widths[f"{member.module}.{member.axis}"] = (len(layout), len(keep))
    return widths
