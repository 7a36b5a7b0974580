"""Another class count for a (pruned) model: exactly what Ultralytics' own transfer does to an unpruned
model, and on a pruned one every width and every other weight kept."""

from __future__ import annotations

import copy

import pytest
import torch
from ultralytics.nn.tasks import (
    ClassificationModel,
    DetectionModel,
    OBBModel,
    PoseModel,
    SegmentationModel,
)

from yoloprune.errors import YoloPruneError
from yoloprune.pruning.options import PruneOptions
from yoloprune.workflows.finetune import conv_widths
from yoloprune.yolo.api import prune
from yoloprune.yolo.io import load_model
from yoloprune.yolo.transfer import class_outputs, rebuild_class_outputs

# Three new classes; two share a name with an old class (old names are "n0", "n1", ...).
NAMES = {0: "n5", 1: "new", 2: " N0 "}
KINDS = {
    "yolov8n.yaml": DetectionModel,
    "yolov8n-seg.yaml": SegmentationModel,
    "yolov8n-pose.yaml": PoseModel,
    "yolo11n-obb.yaml": OBBModel,
    "yolov10n.yaml": DetectionModel,  # end-to-end: one2one_cv3 too
    "yolo26n-seg.yaml": SegmentationModel,  # end-to-end, and a semantic-mask conv per class
    "yolov8n-cls.yaml": ClassificationModel,
}


def model_names(n: int) -> set[str]:
    return {f"n{i}" for i in range(n)}


def _named(source: str):
    model = load_model(source).model
    model.names = {i: f"n{i}" for i in range(len(model.names))}
    return model


@pytest.mark.parametrize("source", list(KINDS))
def test_the_rebuild_is_what_ultralytics_does_to_an_unpruned_model(source: str) -> None:
    """Ultralytics' trainer: the model built from its YAML for the new class count, then `load` of the
    pretrained one (with the dataset's names, so rows of matching names are copied). Ours must give every
    tensor the same shape and value, but the fresh random weights of the classes no old class names."""
    model = _named(source)
    theirs = KINDS[source](copy.deepcopy(model.yaml), nc=len(NAMES), verbose=False)
    theirs.names = dict(NAMES)
    theirs.load(copy.deepcopy(model), verbose=False)
    layers, was = class_outputs(model), len(model.names)
    rebuilt = rebuild_class_outputs(model, NAMES)
    classify = type(model) is ClassificationModel  # Ultralytics copies no rows by name there
    same = [] if classify else [k for k, v in NAMES.items() if v.strip().lower() in model_names(was)]
    assert (rebuilt.was, rebuilt.now, rebuilt.layers) == (was, 3, layers)
    assert rebuilt.kept == tuple(NAMES[k] for k in same) and (classify or same)
    assert ("classes named as before keep their weights" in rebuilt.describe()) == bool(same)
    ours, want = model.state_dict(), theirs.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in want.items()}
    fresh = [f"{layer}.weight" for layer in rebuilt.layers]
    if source in ("yolo26n-seg.yaml", "yolov8n-cls.yaml"):  # no class-bias prior: PyTorch's random bias
        fresh += [f"{layer}.bias" for layer in rebuilt.layers if "cv3" not in layer]
    for key in ours:
        if key in fresh:  # random, but the rows of the two classes named like old ones are copied
            assert torch.equal(ours[key][same], want[key][same]), key
        else:
            assert torch.equal(ours[key], want[key]), key
    head = model.model[-1]
    assert (model.nc, model.names, model.yaml["nc"]) == (3, NAMES, 3)
    if hasattr(head, "no"):
        assert (head.nc, head.no) == (3, 3 + 4 * head.reg_max)
    out = model.train()(torch.zeros(1, 3, 64, 64))  # raw outputs: (B, nc) logits, or {"scores": (B, nc, A)}
    scores = out if classify else out.get("one2many", out)["scores"]
    assert scores.shape[1] == 3


def test_a_pruned_model_keeps_every_width_and_every_other_weight() -> None:
    pruned = prune("yolov8n.yaml", PruneOptions(0.5)).model
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    widths = conv_widths(pruned)
    rebuilt = rebuild_class_outputs(pruned, {0: "a", 1: "b", 2: "c"}, remap=False)
    assert rebuilt.layers == ("model.22.cv3.0.2", "model.22.cv3.1.2", "model.22.cv3.2.2") and not rebuilt.kept
    for layer in rebuilt.layers:
        conv = pruned.get_submodule(layer)
        old = before[f"{layer}.weight"]
        assert conv.weight.shape == (3, old.shape[1], 1, 1) and old.shape[0] == 80  # pruned input width kept
        assert conv.in_channels < 80  # really pruned (Ultralytics' yolov8n has 80 there)
    after = pruned.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.startswith(rebuilt.layers))
    assert conv_widths(pruned) == {k: 3 if k in rebuilt.layers else w for k, w in widths.items()}


def test_class_bias_starts_at_ultralytics_prior() -> None:
    model = load_model("yolov8n.yaml").model
    rebuild_class_outputs(model, {0: "a", 1: "b"})
    for branch, stride in zip(model.model[-1].cv3, (8, 16, 32), strict=True):
        assert torch.allclose(
            branch[-1].bias, torch.full((2,), torch.log(torch.tensor(5 / 2 / (640 / stride) ** 2)))
        )


def test_a_head_whose_classes_come_from_elsewhere_is_refused() -> None:
    model = load_model("rtdetr-l.yaml").model
    with pytest.raises(
        YoloPruneError, match=r"RTDETRDecoder head \(model\.28\) cannot be given another class count"
    ):
        rebuild_class_outputs(model, {0: "a"})
