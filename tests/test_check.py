"""train_step_check and onnx_check: pruned models train and export like the originals."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn
from ultralytics.nn.modules.block import C2f

from yoloprune.errors import YoloPruneError
from yoloprune.pruning.options import PruneOptions
from yoloprune.yolo.api import PruneResult, prune
from yoloprune.yolo.check import ONNX_TOLERANCE, onnx_check, train_step_check
from yoloprune.yolo.io import load_model


@pytest.fixture(scope="module")
def pruned() -> PruneResult:
    return prune("yolov8n.yaml", PruneOptions(0.5))


def _model(yaml: str) -> nn.Module:
    torch.manual_seed(0)
    return load_model(yaml).model


@pytest.mark.parametrize(
    "yaml",
    ["yolov8n.yaml", "yolov8n-seg.yaml", "yolo11n-pose.yaml", "yolov8n-obb.yaml", "yolov8n-cls.yaml"],
)
def test_train_step_gives_a_finite_positive_loss_for_every_task(yaml: str) -> None:
    loss = train_step_check(_model(yaml))
    assert math.isfinite(loss) and loss > 0


@pytest.mark.parametrize("yaml", ["yolo26n.yaml", "yolov10n.yaml", "yolo26n-seg.yaml", "yolo26n-pose.yaml"])
def test_train_step_handles_end2end_heads(yaml: str) -> None:
    loss = train_step_check(_model(yaml))
    assert math.isfinite(loss) and loss > 0


def test_train_step_on_a_pruned_model(pruned: PruneResult) -> None:
    loss = train_step_check(pruned.model)
    assert math.isfinite(loss) and loss > 0


def test_train_step_is_deterministic_and_leaves_the_model_alone() -> None:
    model = _model("yolov8n.yaml").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert train_step_check(model) == train_step_check(model)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats included


def test_train_step_uses_default_hyperparameters_when_the_model_has_none() -> None:
    model = _model("yolov8n.yaml")
    del model.args
    assert math.isfinite(train_step_check(model))


def test_train_step_uses_the_models_own_loss_gains() -> None:
    model = _model("yolov8n.yaml")
    base = train_step_check(model)
    model.args = {**model.args, "box": 0.0, "cls": 0.0, "dfl": 0.0}
    assert train_step_check(model) == 0.0 < base


def test_train_step_builds_per_instance_masks_when_the_model_does_not_overlap_them() -> None:
    model = _model("yolov8n-seg.yaml")
    model.args = {**model.args, "overlap_mask": False}
    assert math.isfinite(train_step_check(model))


def test_train_step_on_a_model_with_an_unfixed_consumer_names_the_failure() -> None:
    model = _model("yolov8n.yaml")
    conv = model.model[0]  # Conv(3, 16): slice its output, not block 1's input
    conv.conv.weight = nn.Parameter(conv.conv.weight.detach()[:8])
    conv.conv.out_channels = 8
    bn = conv.bn
    for name in ("weight", "bias"):
        setattr(bn, name, nn.Parameter(getattr(bn, name).detach()[:8]))
    bn.running_mean, bn.running_var, bn.num_features = bn.running_mean[:8], bn.running_var[:8], 8
    with pytest.raises(YoloPruneError, match=r"train-mode forward and loss failed \(RuntimeError: "):
        train_step_check(model)


def test_train_step_refuses_a_non_finite_loss() -> None:
    model = _model("yolov8n.yaml")
    with torch.no_grad():
        model.model[0].conv.weight.fill_(float("nan"))
    with pytest.raises(YoloPruneError, match="loss is nan"):
        train_step_check(model)


def test_checks_refuse_an_image_size_off_the_stride() -> None:
    with pytest.raises(YoloPruneError, match=r"imgsz=65 .* stride 32; use e\.g\. imgsz=96"):
        train_step_check(_model("yolov8n.yaml"), imgsz=65)


def test_checks_refuse_a_module_that_is_not_an_ultralytics_model() -> None:
    with pytest.raises(YoloPruneError, match="needs an Ultralytics model"):
        onnx_check(nn.Conv2d(3, 8, 3))


def test_onnx_export_of_a_pruned_model_agrees_with_torch(pruned: PruneResult) -> None:
    assert onnx_check(pruned.model) < ONNX_TOLERANCE


def test_onnx_check_writes_only_to_its_temporary_folder(
    pruned: PruneResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    onnx_check(pruned.model)
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []


def test_onnx_check_keeps_its_files_in_a_given_workdir(tmp_path: Path) -> None:
    assert onnx_check(_model("yolov8n-cls.yaml"), workdir=tmp_path) < ONNX_TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.pt"]


def test_onnx_export_fails_clearly_when_a_pruned_c2f_keeps_its_old_split(pruned: PruneResult) -> None:
    model = copy.deepcopy(pruned.model)
    original = dict(pruned.original.named_modules())
    block = next(m for name, m in model.named_modules() if isinstance(m, C2f) and m.c != original[name].c)
    block.c *= 2  # as before pruning: eval mode still runs (C2f.forward chunks), export splits by c
    assert train_step_check(model) > 0
    with pytest.raises(YoloPruneError, match=r"ONNX export .* failed .*forward_split"):
        onnx_check(model)


@pytest.mark.slow
@pytest.mark.parametrize(
    "yaml", ["yolov8n-seg.yaml", "yolo11n-pose.yaml", "yolov8n-obb.yaml", "yolo26n.yaml", "yolov10n.yaml"]
)
def test_onnx_export_agrees_with_torch_for_every_task(yaml: str) -> None:
    assert onnx_check(_model(yaml)) < ONNX_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("yaml", ["yolo26n-seg.yaml", "yolo26n-pose.yaml"])
def test_pruned_yolo26_seg_and_pose_train(yaml: str) -> None:
    """Training-only branches (Proto26.semseg, Pose26.cv4_sigma) are found by the train-mode trace."""
    assert train_step_check(prune(yaml, PruneOptions(0.5)).model) > 0


def test_train_step_works_on_checkpoints_saved_with_gradients_off() -> None:
    """Ultralytics saves trained checkpoints with requires_grad=False on every parameter."""
    model = _model("yolov8n.yaml")
    for p in model.parameters():
        p.requires_grad_(False)
    assert train_step_check(model) > 0
    assert not any(p.requires_grad for p in model.parameters())  # the caller's model is untouched
