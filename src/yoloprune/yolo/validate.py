"""The validator seam: box metrics of a checkpoint on a dataset's val split, by Ultralytics' validator,
and the same metrics read from what Ultralytics' trainer recorded."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ultralytics import YOLO

from yoloprune.errors import YoloPruneError
from yoloprune.yolo.quiet import quiet


@dataclass(frozen=True)
class Metrics:
    """Box metrics on a validation split (fractions in [0, 1])."""

    map50_95: float
    map50: float
    precision: float
    recall: float

    @classmethod
    def from_results(cls, results: dict[str, float]) -> Metrics:
        """From Ultralytics' `results_dict` / `train_metrics` (the `(B)` box keys)."""
        try:
            keys = ("mAP50-95", "mAP50", "precision", "recall")
            return cls(*(float(results[f"metrics/{k}(B)"]) for k in keys))
        except KeyError as e:
            raise YoloPruneError(f"Ultralytics reported no box metric {e}; got {sorted(results)}.") from e


def evaluate(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    imgsz: int,
    batch: int = 16,
    device: str | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> Metrics:
    """Validate `checkpoint` on the val split of `data` with Ultralytics' validator (no plots).

    Example:
        >>> 0 <= evaluate("best.pt", "digits/data.yaml", imgsz=64).map50_95 <= 1
        True
    """
    with tempfile.TemporaryDirectory(prefix="yoloprune-val-") as tmp, quiet():
        results = YOLO(str(Path(checkpoint).resolve())).val(
            data=str(data),
            imgsz=imgsz,
            batch=batch,
            device=device,
            plots=False,
            verbose=False,
            project=str(workdir or tmp),
            name="val",
            exist_ok=True,
        )
    return Metrics.from_results(results.results_dict)
