"""The task comes from the model's structure (its head), for every task and every command.

`YOLO("yolov8n-seg.yaml").save("s.pt")` writes Ultralytics' default arguments with the model, so
`model.args["task"]` says "detect" whatever the head is; `YOLO("s.pt").task` says "segment".
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from ultralytics import YOLO

from yoloprune.cli import main
from yoloprune.pruning.options import PruneOptions
from yoloprune.yolo.adapter import model_task
from yoloprune.yolo.api import prune, verify
from yoloprune.yolo.check import train_step_check
from yoloprune.yolo.io import load_model

TASK_YAMLS = {
    "detect": "yolov8n.yaml",
    "segment": "yolov8n-seg.yaml",
    "pose": "yolov8n-pose.yaml",
    "obb": "yolov8n-obb.yaml",
    "classify": "yolov8n-cls.yaml",
    "semantic": "yolo26n-sem.yaml",
    "depth": "yolo26n-depth.yaml",
}
SRC = Path(__file__).parents[1] / "src" / "yoloprune"


def saved_by_ultralytics(task: str, folder: Path) -> Path:
    path = folder / f"{task}.pt"
    YOLO(TASK_YAMLS[task]).save(str(path))
    return path


@pytest.mark.parametrize("task", TASK_YAMLS)
def test_a_checkpoint_saved_by_ultralytics_has_its_heads_task(task: str, tmp_path: Path) -> None:
    path = saved_by_ultralytics(task, tmp_path)
    loaded = load_model(path)
    assert loaded.model.args["task"] == "detect"  # Ultralytics' default, whatever the head
    assert loaded.task == model_task(loaded.model) == YOLO(str(path)).task == task
    loss = train_step_check(loaded.model)  # the synthetic batch has the task's labels
    assert math.isfinite(loss) and loss > 0


def test_the_head_decides_when_the_model_has_no_task_attribute() -> None:
    model = load_model("yolov8n-seg.yaml").model
    del model.task
    model.args = {**model.args, "task": "detect"}
    assert model_task(model) == "segment"
    assert train_step_check(model) > 0


def test_a_saved_checkpoint_records_the_heads_task(tmp_path: Path) -> None:
    """`YOLO(path).task` and a trainer that resumes from the checkpoint's arguments read these."""
    r = prune(saved_by_ultralytics("pose", tmp_path), PruneOptions(0.3), check_onnx=False)
    saved = r.save(tmp_path / "pruned.pt")
    assert YOLO(str(saved)).task == "pose"
    assert YOLO(str(saved)).ckpt["train_args"]["task"] == "pose"


def test_no_module_guesses_the_task_from_the_saved_arguments() -> None:
    """One place reads the task (yolo/io.py's `model_task`); Ultralytics' guess_model_task reads
    `model.args["task"]` first, which is wrong for checkpoints saved as above."""
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "guess_model_task(" not in text, path
        assert '.args["task"]' not in text and '.args.get("task"' not in text, path


@pytest.mark.slow
@pytest.mark.parametrize("task", TASK_YAMLS)
def test_every_task_saved_by_ultralytics_prunes_and_verifies(task: str, tmp_path: Path) -> None:
    path = saved_by_ultralytics(task, tmp_path)
    r = prune(path, PruneOptions(0.3))  # every check, the train step and ONNX export included
    assert r.ok, r.failed
    pruned, plan = tmp_path / "pruned.pt", tmp_path / "plan.json"
    r.save(pruned, plan=plan)
    v = verify(path, pruned, plan.read_text())
    assert v.ok and [c.name for c in v.checks][-2:] == ["train step", "ONNX"], v.failed


def test_the_cli_prunes_a_segmentation_checkpoint_saved_by_ultralytics(tmp_path: Path, capsys) -> None:
    path = saved_by_ultralytics("segment", tmp_path)
    out = tmp_path / "pruned.pt"
    assert main(["prune", str(path), "--ratio", "0.3", "--out", str(out), "--no-onnx-check"]) == 0
    assert "train step  loss" in capsys.readouterr().out
    assert load_model(out).task == "segment"
