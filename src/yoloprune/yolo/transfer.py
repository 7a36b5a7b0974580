"""Give a (pruned) model another class count, as Ultralytics does when it trains a pretrained model on a
dataset with other classes: only the layers that output class scores start anew.

Ultralytics' trainer builds the model from its YAML with the dataset's `nc` and loads every pretrained
tensor whose shape still fits (`BaseModel.load`): the class-output conv of each head branch is new
(PyTorch's default init, the head's class-bias prior), the rest of the class branch keeps its
pretrained width and weights, and the rows of classes whose names match a pretrained class name are
copied over (`cls_remap`). A pruned model cannot go through its YAML (its widths are not the YAML's),
so `rebuild_class_outputs` does the same in place, on the module itself:
  - Detect, Segment, Pose, OBB and their end-to-end variants (YOLOv10, YOLO26): the last conv of every
    `cv3` and `one2one_cv3` branch, and YOLO26's semantic-mask conv `proto.semseg`;
  - Classify: its `linear` (all rows fresh), as Ultralytics' `ClassificationModel.reshape_outputs`.
Every input width (pruned or not) and every other tensor stays as it is, so the model is still plain
Ultralytics. Heads whose classes come from elsewhere (text embeddings, RT-DETR's queries) are refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from ultralytics.nn.modules.head import Classify, Detect, WorldDetect, YOLOEDetect

from yoloprune.errors import YoloPruneError
from yoloprune.text import plural
from yoloprune.yolo.adapter import block_path
from yoloprune.yolo.check import num_classes


@dataclass(frozen=True)
class Rebuilt:
    """What `rebuild_class_outputs` changed: the layers (by `named_modules()` path), the class counts
    before and after, and the new classes whose rows were copied from an old class of the same name."""

    layers: tuple[str, ...]
    was: int
    now: int
    kept: tuple[str, ...]

    def describe(self) -> str:
        """One line for the log."""
        kept = f"; classes named as before keep their weights ({', '.join(self.kept)})" if self.kept else ""
        return (
            f"rebuilt the class outputs for {plural(self.now, 'class', 'classes')} (was {self.was}): "
            f"{', '.join(self.layers)}{kept}; every other weight and width kept"
        )


def class_outputs(model: nn.Module) -> tuple[str, ...]:
    """The `named_modules()` paths of the layers that output `model`'s class scores; a YoloPruneError
    for a head whose class count yoloprune cannot change.

    Example:
        >>> from yoloprune.yolo.io import load_model
        >>> class_outputs(load_model("yolov8n.yaml").model)
        ('model.22.cv3.0.2', 'model.22.cv3.1.2', 'model.22.cv3.2.2')
    """
    return tuple(_outputs(model))


def rebuild_class_outputs(model: nn.Module, names: Mapping[int, str], remap: bool = True) -> Rebuilt:
    """Give `model` the classes `names` ({index: name}) in place: new class-output layers with the old
    input widths, `nc` and `names` set on the model, its head and its YAML. With `remap` (Ultralytics'
    `cls_remap`, on by default) a new class named like an old one starts from that class's weights
    (detection heads; like Ultralytics, not Classify).

    Example:
        >>> from yoloprune.yolo.io import load_model
        >>> model = load_model("yolov8n.yaml").model
        >>> rebuild_class_outputs(model, {0: "cat", 1: "dog"}).layers[0], model.model[-1].cv3[0][-1]
        ('model.22.cv3.0.2', Conv2d(80, 2, kernel_size=(1, 1), stride=(1, 1)))
    """
    outputs = _outputs(model)
    nc, was, head = len(names), num_classes(model), model.model[-1]
    remap = remap and isinstance(head, Detect)  # as Ultralytics, which leaves Classify's rows fresh
    rows = _same_names(getattr(model, "names", None) or {}, names) if remap else {}
    for path, (old, stride) in outputs.items():
        new = _resized(old, nc)
        with torch.no_grad():
            if stride:  # Ultralytics' Detect.bias_init: ~0.01 objects per 640x640 image, over the classes
                new.bias.fill_(math.log(5 / nc / (640 / stride) ** 2))
            for to, source in rows.items():
                new.weight[to] = old.weight[source]
                if new.bias is not None:
                    new.bias[to] = old.bias[source]
        parent, name = path.rsplit(".", 1)
        setattr(model.get_submodule(parent), name, new)
    if isinstance(head, Detect):
        head.nc, head.no = nc, nc + head.reg_max * 4
    model.nc, model.names = nc, dict(names)
    if isinstance(getattr(model, "yaml", None), dict):
        model.yaml["nc"] = nc
    return Rebuilt(tuple(outputs), was, nc, tuple(names[k] for k in rows))


def _outputs(model: nn.Module) -> dict[str, tuple[nn.Module, float]]:
    """{path: (class-output layer, the stride of its Detect level; 0: PyTorch's default bias)}."""
    head = model.model[-1]
    path = block_path(len(model.model) - 1)
    if isinstance(head, Classify):
        return {f"{path}.linear": (head.linear, 0.0)}
    if not isinstance(head, Detect) or isinstance(head, (WorldDetect, YOLOEDetect)):
        raise YoloPruneError(
            f"the model's {type(head).__name__} head ({path}) cannot be given another class count: "
            "yoloprune rebuilds the class outputs of YOLO Detect, Segment, Pose, OBB and Classify heads "
            f"only. Fine-tune on a dataset with the model's {num_classes(model)} classes."
        )
    outputs: dict[str, tuple[nn.Module, float]] = {}
    for attr in ("cv3", "one2one_cv3"):
        for i, branch in enumerate(getattr(head, attr, None) or ()):
            stride = float(head.stride[i]) if len(head.stride) > i else 0.0
            outputs[f"{path}.{attr}.{i}.{len(branch) - 1}"] = (branch[-1], stride)
    semseg = getattr(getattr(head, "proto", None), "semseg", None)  # YOLO26 segment: a class per pixel
    if semseg is not None:
        outputs[f"{path}.proto.semseg.{len(semseg) - 1}"] = (semseg[-1], 0.0)
    odd = [p for p, (m, _) in outputs.items() if not isinstance(m, nn.Conv2d) or m.out_channels != head.nc]
    if odd or not outputs:
        raise YoloPruneError(
            f"the model's {type(head).__name__} head ({path}) does not end its class branches in a conv "
            f"with one output per class ({', '.join(odd) or 'no class branch'}), so its class count cannot "
            f"be changed. Fine-tune on a dataset with the model's {head.nc} classes."
        )
    return outputs


def _resized(old: nn.Module, nc: int) -> nn.Module:
    """A new layer like `old` (same type, inputs, kernel, device, dtype, mode) with `nc` outputs."""
    bias = old.bias is not None
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, nc, bias=bias)
    else:
        new = nn.Conv2d(
            old.in_channels, nc, old.kernel_size, old.stride, old.padding, old.dilation, old.groups, bias=bias
        )
    new = new.to(old.weight.device, old.weight.dtype).train(old.training)
    return new.requires_grad_(old.weight.requires_grad)


def _same_names(old: Mapping[int, str], new: Mapping[int, str]) -> dict[int, int]:
    """{new index: old index} of new classes named like an old one (case and spaces ignored), as
    Ultralytics' `_remap_cls_by_names`; none when either side has placeholder names ("0", "1", ...)."""
    if any(all(str(k) == str(v) for k, v in n.items()) for n in (old, new)):
        return {}
    lookup = {str(v).strip().lower(): int(k) for k, v in old.items()}
    return {
        int(k): lookup[str(v).strip().lower()] for k, v in new.items() if str(v).strip().lower() in lookup
    }
