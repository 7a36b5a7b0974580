"""A tiny trained baseline for the fine-tuning and schedule tests: yolov8n trained by Ultralytics for
one epoch on 12 generated digit scenes at 64x64 (a few seconds on 2 CPU cores).

Its mAP is ~0: the tests check shapes, files, resumption and refusals, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

from ultralytics import YOLO

from yoloprune.yolo.data import make_digits

# Ultralytics training arguments for every fine-tune in the tests.
TRAIN = {"imgsz": 64, "batch": 4, "device": "cpu", "workers": 0}


def train_baseline(folder: Path) -> tuple[Path, Path]:
    """(best.pt, data.yaml) of a freshly trained tiny baseline in `folder`."""
    data = make_digits(folder / "digits", images=12, imgsz=64).yaml
    model = YOLO("yolov8n.yaml")
    model.train(
        data=str(data), epochs=1, project=str(folder), name="baseline", plots=False, verbose=False, **TRAIN
    )
    return folder / "baseline" / "weights" / "best.pt", data
