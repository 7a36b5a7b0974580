"""Models side by side: size, cost, latency and accuracy, each with its ratio to the first model, as
Markdown, JSON and a plot (latency and mAP against FLOPs); and the gains table of a comparison
(accuracy, speed-up, FLOPs reduction, sparsity against the first model) with its plot.

Scope: plain data in, text and pictures out; the numbers are measured by `yolo.evaluate.bench`.
A ratio is this model's value over the first model's (0.50x: half the FLOPs, or half the time);
a gain is the other way round (2.00x: half the FLOPs, or twice as fast).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoloprune.reports.plots import pyplot, save_figure
from yoloprune.reports.tables import markdown_table
from yoloprune.runtimes import export_title
from yoloprune.timing import Timing

LATENCIES = {  # JSON key -> column title
    "ort_cpu_1_thread": "ORT CPU 1 thread",
    "ort_cpu_all_threads": "ORT CPU all threads",
    "tensorrt_fp16": "TensorRT FP16",
}


ACCURACY_TITLES = {"map50_95": "mAP50-95", "map50": "mAP50", "precision": "P", "recall": "R"}
DEPLOYED_METRICS = ("map50_95", "map50")  # the table's columns per exported file (JSON has all four)

GAIN_TITLES = {"speed_up": "speed-up", "flops_reduction": "FLOPs reduction", "sparsity": "sparsity"}
SPEED_KEY = "ort_cpu_1_thread"  # the latency a gains table reports and its speed-up is measured on


@dataclass(frozen=True)
class Export:
    """One model's file for a runtime and precision, and its accuracy there if measured."""

    bytes: int
    accuracy: dict[str, float] | None = None  # ACCURACY_TITLES key -> box metric in [0, 1]


@dataclass(frozen=True)
class Measurement:
    """One model: size and FLOPs at the benchmark's image size, latencies, and accuracy if measured."""

    name: str
    params: int
    flops: int
    checkpoint_bytes: int  # float32 checkpoint as yoloprune saves it (the same precision for every model)
    onnx_bytes: int | None  # None where no ONNX file was needed (another runtime)
    latency: dict[str, Timing | None]  # latency key (`Bench.titles`) -> timing; None where not measured
    accuracy: dict[str, float] | None = None  # ACCURACY_TITLES key -> box metric of the checkpoint
    exports: dict[str, Export] = field(default_factory=dict)  # `runtimes.Setting.export` key -> file

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
        for k, e in self.exports.items():
            out[f"{k}_bytes"] = e.bytes
            out.update({f"{k}_{metric}": v for metric, v in (e.accuracy or {}).items()})
        return out


@dataclass(frozen=True)
class Bench:
    """Measurements of several models under the same settings; ratios are against `rows[0]`."""

    rows: tuple[Measurement, ...]
    settings: dict[str, Any] = field(default_factory=dict)  # imgsz, runs, warm-up, load, versions, ...
    notes: dict[str, str] = field(default_factory=dict)  # latency key -> why it has no numbers
    titles: dict[str, str] = field(default_factory=lambda: dict(LATENCIES))  # latency key -> column title

    def ratios(self, row: Measurement) -> dict[str, float | None]:
        """`row`'s value over the first model's, per JSON key (None where either is missing or 0)."""
        first = self.rows[0].values()
        return {
            k: (v / first[k] if v is not None and first.get(k) else None) for k, v in row.values().items()
        }

    def gains(self, row: Measurement) -> dict[str, float | None]:
        """What `row` gains over the first model, per GAIN_TITLES key: `speed_up` (the first's latency
        over this one's, ONNX Runtime CPU 1 thread), `flops_reduction` (the first's FLOPs over this
        one's) and `sparsity` (the fraction of the first's params removed); None where not measured.

        Example:
            >>> b.gains(b.rows[1])  # doctest: +SKIP
            {'speed_up': 1.83, 'flops_reduction': 2.0, 'sparsity': 0.74}
        """
        ratio = self.ratios(row)
        speed, flops, params = ratio.get(SPEED_KEY), ratio["flops"], ratio["params"]
        return {
            "speed_up": 1 / speed if speed else None,
            "flops_reduction": 1 / flops if flops else None,
            "sparsity": None if params is None else 1 - params,
        }

    def gains_markdown(self, labels: Sequence[str], title: str = "model") -> str:
        """One row per model, named by `labels` under the column `title`: accuracy, 1-thread latency,
        speed-up, FLOPs reduction, params and sparsity against the first model, with a legend."""
        speed, flops, sparsity = GAIN_TITLES.values()
        titles = [
            title,
            *ACCURACY_TITLES.values(),
            f"{LATENCIES[SPEED_KEY]} ms",
            speed,
            flops,
            "params",
            sparsity,
        ]
        rows = []
        for label, row in zip(labels, self.rows, strict=True):
            acc, gain, t = row.accuracy or {}, self.gains(row), row.latency.get(SPEED_KEY)
            times = {
                k: "n/a" if gain[k] is None else f"{gain[k]:.2f}x" for k in ("speed_up", "flops_reduction")
            }
            rows.append(
                [
                    label,
                    *(f"{acc[k]:.3f}" if k in acc else "n/a" for k in ACCURACY_TITLES),
                    f"{t.median_ms:.1f}" if t else self.notes.get(SPEED_KEY, "n/a"),
                    *times.values(),
                    f"{row.params / 1e6:.2f} M",
                    f"{gain['sparsity']:.1%}",
                ]
            )
        first = labels[0]
        legend = (
            f"Speed-up: {first}'s latency over the model's; FLOPs reduction: {first}'s FLOPs over the "
            f"model's; sparsity: the fraction of {first}'s params removed."
        )
        return "\n".join([markdown_table(titles, rows), "", legend]) + "\n"

    def plot_gains(self, path: str | os.PathLike[str], labels: Sequence[str]) -> Path:
        """mAP50-95 against speed-up (one point per model, named by `labels`), and bars of accuracy and
        of the gains per model, written atomically."""
        plt = pyplot()
        gains = [self.gains(r) for r in self.rows]
        accuracy = [r.accuracy or {} for r in self.rows]
        panels = 3 if any(accuracy) else 1
        fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.2), squeeze=False)
        if panels == 3:
            ax = axes[0][0]
            for label, g, acc in zip(labels, gains, accuracy, strict=True):
                if g["speed_up"] is not None and "map50_95" in acc:
                    ax.scatter(g["speed_up"], acc["map50_95"])
                    ax.annotate(
                        label,
                        (g["speed_up"], acc["map50_95"]),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=8,
                    )
            ax.set(
                xlabel=f"speed-up ({LATENCIES[SPEED_KEY]})", ylabel="mAP50-95", title="accuracy against speed"
            )
            _bars(
                axes[0][1],
                labels,
                {t: [a.get(k) for a in accuracy] for k, t in ACCURACY_TITLES.items() if "map" in k},
                "mAP (val)",
            )
        _bars(
            axes[0][-1],
            labels,
            {GAIN_TITLES[k]: [g[k] for g in gains] for k in ("speed_up", "flops_reduction")},
            "times",
        )
        axes[0][-1].axhline(1, color="gray", linewidth=0.8)
        axes[0][-1].set_title(f"gains over {labels[0]}")
        if panels == 3:
            axes[0][1].set_title("accuracy")
        fig.tight_layout()
        return save_figure(fig, path)

    def as_dict(self) -> dict[str, Any]:
        """Settings and every model's numbers with their ratios, as plain data (what `to_json` writes)."""
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
                "exports": {k: {"bytes": e.bytes, "accuracy": e.accuracy} for k, e in row.exports.items()},
                "ratios": {k: None if v is None else round(v, 4) for k, v in self.ratios(row).items()},
            }
            models.append(doc)
        return {"settings": self.settings, "models": models}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)

    def _exports(self) -> tuple[list[str], list[str]]:
        """Export keys with a size column (ONNX Runtime's file is the ONNX column), and those scored."""
        keys = list(dict.fromkeys(k for r in self.rows for k in r.exports))
        scored = [k for k in keys if any(r.exports.get(k, Export(0)).accuracy for r in self.rows)]
        return [k for k in keys if not k.startswith("ort_")], scored

    def to_markdown(self) -> str:
        has_accuracy = any(r.accuracy for r in self.rows)
        has_onnx = any(r.onnx_bytes is not None for r in self.rows)
        sized, scored = self._exports()
        titles = ["model", "params", "GFLOPs", "checkpoint MB", *(["ONNX MB"] if has_onnx else [])]
        titles += [f"{export_title(k)} MB" for k in sized]
        titles += [f"{t} ms" for t in self.titles.values()]
        titles += list(ACCURACY_TITLES.values()) if has_accuracy else []
        titles += [f"{export_title(k)} {ACCURACY_TITLES[m]}" for k in scored for m in DEPLOYED_METRICS]
        rows = []
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
            ]
            if has_onnx:
                cells.append(cell("onnx_bytes", f"{row.onnx_bytes / 1e6:.1f}") if row.onnx_bytes else "n/a")
            cells += [
                cell(f"{k}_bytes", f"{row.exports[k].bytes / 1e6:.1f}") if k in row.exports else "n/a"
                for k in sized
            ]
            for key in self.titles:
                t = row.latency.get(key)
                cells.append(cell(key, f"{t.median_ms:.1f}") if t else self.notes.get(key, "n/a"))
            if has_accuracy:
                acc = row.accuracy or {}
                cells += [cell(k, f"{acc[k]:.3f}") if k in acc else "n/a" for k in ACCURACY_TITLES]
            values = row.values()
            for key in (f"{k}_{m}" for k in scored for m in DEPLOYED_METRICS):
                cells.append(cell(key, f"{values[key]:.3f}") if values.get(key) is not None else "n/a")
            rows.append(cells)
        lines = [markdown_table(titles, rows)]
        first = self.rows[0].name
        lines += ["", f"Ratios (0.50x) are each model's value over `{first}`'s (the first row)."]
        if self.settings.get("summary"):
            lines.append(str(self.settings["summary"]))
        return "\n".join(lines) + "\n"

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Latency (and mAP, when measured) against GFLOPs, one point per model, written atomically."""
        plt = pyplot()
        series = [("latency, ms (median, batch 1)", {t: self._points(k) for k, t in self.titles.items()})]
        accuracy = {t: self._points(k) for k, t in ACCURACY_TITLES.items() if "map" in k}
        for k in self._exports()[1]:
            accuracy.update(
                {
                    f"{export_title(k)} {ACCURACY_TITLES[m]}": self._points(f"{k}_{m}")
                    for m in DEPLOYED_METRICS
                }
            )
        if any(accuracy.values()):
            series.append(("accuracy", accuracy))
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


def _bars(ax: Any, labels: Sequence[str], series: dict[str, list[float | None]], ylabel: str) -> None:
    """Grouped bars: one group per label, one bar per series (missing values left out)."""
    width = 0.8 / len(series)
    for j, (name, values) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(
            [x for x, v in zip(xs, values, strict=True) if v is not None],
            [v for v in values if v is not None],
            width,
            label=name,
        )
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
