"""A generated detection dataset for trying data-driven criteria and schedules: `make_digits`.

`make_digits` composes a small real-image detection dataset from scikit-learn's bundled UCI
handwritten digits (1,797 8x8 scans, no download): several digits per image at random scales and
positions on a noisy background, 10 classes, YOLO format with train/val splits and a dataset YAML.
Train and val scenes draw on disjoint digit scans, so val shows unseen handwriting.

Reading a dataset (any Ultralytics YAML) is the seam's job: yoloprune.yolo.dataset.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from yoloprune.errors import OptionError, YoloPruneError, unmarked

VAL_FRACTION = 0.2
_DIGITS_PER_IMAGE = (2, 5)  # inclusive range
_SCALE = (0.15, 0.4)  # digit side as a fraction of the image side


@dataclass(frozen=True)
class Generated:
    """A generated dataset: its YAML, and images and boxes per split."""

    yaml: Path
    images: dict[str, int]
    boxes: dict[str, int]


def make_digits(out: str | os.PathLike[str], images: int = 500, imgsz: int = 160, seed: int = 0) -> Generated:
    """Write the digits detection dataset (`images` in all, 20% val) to the new folder `out`.

    The same arguments always give the same files. The folder is written under a temporary name
    beside `out` and renamed into place, so `out` is either absent or complete.

    Example:
        >>> ds = make_digits("digits100", images=100, imgsz=160)
        >>> ds.yaml, ds.images
        (PosixPath('digits100/data.yaml'), {'train': 80, 'val': 20})
    """
    out = Path(out)
    if images < 2 or imgsz < 32:
        raise OptionError(
            f"`images={images}` `imgsz={imgsz}`: need 2 or more images (train and val) of 32 or more pixels."
        )
    if out.exists():
        raise OptionError(
            f"{unmarked(str(out))} already exists; remove it or choose another folder as `out`."
        )
    if not out.parent.is_dir():
        raise YoloPruneError(f"Cannot write {out}: directory {out.parent} does not exist; create it first.")
    glyphs, labels = _digit_scans()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(glyphs))
    n_val = max(1, round(images * VAL_FRACTION))
    pools = {"train": order[int(len(order) * VAL_FRACTION) :], "val": order[: int(len(order) * VAL_FRACTION)]}
    counts = {"train": images - n_val, "val": n_val}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        boxes = {}
        for split, n in counts.items():
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            boxes[split] = 0
            for i in range(n):
                image, rows = _scene(glyphs, labels, pools[split], imgsz, rng)
                cv2.imwrite(str(tmp / "images" / split / f"{i:05d}.png"), image)
                (tmp / "labels" / split / f"{i:05d}.txt").write_text("".join(rows))
                boxes[split] += len(rows)
        (tmp / "data.yaml").write_text(_yaml_text(images, imgsz, seed))
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Generated(out / "data.yaml", counts, boxes)


def _digit_scans() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's UCI digits as (1797, 8, 8) floats in [0, 1] and their (1797,) labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise YoloPruneError(
            "the digits dataset is made from scikit-learn's bundled digits; install it with "
            "`pip install yoloprune[activation]` (or `pip install scikit-learn`)."
        ) from e
    digits = load_digits()
    return digits.images / 16.0, digits.target


def _scene(
    glyphs: np.ndarray, labels: np.ndarray, pool: np.ndarray, imgsz: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """One (imgsz, imgsz, 3) uint8 image with non-overlapping digits, and its YOLO label rows."""
    background = rng.uniform(0, 90, 3) + rng.normal(0, 8, (imgsz, imgsz, 3))  # (H, W, 3)
    image = background.copy()
    taken: list[tuple[int, int, int, int]] = []
    rows = []
    for _ in range(rng.integers(_DIGITS_PER_IMAGE[0], _DIGITS_PER_IMAGE[1] + 1)):
        k = int(rng.choice(pool))
        side = int(rng.uniform(*_SCALE) * imgsz)
        alpha = np.clip(cv2.resize(glyphs[k], (side, side), interpolation=cv2.INTER_CUBIC), 0, 1)  # (s, s)
        ys, xs = np.nonzero(alpha > 0.25)
        if len(ys) == 0:
            continue
        for _try in range(20):
            x0, y0 = rng.integers(0, imgsz - side + 1, 2)
            box = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)  # x1, y1, x2, y2
            if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1] for t in taken):
                break
        else:
            continue
        colour = rng.uniform(150, 255, 3)
        patch = image[y0 : y0 + side, x0 : x0 + side]  # (s, s, 3) view
        patch[:] = patch * (1 - alpha[..., None]) + colour * alpha[..., None]
        taken.append(box)
        cx, cy = (box[0] + box[2]) / 2 / imgsz, (box[1] + box[3]) / 2 / imgsz
        w, h = (box[2] - box[0]) / imgsz, (box[3] - box[1]) / imgsz
        rows.append(f"{labels[k]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return np.clip(image, 0, 255).astype(np.uint8), rows


def _yaml_text(images: int, imgsz: int, seed: int) -> str:
    names = "\n".join(f"  {d}: '{d}'" for d in range(10))
    return (
        f"# yoloprune digits dataset: images={images}, imgsz={imgsz}, seed={seed}\n"
        "# Scenes composed from scikit-learn's UCI handwritten digits (load_digits).\n"
        "# Paths are relative to this file's folder.\n"
        f"train: images/train\nval: images/val\nnc: 10\nnames:\n{names}\n"
    )
