"""Physically remove channels: slice every member of the removed classes, in place (`apply_plan`),
or in a copy whose Python attributes follow the new widths (`pruned_copy`)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from yoloprune.graph.adapter import PLAIN, ModelAdapter
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


def pruned_copy(
    model: nn.Module,
    graph: ChannelGraph,
    removed: frozenset[int],
    adapter: ModelAdapter = PLAIN,
    copier: Callable[[nn.Module], nn.Module] = copy.deepcopy,
) -> tuple[nn.Module, dict[str, tuple[int, int]]]:
    """A copy of `model` (made by `copier`: a full copy, `copies.shallow_copy` or `copies.meta_copy`)
    with `removed` sliced out and `adapter.fix_attributes` run on it: (copy, `apply_plan`'s widths)."""
    pruned = copier(model)
    widths = apply_plan(pruned, graph, removed)
    adapter.fix_attributes(pruned)
    return pruned, widths
