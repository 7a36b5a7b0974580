"""The trainer seam: Ultralytics trainers that train a pruned checkpoint's own module.

Scope: Ultralytics' stock `get_model` rebuilds the model from `model.yaml` and copies in the weights
whose shapes match, which silently drops every pruned layer. These trainers override that one seam
and return the checkpoint's own module; for a dataset with another class count they first rebuild
its class outputs, as that rebuild would (`transfer.rebuild_class_outputs`). The checkpoint always
travels by path (`model=pruned.pt`), so Ultralytics' DDP workers, which rebuild the trainer from its
class and arguments in a subprocess, load the same pruned module, and so does `resume=last.pt`.
Nothing here patches Ultralytics.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from ultralytics.models import yolo

from yoloprune.errors import YoloPruneError
from yoloprune.yolo.check import num_classes
from yoloprune.yolo.transfer import rebuild_class_outputs


class _KeepsPrunedModel:
    """Mixin for an Ultralytics trainer: train the checkpoint's own module, never a YAML rebuild."""

    def get_model(self, cfg: Any = None, weights: nn.Module | None = None, verbose: bool = True) -> nn.Module:
        if not isinstance(weights, nn.Module):
            raise YoloPruneError(
                f"{type(self).__name__} fine-tunes the module inside a checkpoint; pass model=PRUNED.pt and "
                "leave pretrained at True (a pruned architecture cannot be rebuilt from its YAML)."
            )
        if num_classes(weights) != self.data["nc"]:  # a new dataset: new class outputs, as Ultralytics does
            rebuild_class_outputs(weights, self.data["names"], remap=getattr(self.args, "cls_remap", True))
        model = self.set_model_names_for_load(weights)
        for p in model.parameters():
            p.requires_grad_(p.dtype.is_floating_point)
        return model


class PrunedDetectionTrainer(_KeepsPrunedModel, yolo.detect.DetectionTrainer):
    """`DetectionTrainer` that keeps a pruned model's widths (see `_KeepsPrunedModel`).

    Example:
        >>> YOLO("pruned.pt").train(trainer=PrunedDetectionTrainer, data="digits/data.yaml")  # doctest: +SKIP
    """


class PrunedSegmentationTrainer(_KeepsPrunedModel, yolo.segment.SegmentationTrainer):
    """`SegmentationTrainer` that keeps a pruned model's widths."""


class PrunedPoseTrainer(_KeepsPrunedModel, yolo.pose.PoseTrainer):
    """`PoseTrainer` that keeps a pruned model's widths."""


class PrunedOBBTrainer(_KeepsPrunedModel, yolo.obb.OBBTrainer):
    """`OBBTrainer` that keeps a pruned model's widths."""


TRAINERS: dict[str, type] = {
    "detect": PrunedDetectionTrainer,
    "segment": PrunedSegmentationTrainer,
    "pose": PrunedPoseTrainer,
    "obb": PrunedOBBTrainer,
}
TASKS = tuple(TRAINERS)  # the tasks a pruned model can be fine-tuned for
