"""Data-free criteria: score a group's channel classes from the weights of every coupled member.

Each criterion gives one value per channel position of a member: a filter's norm (`l1`, `l2`), a
BatchNorm gamma (`bn`, alias `gamma`), or a filter's summed distance to the group's other filters
(`fpgm`). A member's filters are the weights that produce the channels (conv/linear outputs) or
read them (the matching input slices of consumers). Positions of one class are summed, then the
members are combined by `Context.aggregation`: `mean` divides each member's values by their mean
first, so layers of different scale count alike; `sum` adds raw values. Higher means more important.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from yoloprune.graph.groups import Group
from yoloprune.importance.base import Aggregation, Context, Criterion, register
from yoloprune.pruning.layers import input_weight, norm_scale, output_weight

# (module, axis, positions) -> one value per position, or None when the member has none to give
MemberValues = Callable[[nn.Module, str, np.ndarray], "np.ndarray | None"]


def combine_members(ctx: Context, group: Group, values: MemberValues) -> np.ndarray | None:
    """Per-class scores aggregated over the members that give values; None when none does."""
    index = {c: i for i, c in enumerate(group.classes)}
    total, counted = np.zeros(group.size), 0
    for member in group.members:
        pos = ctx.graph.positions(group, member)
        found = values(ctx.modules[member.module], member.axis, pos)
        if found is None:
            continue
        per_class = np.zeros(group.size)
        np.add.at(per_class, [index[c] for c in ctx.graph.layout[member][pos].tolist()], found)
        if ctx.aggregation is Aggregation.MEAN:
            per_class /= per_class.mean() + 1e-12
        total += per_class
        counted += 1
    if not counted:
        return None
    return total / counted if ctx.aggregation is Aggregation.MEAN else total


def _filters(module: nn.Module, axis: str, pos: np.ndarray) -> torch.Tensor | None:
    """(P, D) rows of the weight that produces or reads the member's channels, at `pos`."""
    found = output_weight(module, axis) or input_weight(module, axis)
    if found is None:
        return None
    weight, dim = found
    return weight.detach().float().transpose(0, dim).flatten(1)[torch.as_tensor(pos)]


def _norms(p: float) -> MemberValues:
    def values(module: nn.Module, axis: str, pos: np.ndarray) -> np.ndarray | None:
        rows = _filters(module, axis, pos)
        return None if rows is None else rows.norm(p, dim=1).numpy()

    return values


def _scored(values: MemberValues) -> Criterion:
    def score(ctx: Context, group: Group) -> np.ndarray:
        found = combine_members(ctx, group, values)
        return np.zeros(group.size) if found is None else found

    return score


_l1 = register("l1")(_scored(_norms(1.0)))
register("l2")(_scored(_norms(2.0)))


def _gammas(module: nn.Module, axis: str, pos: np.ndarray) -> np.ndarray | None:
    gamma = norm_scale(module, axis)
    return None if gamma is None else gamma.detach().float()[torch.as_tensor(pos)].abs().numpy()


@register("bn")
@register("gamma")
def _bn(ctx: Context, group: Group) -> np.ndarray:
    """|BatchNorm gamma| of every norm layer in the group (network slimming); a group without a
    BatchNorm is scored by `l1` instead."""
    found = combine_members(ctx, group, _gammas)
    return found if found is not None else _l1(ctx, group)


def _distances(module: nn.Module, axis: str, pos: np.ndarray) -> np.ndarray | None:
    """`fpgm`: each filter's summed distance to the group's other filters of the same layer. Filters
    near the geometric median (small sums) are the ones the others can replace (He et al., 2019)."""
    rows = _filters(module, axis, pos)  # (P, D)
    return None if rows is None else torch.cdist(rows[None], rows[None])[0].sum(1).numpy()  # (P,)


register("fpgm")(_scored(_distances))


@register("random")
def _random(ctx: Context, group: Group) -> np.ndarray:
    return ctx.rng.random(group.size)
