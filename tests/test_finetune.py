"""Fine-tuning a pruned model with the real Ultralytics trainer: the widths survive training, saving,
reloading (without yoloprune), distillation and the DDP worker path; bad input fails before training."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from plain_ultralytics import run_without_yoloprune
from tiny_training import TRAIN, relabelled, train_baseline
from torch import nn
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import callbacks
from ultralytics.utils.dist import ddp_cleanup, generate_ddp_file
from ultralytics.utils.patches import torch_load

from yoloprune.cli import main
from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.pruning.count import count_params
from yoloprune.pruning.options import PruneOptions
from yoloprune.workflows.distill import Distillation, head_distillation
from yoloprune.workflows.finetune import conv_widths, finetune, parse_train_args, training_args
from yoloprune.yolo.api import prune
from yoloprune.yolo.io import load_model
from yoloprune.yolo.trainer import PrunedDetectionTrainer
from yoloprune.yolo.transfer import class_outputs


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """The tiny baseline, and that baseline with every prunable group halved."""
    d = tmp_path_factory.mktemp("finetune")
    baseline, data = train_baseline(d)
    result = prune(str(baseline), PruneOptions(0.5))
    pruned = result.save(d / "pruned.pt")
    return {"dir": d, "baseline": baseline, "data": data, "pruned": pruned, "model": result.model}


def _read_back_without_yoloprune(path: Path, cwd: Path) -> dict:
    """Load `path` with plain `ultralytics.YOLO` in a process where yoloprune cannot be imported, predict
    once, and return its parameter count and conv widths."""
    out = run_without_yoloprune(
        """
        import json
        import numpy as np
        from torch import nn
        from ultralytics import YOLO
        model = YOLO(sys.argv[1])
        model.predict(np.zeros((64, 64, 3), dtype=np.uint8), imgsz=64, verbose=False)
        net = model.model
        widths = {n: m.out_channels for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
        print(json.dumps({"params": sum(p.numel() for p in net.parameters()), "widths": widths}))
        """,
        path,
        cwd=cwd,
    )
    return json.loads(out.strip().splitlines()[-1])


def test_pruned_widths_survive_training_saving_and_plain_reloading(setup) -> None:
    want_params, want_widths = count_params(setup["model"]), conv_widths(setup["model"])
    assert want_params < count_params(load_model(setup["baseline"]).model)  # really pruned
    ft = finetune(
        setup["pruned"], setup["data"], 1, project=str(setup["dir"]), name="ft", exist_ok=True, **TRAIN
    )
    assert ft.best.exists() and ft.last.exists() and ft.best.parent == setup["dir"] / "ft" / "weights"
    assert (ft.params, ft.widths) == (want_params, want_widths)
    for checkpoint in (ft.best, ft.last):
        model = load_model(checkpoint).model
        assert (count_params(model), conv_widths(model)) == (want_params, want_widths)
    plain = _read_back_without_yoloprune(ft.best, setup["dir"])
    assert plain == {"params": want_params, "widths": want_widths}
    assert 0 <= ft.metrics.map50_95 <= ft.metrics.map50 <= 1


def test_the_stock_trainer_path_would_lose_the_pruned_widths(setup) -> None:
    """Why the trainer subclass exists: Ultralytics' get_model rebuilds from the YAML and copies in only
    the weights whose shapes match; ours hands back the checkpoint's module."""
    pruned = load_model(setup["pruned"]).model
    rebuilt = DetectionModel(pruned.yaml, nc=10, verbose=False)
    rebuilt.load(pruned, verbose=False)  # what DetectionTrainer.get_model does with the checkpoint
    assert count_params(rebuilt) == count_params(load_model(setup["baseline"]).model) != count_params(pruned)


def test_cli_finetune_with_distillation_logs_a_kd_loss(setup, capsys) -> None:
    argv = ["finetune", str(setup["pruned"]), f"data={setup['data']}", "epochs=1", f"project={setup['dir']}"]
    argv += ["name=kd", "exist_ok=True", *(f"{k}={v}" for k, v in TRAIN.items())]
    assert main([*argv, "--teacher", str(setup["baseline"]), "--distill-weight", "2"]) == 0
    printed = capsys.readouterr()
    assert "params kept" in printed.out and "kd_loss" in printed.err  # the training log, on stderr
    rows = list(csv.DictReader((setup["dir"] / "kd" / "results.csv").open()))
    assert float(rows[-1]["train/kd_loss"]) > 0
    best = torch_load(setup["dir"] / "kd" / "weights" / "best.pt", map_location="cpu")
    assert type(best["model"]) is DetectionModel and best["model"].criterion is None
    assert conv_widths(best["model"]) == conv_widths(setup["model"])


def _transferred(best: Path, pruned: nn.Module, cwd: Path) -> nn.Module:
    """Check that `best` is `pruned` with 3 classes c0, c1, c2 (every width kept but the class outputs'),
    loaded plainly too; return it."""
    model = load_model(best).model
    head = model.model[-1]
    names = {0: "c0", 1: "c1", 2: "c2"}
    assert (model.nc, head.nc, head.no, model.yaml["nc"], model.names) == (
        3,
        3,
        3 + 4 * head.reg_max,
        3,
        names,
    )
    want = {k: 3 if k in class_outputs(model) else w for k, w in conv_widths(pruned).items()}
    assert conv_widths(model) == want
    assert _read_back_without_yoloprune(best, cwd) == {"params": count_params(model), "widths": want}
    return model


def test_finetune_on_a_dataset_with_other_classes_rebuilds_only_the_class_outputs(setup, capsys) -> None:
    """The pruned 10-class baseline on a 3-class dataset: Ultralytics' transfer, with the pruned widths."""
    data = relabelled(setup["data"], setup["dir"] / "three")
    argv = ["finetune", str(setup["pruned"]), f"data={data}", "epochs=1", f"project={setup['dir']}"]
    assert main([*argv, "name=three", "exist_ok=True", *(f"{k}={v}" for k, v in TRAIN.items())]) == 0
    printed = capsys.readouterr()
    assert (
        "rebuilt the class outputs for 3 classes (was 10): model.22.cv3.0.2, model.22.cv3.1.2, "
        "model.22.cv3.2.2; every other weight and width kept\n"
    ) in printed.out + printed.err
    _transferred(setup["dir"] / "three" / "weights" / "best.pt", setup["model"], setup["dir"])


@pytest.mark.slow  # the head rebuild itself, per task, is checked fast in tests/test_transfer.py
@pytest.mark.parametrize(
    ("task", "yaml", "was"), [("segment", "yolov8n-seg.yaml", 80), ("pose", "yolov8n-pose.yaml", 1)]
)
def test_pruned_segment_and_pose_models_transfer_to_other_classes(setup, tmp_path, task, yaml, was) -> None:
    data = relabelled(setup["data"], tmp_path / task, task)
    result = prune(yaml, PruneOptions(0.5))
    lines: list[str] = []
    ft = finetune(
        result.save(tmp_path / "pruned.pt"),
        data,
        1,
        project=str(tmp_path),
        name="ft",
        log=lines.append,
        **TRAIN,
    )
    assert lines == [
        f"rebuilt the class outputs for 3 classes (was {was}): model.22.cv3.0.2, model.22.cv3.1.2, "
        "model.22.cv3.2.2; every other weight and width kept"
    ]
    _transferred(ft.best, result.model, tmp_path)


def test_a_pose_dataset_with_other_keypoints_is_refused_before_training(setup, tmp_path) -> None:
    data = relabelled(setup["data"], tmp_path / "five", "pose", keypoints=5)
    pruned = prune("yolov8n-pose.yaml", PruneOptions(0.5), check_onnx=False).save(tmp_path / "pose.pt")
    with pytest.raises(OptionError, match=r"has kpt_shape \[5, 3\], but the model predicts \[17, 3\]"):
        finetune(pruned, data, 1, project=str(tmp_path), name="ft", **TRAIN)
    assert not (tmp_path / "ft").exists()


def _head(b: int, nc: int, reg_max: int, anchors: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "boxes": torch.randn(b, 4 * reg_max, anchors, generator=g),  # (B, 4 * reg_max, A)
        "scores": torch.randn(b, nc, anchors, generator=g),  # (B, nc, A)
    }


@pytest.mark.parametrize("reg_max", [16, 1])
def test_head_distillation_is_zero_at_the_teacher_and_pulls_the_student_towards_it(reg_max: int) -> None:
    teacher = _head(2, 10, reg_max, 84, seed=0)
    assert head_distillation(teacher, teacher, reg_max).abs() < 1e-5
    student = {k: v.clone().requires_grad_(True) for k, v in _head(2, 10, reg_max, 84, seed=1).items()}
    loss = head_distillation(student, teacher, reg_max)
    assert loss > 0
    loss.backward()
    step = {k: (v - 0.1 * v.grad).detach() for k, v in student.items()}
    assert head_distillation(step, teacher, reg_max) < loss  # a gradient step moves towards the teacher


def test_head_distillation_averages_end_to_end_branches() -> None:
    t, s = _head(1, 3, 16, 20, seed=0), _head(1, 3, 16, 20, seed=1)
    both = head_distillation({"one2many": s, "one2one": t}, {"one2many": t, "one2one": t}, 16)
    assert torch.isclose(both, head_distillation(s, t, 16) / 2)


def test_head_distillation_refuses_a_teacher_with_another_head() -> None:
    with pytest.raises(YoloPruneError, match="same classes"):
        head_distillation(_head(1, 3, 16, 20, 0), _head(1, 5, 16, 20, 0), 16)


def test_ddp_worker_rebuilds_the_pruned_model_from_the_checkpoint_path(setup) -> None:
    """Ultralytics' DDP launch pickles the trainer class, its arguments and its callbacks into a file a
    subprocess runs. We run that exact file (one CPU process, so no process group): the worker must
    import our trainer class, load the pruned model from the path and keep the distillation callback."""
    overrides = training_args(setup["pruned"].resolve(), setup["data"], 1, "detect", TRAIN)
    cbs = callbacks.get_default_callbacks()
    cbs["on_pretrain_routine_end"].append(Distillation(str(setup["baseline"].resolve()), 1.0))
    trainer = PrunedDetectionTrainer(
        overrides={**overrides, "project": str(setup["dir"]), "name": "ddp"}, _callbacks=cbs
    )
    file = generate_ddp_file(trainer)
    try:
        state = torch_load(Path(file).with_suffix(".pt"), map_location="cpu")
        assert state["trainer"] is PrunedDetectionTrainer
        assert state["model"] == str(setup["pruned"].resolve())  # a path, not an in-memory module
        run = subprocess.run([sys.executable, file], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        ddp_cleanup(trainer, file)
    model = load_model(trainer.best).model
    assert conv_widths(model) == conv_widths(setup["model"])
    rows = list(csv.DictReader(trainer.csv.open()))
    assert float(rows[-1]["train/kd_loss"]) > 0


def test_parse_train_args_types_values_like_the_ultralytics_cli() -> None:
    assert parse_train_args(["epochs=3", "lr0=0.01", "cos_lr=True", "device=0,1", "name=1e3"]) == {
        "epochs": 3,
        "lr0": 0.01,
        "cos_lr": True,
        "device": (0, 1),  # as `yolo train device=0,1` gives it; Ultralytics' parse_device takes both forms
        "name": "1e3",  # run names stay strings
    }
    with pytest.raises(YoloPruneError, match="KEY=VALUE"):
        parse_train_args(["epochs"])


def _unlabelled(setup, tmp_path: Path) -> Path:
    copy = tmp_path / "unlabelled"
    shutil.copytree(setup["data"].parent, copy, ignore=shutil.ignore_patterns("*.cache"))
    for label in (copy / "labels").rglob("*.txt"):
        label.write_text("")
    return copy / "data.yaml"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s, tmp: {"data": tmp / "missing.yaml"}, "no such dataset YAML"),
        (lambda s, tmp: {"data": _unlabelled(s, tmp)}, "no labelled boxes"),
        (lambda s, tmp: {"epochz": 3}, "'epochz' is not a valid YOLO argument"),
        (lambda s, tmp: {"lr0": -1}, "lr0"),
        (lambda s, tmp: {"task": "segment"}, "set by fine-tuning itself"),
        (lambda s, tmp: {"epochs": 0}, "1 or more"),
        (lambda s, tmp: {"checkpoint": s["data"]}, "pass a .pt checkpoint"),
        (lambda s, tmp: {"teacher": "yolov8n-seg.yaml"}, "must be the unpruned detect model"),
        (lambda s, tmp: {"teacher": s["baseline"], "distill_weight": -1}, "positive number"),
    ],
)
def test_bad_input_fails_before_training(setup, tmp_path, change, expected) -> None:
    args = {"checkpoint": setup["pruned"], "data": setup["data"], "epochs": 1, **change(setup, tmp_path)}
    with pytest.raises(YoloPruneError, match=expected):
        finetune(**args, project=str(tmp_path), name="never", **TRAIN)
    assert not (tmp_path / "never").exists()  # the trainer was never created
