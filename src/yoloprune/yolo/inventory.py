"""The block and layer inventory of an Ultralytics model, in the terms users name things by.

Scope: one `BlockInfo` per block (`model.model[i]`: index, Ultralytics type, from-indices, traced
channel counts, parameters) listing every `nn.Conv2d` inside it by its `named_modules()` path, and
`describe`, which labels any module path with its block ("layer 12 (Concat)") for explanations.
Rendering it (aligned text, Markdown, JSON) is reports/inventory.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from yoloprune.yolo import adapter
from yoloprune.yolo.api import Analysis


@dataclass(frozen=True)
class ConvInfo:
    """One `nn.Conv2d`: its path and shape. `in_` is the number of input channels."""

    name: str
    out: int
    in_: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    groups: int

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "out": self.out,
            "in": self.in_,
            "kernel": list(self.kernel),
            "stride": list(self.stride),
            "groups": self.groups,
        }

    @property
    def kernel_text(self) -> str:
        """E.g. "3x3/2" for a 3x3 stride-2 conv, "1x1" for a 1x1 stride-1 one, "dw" marked."""
        k = "x".join(map(str, self.kernel))
        s = "" if set(self.stride) == {1} else "/" + "x".join(map(str, sorted(set(self.stride))))
        g = "" if self.groups == 1 else (" dw" if self.groups == self.in_ == self.out else f" g{self.groups}")
        return k + s + g


@dataclass(frozen=True)
class BlockInfo:
    """One block `model.model[index]`. Channel counts are those seen in the traced forward pass."""

    index: int
    type: str  # Ultralytics' short type name: "Conv", "C2f", "Concat", "Detect", ...
    from_: int | tuple[int, ...]  # Ultralytics' `m.f`: -1 is the previous block
    in_channels: tuple[int, ...]
    out_channels: tuple[int, ...]
    params: int
    convs: tuple[ConvInfo, ...]

    @property
    def path(self) -> str:
        return adapter.block_path(self.index)

    def as_dict(self) -> dict:
        return {
            "index": self.index,
            "type": self.type,
            "from": list(self.from_) if isinstance(self.from_, tuple) else self.from_,
            "in_channels": list(self.in_channels),
            "out_channels": list(self.out_channels),
            "params": self.params,
            "convs": [c.as_dict() for c in self.convs],
        }


def short_type(block: nn.Module) -> str:
    """Ultralytics' `m.type` without its module path ("ultralytics.nn.modules.block.C2f" -> "C2f")."""
    return str(getattr(block, "type", type(block).__name__)).rsplit(".", 1)[-1]


def inventory(analysis: Analysis) -> list[BlockInfo]:
    """Every block of the analysed model with the convs inside it.

    Example:
        >>> from yoloprune.yolo.api import analyze
        >>> b = inventory(analyze("yolov8n.yaml", run_probe=False))[2]
        >>> b.type, b.in_channels, [(c.name, c.out, c.in_) for c in b.convs][:2]
        ('C2f', (32,), [('model.2.cv1.conv', 32, 32), ('model.2.cv2.conv', 32, 48)])
    """
    io = analysis.graph.trace.module_io
    out = []
    for i, block in enumerate(adapter.blocks(analysis.model)):
        path = adapter.block_path(i)
        convs = tuple(
            ConvInfo(
                f"{path}.{name}",
                m.out_channels,
                m.in_channels,
                tuple(m.kernel_size),
                tuple(m.stride),
                m.groups,
            )
            for name, m in block.named_modules()
            if isinstance(m, nn.Conv2d)
        )
        f = getattr(block, "f", -1)
        ins, outs = io.get(path, ((), ()))
        params = sum(p.numel() for p in block.parameters())
        out.append(
            BlockInfo(i, short_type(block), tuple(f) if isinstance(f, list) else f, ins, outs, params, convs)
        )
    return out


def describe(model: nn.Module) -> Callable[[str], str]:
    """A labeller for module paths: "model.12" or "model.12.cv1.conv" -> "layer 12 (C2f)".

    Example:
        >>> from yoloprune.yolo.io import load_model
        >>> describe(load_model("yolov8n.yaml").model)("model.14")
        'layer 14 (Concat)'
    """
    types = [short_type(b) for b in adapter.blocks(model)]

    def label(path: str) -> str:
        parts = path.split(".")
        if len(parts) >= 2 and parts[0] == "model" and parts[1].isdigit() and int(parts[1]) < len(types):
            return f"layer {parts[1]} ({types[int(parts[1])]})"
        return path or "the model"

    return label
