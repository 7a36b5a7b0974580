"""The block and layer inventory (yolo/inventory.py) rendered: aligned text, Markdown, JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from yoloprune.reports.tables import markdown_table, text_table
from yoloprune.yolo.inventory import BlockInfo


def _counts(c: Sequence[int]) -> str:
    return ", ".join(map(str, c)) or "-"


def _from(f: int | tuple[int, ...]) -> str:
    return ", ".join(map(str, f)) if isinstance(f, tuple) else str(f)


def render_text(blocks: Sequence[BlockInfo]) -> str:
    """One row per block, each followed by its convs ("conv k" numbers convs within a block)."""
    block_rows = [
        [b.index, b.type, _from(b.from_), _counts(b.in_channels), _counts(b.out_channels), f"{b.params:,}"]
        for b in blocks
    ]
    head, rule, *block_lines = text_table(
        ["block", "type", "from", "in", "out", "params"], block_rows, right=(0, 5)
    ).splitlines()
    conv_rows = [
        [f"conv {k}", c.name, f"out={c.out}", f"in={c.in_}", c.kernel_text]
        for b in blocks
        for k, c in enumerate(b.convs)
    ]
    conv_lines = iter(text_table([""] * 5, conv_rows).splitlines()[2:])
    lines = [head, rule]
    for b, line in zip(blocks, block_lines, strict=True):
        lines.append(line)
        lines.extend("       " + next(conv_lines) for _ in b.convs)
    return "\n".join(lines)


def render_markdown(blocks: Sequence[BlockInfo], source: str = "") -> str:
    """A blocks table and a convs table."""
    title = f"# Blocks of {source}\n\n" if source else ""
    block_rows = [
        [
            b.index,
            b.type,
            _from(b.from_),
            _counts(b.in_channels),
            _counts(b.out_channels),
            f"{b.params:,}",
            len(b.convs),
        ]
        for b in blocks
    ]
    conv_rows = [
        [b.index, k, f"`{c.name}`", c.out, c.in_, c.kernel_text]
        for b in blocks
        for k, c in enumerate(b.convs)
    ]
    return (
        f"{title}{markdown_table(['Block', 'Type', 'From', 'In', 'Out', 'Params', 'Convs'], block_rows)}\n\n"
        f"## Convolutions\n\n{markdown_table(['Block', 'Conv', 'Path', 'Out', 'In', 'Kernel'], conv_rows)}\n"
    )


def render_json(blocks: Sequence[BlockInfo], source: str = "", task: str = "") -> str:
    """`{"source", "task", "blocks": [BlockInfo.as_dict(), ...]}`."""
    return json.dumps({"source": source, "task": task, "blocks": [b.as_dict() for b in blocks]}, indent=1)
