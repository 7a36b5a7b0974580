"""Reading an Ultralytics dataset YAML with Ultralytics' own dataset builder (letterboxed, no
augmentation, offline): one split as a dataset, or as loss-ready calibration batches."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from yoloprune.errors import OptionError, YoloPruneError, unmarked
from yoloprune.yolo.quiet import quiet

_TASKS = ("detect", "segment", "pose", "obb")


def calibration_batches(
    data_yaml: str | os.PathLike[str],
    task: str = "detect",
    imgsz: int = 640,
    images: int = 64,
    batch: int = 8,
    split: str = "train",
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield `images` images of a dataset's `split`, evenly spaced through it, as loss-ready batches.

    Batches are what Ultralytics' trainer hands the loss: `img` (B, 3, imgsz, imgsz) floats in
    [0, 1], and `cls` (N, 1), `bboxes` (N, 4) normalised xywh, `batch_idx` (N,) (plus masks or
    keypoints for those tasks). Images are letterboxed, not augmented.

    Example:
        >>> b = next(calibration_batches("digits/data.yaml", imgsz=160, images=8))
        >>> b["img"].shape
        torch.Size([8, 3, 160, 160])
    """
    dataset = yolo_dataset(data_yaml, task, imgsz, batch, split)
    n = min(images, len(dataset))
    picks = np.unique(np.linspace(0, len(dataset) - 1, n).round().astype(int))
    for start in range(0, len(picks), batch):
        out = dataset.collate_fn([dataset[int(i)] for i in picks[start : start + batch]])
        out["img"] = out["img"].float() / 255
        yield out


def yolo_dataset(data_yaml: str | os.PathLike[str], task: str, imgsz: int, batch: int, split: str):
    """Ultralytics' YOLODataset for one split of `data_yaml`, with user-actionable errors."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import DEFAULT_CFG

    path = Path(data_yaml)
    if task not in _TASKS:
        raise YoloPruneError(f"calibration data is for {', '.join(_TASKS)} models; this is a {task} model.")
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        raise OptionError(
            f"`data={unmarked(str(path))!r}`: no such dataset YAML. Pass an Ultralytics dataset YAML "
            "(train:, val:, names:), e.g. the digits dataset yoloprune generates (digits/data.yaml)."
        )
    try:
        with quiet():
            data = check_det_dataset(str(path), autodownload=False, split=split)
            cfg = get_cfg(DEFAULT_CFG, {"imgsz": imgsz, "task": task, "batch": batch})
            dataset = build_yolo_dataset(cfg, data[split], batch, data, mode="val")
    except (FileNotFoundError, SyntaxError, TypeError, KeyError, ValueError) as e:
        reason = unmarked(" ".join(str(e).split()))
        raise OptionError(
            f"`data={unmarked(str(path))!r}`: Ultralytics cannot read the {split!r} split for a {task} "
            f"model ({reason}). "
            f"Check the YAML's {split}: entry, that the images exist and that the labels suit the task; "
            "yoloprune never downloads datasets."
        ) from e
    if len(dataset) == 0 or not any(len(label["cls"]) for label in dataset.labels):
        raise OptionError(
            f"`data={unmarked(str(path))!r}`: the {split!r} split has no labelled boxes (labels/*.txt "
            "beside images/), so "
            "there is nothing to calibrate on. Check that every image has a label file in YOLO format."
        )
    return dataset
