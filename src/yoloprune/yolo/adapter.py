"""What the generic engine needs to know about Ultralytics models, and nothing more.

The channel flow itself is traced, never tabulated here. This module only supplies `ULTRALYTICS`,
the engine's `ModelAdapter` for these models (the example input a model is traced with, which
returned tensors are its predictions, which modules take their `split` sizes from an attribute,
`self.c`, that must be updated after pruning; attention's module rules live in `attention.py`),
and the block list (`model.model[i]` with `i`, `f`, `type`) users name things by, and the task a
model's head does (`model_task`).
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import (
    OBB,
    Classify,
    Depth,
    Detect,
    Pose,
    RTDETRDecoder,
    Segment,
    SemanticSegment,
    YOLOESegment,
)
from ultralytics.nn.modules import block as B
from ultralytics.nn.tasks import BaseModel

from yoloprune.graph.adapter import ModelAdapter, image_batch
from yoloprune.yolo.attention import fix_attention, module_rule

# Modules whose forward (or forward_split, used by ONNX export) splits `cv1`'s output into two
# halves of `self.c` channels. Subclasses (C3k2, C2fCIB, C2fPSA, ELAN1, ...) are covered.
HALF_SPLIT_MODULES: tuple[type[nn.Module], ...] = (B.C2, B.C2f, B.C2fAttn, B.RepNCSPELAN4, B.PSA, B.C2PSA)


def _adapts_split(module: nn.Module) -> bool:
    """True when `module` splits with sizes taken from `self.c`, which `_fix_attributes` updates."""
    return isinstance(module, HALF_SPLIT_MODULES)


def _fix_attributes(model: nn.Module) -> None:
    """Bring Python attributes in line with pruned widths so stock modules keep running."""
    for m in model.modules():
        if isinstance(m, HALF_SPLIT_MODULES):
            m.c = m.cv1.conv.out_channels // 2
        fix_attention(m)


def _select_outputs(output: object) -> object:
    """The predictions in an eval-mode Ultralytics forward: everything but the returned neck
    features (`"feats"`), whose widths pruning is free to change. Raw head tensors (box
    distribution, class logits, mask coefficients, keypoints, angles) are kept: they are the most
    sensitive place to compare a pruned model with its original."""
    if isinstance(output, dict):
        return {k: _select_outputs(v) for k, v in output.items() if k != "feats"}
    if isinstance(output, (list, tuple)):
        return [_select_outputs(v) for v in output]
    return output


def _example_inputs(model: nn.Module, batch: int = 1, seed: int | None = None) -> tuple[torch.Tensor]:
    """An input image batch sized for the model's largest stride (contents random when seeded)."""
    stride = getattr(model, "stride", None)
    s = int(max(stride.tolist())) if isinstance(stride, torch.Tensor) and stride.numel() else 32
    return image_batch(max(64, 2 * s), batch, seed)


def excitation_batch(model: nn.Module, seed: int) -> tuple[torch.Tensor]:
    """The 4-image random batch `verify.excite` recalibrates a model's norms on (seeded apart from
    the check's own input), for the checks on signal-carrying weights."""
    return _example_inputs(model, batch=4, seed=seed + 1)


ULTRALYTICS = ModelAdapter(_example_inputs, _select_outputs, _fix_attributes, _adapts_split, module_rule)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's blocks (`model.model[i]`), each with Ultralytics' `i`, `f` and `type`."""
    seq = getattr(model, "model", None)
    if not isinstance(seq, nn.Sequential):
        raise TypeError(f"{type(model).__name__} is not an Ultralytics model (it has no .model block list)")
    return list(seq)


def block_path(index: int) -> str:
    """The `named_modules()` path of block `index`."""
    return f"model.{index}"


# Output heads and their tasks, in the order Ultralytics' `guess_model_task` tests them (a Segment
# is a Detect too); RT-DETR's decoder is a detect head (Ultralytics' RTDETR class says so).
_HEADS = (
    (SemanticSegment, "semantic"),
    ((Segment, YOLOESegment), "segment"),
    (Classify, "classify"),
    (Pose, "pose"),
    (OBB, "obb"),
    (Depth, "depth"),
    ((Detect, RTDETRDecoder), "detect"),
)


def model_task(model: nn.Module) -> str:
    """The task of an Ultralytics model, read from its structure: its output head's class, tested as
    Ultralytics' `guess_model_task` tests it; else the model's `task` attribute (what `YOLO(...).task`
    reports); "unknown" for a module that is not an Ultralytics model.

    Never the "task" entry of `model.args`: a checkpoint saved by `YOLO("yolov8n-seg.yaml").save()`
    carries Ultralytics' default arguments there, task "detect" included.

    Example:
        >>> from yoloprune.yolo.io import load_model
        >>> model_task(load_model("yolov8n-pose.yaml").model)
        'pose'
    """
    if not isinstance(model, BaseModel):
        return "unknown"
    for m in model.modules():
        for head, task in _HEADS:
            if isinstance(m, head):
                return task
    task = getattr(model, "task", None)
    return task if isinstance(task, str) else "unknown"
