"""Output names Ultralytics would not read as the file written: refused before anything is written.

`YOLO("yolov5n.pt")` looks for `yolov5nu.pt` instead (and downloads it), so a model saved as
`yolov5n.pt` can never be loaded back; `YOLO("yolov8n.pt")` downloads the official model wherever
that file is not found, so a pruned model by that name is easily mistaken for it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from ultralytics import YOLO

from yoloprune.cli import main
from yoloprune.errors import YoloPruneError
from yoloprune.pruning.options import PruneOptions
from yoloprune.yolo.api import PruneResult, check_outputs, prune
from yoloprune.yolo.io import load_model, save_checkpoint

TINY = Path(__file__).parent / "data" / "tiny.yaml"
REWRITTEN = ["yolov5n.pt", "yolov5s6.pt", "yolov3.pt", "yolov3-tiny.pt"]
OFFICIAL = ["yolov8n.pt", "yolo11n-seg.pt", "yolo26s-pose.pt", "yolov5nu.pt", "rtdetr-l.pt"]


@pytest.fixture(scope="module")
def result() -> PruneResult:
    return prune(TINY, PruneOptions(0.5), check_onnx=False)


def test_ultralytics_cannot_load_a_file_it_renames(tmp_path: Path, monkeypatch) -> None:
    """Why: on the installed Ultralytics, a file named yolov5n.pt is not read (given by that name;
    a path with a "u" anywhere in it escapes the rename, so the name alone decides)."""
    monkeypatch.chdir(tmp_path)
    torch.serialization.save({"model": load_model(TINY).model, "train_args": {}}, "yolov5n.pt")
    with pytest.raises(Exception, match=r"yolov5nu\.pt"):
        YOLO("yolov5n.pt")


@pytest.mark.parametrize("name", REWRITTEN)
def test_save_refuses_a_name_ultralytics_rewrites(result, tmp_path, name) -> None:
    with pytest.raises(YoloPruneError, match=rf"reads the name {name} as .*u\.pt .*another name, e\.g\. "):
        result.save(tmp_path / name, plan=tmp_path / "plan.json")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", OFFICIAL)
def test_save_refuses_an_official_checkpoints_name(result, tmp_path, name) -> None:
    with pytest.raises(YoloPruneError, match=rf"{re.escape(name)} is the name of an official Ultralytics"):
        result.save(tmp_path / name)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", [*REWRITTEN, *OFFICIAL])
def test_the_suggested_name_loads_back(result, tmp_path, name) -> None:
    with pytest.raises(YoloPruneError) as e:
        check_outputs(tmp_path / name)
    suggested = re.search(r"e\.g\. (\S+)\.$", str(e.value)).group(1)
    path = result.save(tmp_path / suggested)
    assert YOLO(str(path)).task == "detect" and load_model(path).task == "detect"


def test_other_names_are_fine(result, tmp_path) -> None:
    for name in ("pruned.pt", "yolov8n-pruned.pt", "yolov5n-pruned.pt", "yolov8n_half.pt"):
        assert load_model(result.save(tmp_path / name)).model is not None


def test_save_checkpoint_refuses_only_what_cannot_be_read_back(tmp_path) -> None:
    """An unpruned model may keep an official name (its file loads by path); a renamed one may not."""
    model = load_model(TINY).model
    assert load_model(save_checkpoint(model, tmp_path / "yolov8n.pt")).model is not None
    with pytest.raises(YoloPruneError, match=r"yolov5su\.pt"):
        save_checkpoint(model, tmp_path / "yolov5s.pt")
    assert os.listdir(tmp_path) == ["yolov8n.pt"]


def test_the_cli_refuses_before_pruning(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("yoloprune.yolo.api.prune", lambda *a, **k: pytest.fail("pruned before refusing"))
    assert main(["prune", str(TINY), "--ratio", "0.5", "--out", str(tmp_path / "yolov5n.pt")]) == 2
    err = capsys.readouterr().err
    assert "yolov5nu.pt" in err and "e.g. yolov5n-pruned.pt" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []
