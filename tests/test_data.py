"""The generated digits dataset and calibration batches read through Ultralytics' dataset builder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from yoloprune.cli import main
from yoloprune.errors import YoloPruneError
from yoloprune.workflows.data import make_digits
from yoloprune.yolo.dataset import calibration_batches


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_digits(tmp_path_factory.mktemp("data") / "digits", images=16, imgsz=64)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_digits_layout_and_labels(digits):
    root = digits.yaml.parent
    assert digits.images == {"train": 13, "val": 3}
    for split, n in digits.images.items():
        assert len(list((root / "images" / split).glob("*.png"))) == n
        rows = [
            r.split() for f in (root / "labels" / split).glob("*.txt") for r in f.read_text().splitlines()
        ]
        assert len(rows) == digits.boxes[split] >= 2 * n  # 2 to 5 digits per image
        values = np.array(rows, dtype=float)  # (N, 5): class, cx, cy, w, h
        assert set(values[:, 0].astype(int)) <= set(range(10))
        assert (values[:, 1:] > 0).all() and (values[:, 1:] <= 1).all()
    text = digits.yaml.read_text()
    assert "train: images/train" in text and "nc: 10" in text


def test_digits_is_deterministic_and_seeded(digits, tmp_path):
    again = make_digits(tmp_path / "again", images=16, imgsz=64)
    other = make_digits(tmp_path / "other", images=16, imgsz=64, seed=1)
    assert _files(again.yaml.parent) == _files(digits.yaml.parent)
    assert _files(other.yaml.parent) != _files(digits.yaml.parent)


def test_digits_refuses_an_existing_folder_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    (tmp_path / "taken").mkdir()
    with pytest.raises(YoloPruneError, match="already exists"):
        make_digits(tmp_path / "taken", images=4, imgsz=64)
    monkeypatch.setattr("yoloprune.workflows.data._yaml_text", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        make_digits(tmp_path / "broken", images=4, imgsz=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no partial folder, no temp folder


def test_cli_data_digits(tmp_path, capsys):
    assert main(["data", "digits", "--out", str(tmp_path / "d"), "--images", "4", "--imgsz", "64"]) == 0
    assert (tmp_path / "d" / "data.yaml").is_file()
    assert "data.yaml" in capsys.readouterr().err  # "wrote DIR/data.yaml": a note, not a document
    assert main(["data", "digits", "--out", str(tmp_path / "d"), "--images", "4"]) == 2


def test_calibration_batches(digits):
    batches = list(calibration_batches(digits.yaml, imgsz=64, images=10, batch=4))
    assert [len(b["img"]) for b in batches] == [4, 4, 2]
    b = batches[0]
    assert b["img"].shape == (4, 3, 64, 64) and b["img"].min() >= 0 and b["img"].max() <= 1
    assert b["bboxes"].shape == (len(b["cls"]), 4) and b["batch_idx"].max() == 3
    assert ((b["bboxes"] > 0) & (b["bboxes"] <= 1)).all()


def test_calibration_errors(digits, tmp_path):
    with pytest.raises(YoloPruneError, match="no such dataset YAML"):
        next(calibration_batches(tmp_path / "missing.yaml"))
    copy = tmp_path / "copy"
    shutil.copytree(digits.yaml.parent, copy)
    shutil.rmtree(copy / "labels")
    with pytest.raises(YoloPruneError, match="no labelled boxes"):
        next(calibration_batches(copy / "data.yaml", imgsz=64))
    shutil.rmtree(copy / "images" / "train")
    with pytest.raises(YoloPruneError, match="cannot read the 'train' split"):
        next(calibration_batches(copy / "data.yaml", imgsz=64))
    with pytest.raises(YoloPruneError, match="classify"):
        next(calibration_batches(digits.yaml, task="classify"))
    with pytest.raises(YoloPruneError, match=r"for a segment model .*segment dataset"):
        next(calibration_batches(digits.yaml, task="segment", imgsz=64))  # boxes, no polygons
