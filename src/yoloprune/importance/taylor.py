"""First-order Taylor importance (Molchanov et al., CVPR 2019) from calibration evidence.

A producer conv's channel c scores the mean over images of |sum over H, W of a_c x dL/da_c|, the
first-order estimate of how much the loss changes when the channel is zeroed (measured by
`yolo/calibrate.py` with the model's own Ultralytics loss). A class's scores at the group's
measured producers are combined by `Context.aggregation` (`sum` keeps them loss changes on one
scale in every layer; `mean`, the default, weighs every producer alike).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from yoloprune.graph.groups import Group
from yoloprune.importance._evidence import measured
from yoloprune.importance.base import Context, register
from yoloprune.importance.magnitude import combine_members


@register("taylor", needs=frozenset({"taylor"}))
def taylor(ctx: Context, group: Group) -> np.ndarray:
    """Taylor scores of the group's measured producer convs, per class (higher = removing the
    channel changes the loss more); a channel whose activation x gradient is zero scores 0."""
    members, table = measured(ctx, group, "taylor", "taylor")
    paths = {id(ctx.modules[m.module]): m.module for m in members}

    def values(module: nn.Module, axis: str, pos: np.ndarray) -> np.ndarray | None:
        path = paths.get(id(module))
        return None if path is None or axis != "out" else np.asarray(table[path], dtype=np.float64)[pos]

    found = combine_members(ctx, group, values)
    return np.zeros(group.size) if found is None else found
