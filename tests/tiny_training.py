"""A tiny trained baseline for the fine-tuning and schedule tests: yolov8n trained by Ultralytics for
one epoch on 12 generated digit scenes at 64x64 (a few seconds on 2 CPU cores).

Its mAP is ~0: the tests check shapes, files, resumption and refusals, not accuracy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ultralytics import YOLO

from yoloprune.workflows.data import make_digits

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


def relabelled(data: Path, out: Path, task: str = "detect", classes: int = 3, keypoints: int = 17) -> Path:
    """A copy of the digits dataset `data` in `out` with `classes` classes (digit % classes, named
    "c0", "c1", ...), labelled for `task`: boxes; for segment, each box as a polygon; for pose,
    `keypoints` keypoints (17 by default: COCO's count, what the pose YAMLs predict) along its
    diagonal. Returns its YAML."""
    shutil.copytree(data.parent / "images", out / "images")
    for label in (data.parent / "labels").rglob("*.txt"):
        rows = []
        for row in label.read_text().splitlines():
            digit, cx, cy, w, h = (float(v) for v in row.split())
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            extra = []
            if task == "segment":  # the polygon first, then Ultralytics derives the box from it
                rows.append(f"{int(digit) % classes} {x1} {y1} {x2} {y1} {x2} {y2} {x1} {y2}")
                continue
            if task == "pose":
                extra = [f"{x1 + w * k / 16} {y1 + h * k / 16} 2" for k in range(keypoints)]
            rows.append(" ".join([str(int(digit) % classes), str(cx), str(cy), str(w), str(h), *extra]))
        target = out / "labels" / label.relative_to(data.parent / "labels")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(rows) + "\n")
    names = "".join(f"  {k}: c{k}\n" for k in range(classes))
    kpt = f"kpt_shape: [{keypoints}, 3]\n" if task == "pose" else ""
    (out / "data.yaml").write_text(f"path: {out}\ntrain: images/train\nval: images/val\n{kpt}names:\n{names}")
    return out / "data.yaml"
