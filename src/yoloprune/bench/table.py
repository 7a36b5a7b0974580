"""Models side by side: size, cost, latency and accuracy, each with its ratio to the first model, as
Markdown, JSON and a plot (latency and mAP against FLOPs).

Scope: plain data in, text and pictures out; the numbers are measured by `yolo.evaluate.bench`.
A ratio is this model's value over the first model's (0.50x: half the FLOPs, or half the time).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoloprune._atomic import atomic_write
from yoloprune.bench.latency import Timing
from yoloprune.errors import YoloPruneError

LATENCIES = {  # JSON key -> column title
    "ort_cpu_1_thread": "ORT CPU 1 thread",
    "ort_cpu_all_threads": "ORT CPU all threads",
    "tensorrt_fp16": "TensorRT FP16",
}


ACCURACY_TITLES = {"map50_95": "mAP50-95", "map50": "mAP50", "precision": "P", "recall": "R"}


@dataclass(frozen=True)
class Measurement:
    """One model: size and FLOPs at the benchmark's image size, latencies, and accuracy if measured."""

    name: str
    params: int
    flops: int
    checkpoint_bytes: int  # float32 checkpoint as yoloprune saves it (the same precision for every model)
    onnx_bytes: int
    latency: dict[str, Timing | None]  # LATENCIES key -> timing; None where not measured
    accuracy: dict[str, float] | None = None  # ACCURACY_TITLES key -> box metric in [0, 1]

    def values(self) -> dict[str, float | None]:
        """Every number that gets a ratio, by JSON key."""
        out: dict[str, float | None] = {
            "params": self.params,
            "flops": self.flops,
            "checkpoint_bytes": self.checkpoint_bytes,
            "onnx_bytes": self.onnx_bytes,
        }
        out.update({k: t.median_ms if t else None for k, t in self.latency.items()})
        out.update(self.accuracy or {})
        return out


@dataclass(frozen=True)
class Bench:
    """Measurements of several models under the same settings; ratios are against `rows[0]`."""

    rows: tuple[Measurement, ...]
    settings: dict[str, Any] = field(default_factory=dict)  # imgsz, runs, warm-up, load, versions, ...
    notes: dict[str, str] = field(default_factory=dict)  # LATENCIES key -> why it has no numbers

    def ratios(self, row: Measurement) -> dict[str, float | None]:
        """`row`'s value over the first model's, per JSON key (None where either is missing or 0)."""
        first = self.rows[0].values()
        return {
            k: (v / first[k] if v is not None and first.get(k) else None) for k, v in row.values().items()
        }

    def to_json(self) -> str:
        models = []
        for row in self.rows:
            doc = {
                "name": row.name,
                "params": row.params,
                "flops": row.flops,
                "checkpoint_bytes": row.checkpoint_bytes,
                "onnx_bytes": row.onnx_bytes,
                "latency_ms": {
                    k: t.as_json() if t else self.notes.get(k, "n/a") for k, t in row.latency.items()
                },
                "accuracy": row.accuracy,
                "ratios": {k: None if v is None else round(v, 4) for k, v in self.ratios(row).items()},
            }
            models.append(doc)
        return json.dumps({"settings": self.settings, "models": models}, indent=1)

    def to_markdown(self) -> str:
        has_accuracy = any(r.accuracy for r in self.rows)
        titles = ["model", "params", "GFLOPs", "checkpoint MB", "ONNX MB"]
        titles += [f"{t} ms" for t in LATENCIES.values()]
        titles += list(ACCURACY_TITLES.values()) if has_accuracy else []
        lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
        for i, row in enumerate(self.rows):
            ratio = self.ratios(row)

            def cell(key: str, text: str, ratio: dict = ratio, i: int = i) -> str:
                r = ratio.get(key)
                return f"{text} ({r:.2f}x)" if i and r is not None else text

            cells = [
                f"`{row.name}`",
                cell("params", f"{row.params / 1e6:.2f} M"),
                cell("flops", f"{row.flops / 1e9:.2f}"),
                cell("checkpoint_bytes", f"{row.checkpoint_bytes / 1e6:.1f}"),
                cell("onnx_bytes", f"{row.onnx_bytes / 1e6:.1f}"),
            ]
            for key in LATENCIES:
                t = row.latency.get(key)
                cells.append(cell(key, f"{t.median_ms:.1f}") if t else self.notes.get(key, "n/a"))
            if has_accuracy:
                acc = row.accuracy or {}
                cells += [cell(k, f"{acc[k]:.3f}") if k in acc else "n/a" for k in ACCURACY_TITLES]
            lines.append("| " + " | ".join(cells) + " |")
        first = self.rows[0].name
        lines += ["", f"Ratios (0.50x) are each model's value over `{first}`'s (the first row)."]
        if self.settings.get("summary"):
            lines.append(str(self.settings["summary"]))
        return "\n".join(lines) + "\n"

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Latency (and mAP, when measured) against GFLOPs, one point per model, written atomically."""
        plt = pyplot()
        series = [("latency, ms (median, batch 1)", {t: self._points(k) for k, t in LATENCIES.items()})]
        if any(r.accuracy for r in self.rows):
            series.append(
                ("accuracy", {t: self._points(k) for k, t in ACCURACY_TITLES.items() if "map" in k})
            )
        fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 4.5), squeeze=False)
        for ax, (ylabel, lines) in zip(axes[0], series, strict=True):
            for title, points in lines.items():
                if points:
                    ax.plot([x for x, _, _ in points], [y for _, y, _ in points], "o-", label=title)
            for x, y, name in next((pts for pts in lines.values() if pts), []):
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set(xlabel="GFLOPs", ylabel=ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        return save_figure(fig, path)

    def _points(self, key: str) -> list[tuple[float, float, str]]:
        """(GFLOPs, value, model file name) of every model that has a value for `key`."""
        points = [
            (r.flops / 1e9, v, Path(r.name).name) for r in self.rows if (v := r.values().get(key)) is not None
        ]
        return sorted(points, key=lambda point: point[0])


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise YoloPruneError(
            "plots need matplotlib; install it with `pip install matplotlib` (or `yoloprune[bench]`)."
        ) from e
    return plt


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib figure atomically in the format its suffix names (.png, .svg, .pdf); close it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    write: Callable[[Path], object] = lambda tmp: fig.savefig(tmp, format=fmt, dpi=120)  # noqa: E731
    try:
        return atomic_write(path, write)
    finally:
        pyplot().close(fig)
