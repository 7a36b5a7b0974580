"""Read calibration evidence for one group: which producers were measured, and per-channel values
averaged onto the group's channel classes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from yoloprune.errors import OptionError
from yoloprune.graph.groups import Group
from yoloprune.graph.trace import Member
from yoloprune.importance.base import Context


def measured(ctx: Context, group: Group, field: str, criterion: str) -> tuple[list[Member], Mapping]:
    """The group's producer members that have `field` evidence, and that evidence table."""
    if ctx.evidence is None:
        raise OptionError(
            f"`importance={criterion!r}` scores channels on calibration images; pass `data` (a dataset "
            "YAML in Ultralytics' format)."
        )
    table = getattr(ctx.evidence, field)
    members = [m for m in group.producers if m.module in table]
    if not members:
        layers = ", ".join(dict.fromkeys(m.module for m in group.producers)) or group.members[0].module
        raise OptionError(
            f"`importance={criterion!r}`: group {group.id} ({layers}) has no measured producer conv (only "
            "2-D convs are measured), so it cannot be scored; leave it out with `exclude`."
        )
    return members, table


def class_means(ctx: Context, group: Group, member: Member, values: np.ndarray) -> np.ndarray:
    """Rows of `values` (one per channel position of `member`) averaged per class of the group
    (a class may hold several positions, e.g. after `chunk`): (C_member, ...) -> (group.size, ...)."""
    pos = ctx.graph.positions(group, member)
    index = {c: i for i, c in enumerate(group.classes)}
    rows = np.array([index[c] for c in ctx.graph.layout[member][pos].tolist()])
    out = np.zeros((group.size, *values.shape[1:]))
    np.add.at(out, rows, values[pos])
    counts = np.maximum(np.bincount(rows, minlength=group.size), 1)
    return out / counts.reshape(-1, *[1] * (values.ndim - 1))
