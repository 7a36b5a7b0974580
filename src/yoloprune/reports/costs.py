"""Per-block cost of a prune: channels, params and FLOPs of every block before and after, the table
`yoloprune prune --dry-run` prints.

Channels are the sum of the output channels of the block's convs (a C2f's inner widths count, not
only its output). FLOPs are counted by torch on shapes alone, at the model's image size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from yoloprune.pruning.count import count_params, flops_by_module
from yoloprune.reports.tables import text_table
from yoloprune.yolo import adapter
from yoloprune.yolo.inventory import short_type


@dataclass(frozen=True)
class BlockCost:
    """One block `model.model[index]`, before and after pruning."""

    index: int
    type: str
    channels: tuple[int, int]  # sum of the block's conv output channels
    params: tuple[int, int]
    flops: tuple[int, int]


def _width(block: nn.Module) -> int:
    return sum(m.out_channels for m in block.modules() if isinstance(m, nn.Conv2d))


def block_costs(original: nn.Module, pruned: nn.Module, imgsz: int) -> list[BlockCost]:
    """Every block's cost in `original` and `pruned` (the same architecture, narrower), FLOPs at
    `imgsz` x `imgsz`.

    Example:
        >>> from yoloprune.yolo.api import PruneOptions, prune
        >>> r = prune("yolov8n.yaml", PruneOptions(0.5, blocks=[1]))
        >>> block_costs(r.original, r.model, r.imgsz)[1].channels
        (32, 16)
    """
    inputs = (torch.zeros(1, 3, imgsz, imgsz),)
    before, after = flops_by_module(original, inputs), flops_by_module(pruned, inputs)
    rows = []
    for i, (b0, b1) in enumerate(zip(adapter.blocks(original), adapter.blocks(pruned), strict=True)):
        path = adapter.block_path(i)
        rows.append(
            BlockCost(
                i,
                short_type(b0),
                (_width(b0), _width(b1)),
                (count_params(b0), count_params(b1)),
                (before.get(path, 0), after.get(path, 0)),
            )
        )
    return rows


def _pair(before: int, after: int, fmt: Callable[[int], str] = "{:,}".format) -> str:
    return fmt(before) if before == after else f"{fmt(before)} -> {fmt(after)}"


def render_blocks(rows: Sequence[BlockCost]) -> str:
    """An aligned text table, one line per block; unchanged values are shown once."""

    def giga(v: int) -> str:
        return f"{v / 1e9:.2f} G"

    body = [(r.index, r.type, _pair(*r.channels), _pair(*r.params), _pair(*r.flops, giga)) for r in rows]
    return text_table(("block", "type", "channels", "params", "FLOPs"), body, right=(0,))
