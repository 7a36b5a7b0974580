"""A run's history: one row per completed step, written as JSON, CSV, a text table and a plot.

A row is plain data: `step`, `kind` ("baseline", "prune", "finetune"), `what`, `epochs`, `params`,
`flops` (at `imgsz`), `map50_95`, `map50`, `precision`, `recall`, `accepted` (False when a pruning
step fell more than `max_drop` below the baseline, or a fine-tune-only step lowered its input's
mAP50-95), `checkpoint` (relative to the run folder), `seconds`, and `widths` (output channels of
every conv; JSON only). history.json also holds the recipe and, once the run has finished, its
`outcome`: `result` (final.pt's step checkpoint), `target_reached` and `stopped` (why not).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yoloprune.atomic import atomic_write
from yoloprune.errors import YoloPruneError
from yoloprune.reports.plots import pyplot
from yoloprune.reports.tables import text_table

CSV_COLUMNS = (
    "step",
    "kind",
    "what",
    "epochs",
    "params",
    "flops",
    "imgsz",
    "map50_95",
    "map50",
    "precision",
    "recall",
    "accepted",
    "checkpoint",
    "seconds",
)
# Why a step of each kind is not kept (its row's `accepted` is False), for the table's legend.
NOT_KEPT = {
    "prune": "fell more than max_drop below the baseline's mAP50-95, so pruning stopped there",
    "finetune": "lowered its input's mAP50-95",
}


def write_history(
    folder: Path,
    rows: Sequence[dict[str, Any]],
    recipe: dict[str, Any],
    outcome: dict[str, Any] | None = None,
) -> list[Path]:
    """Write history.json, history.csv and (with matplotlib) history.png into `folder`, atomically;
    `outcome` (of a finished run) goes into history.json.

    Example:
        >>> write_history(Path("run"), state["steps"], recipe.as_dict())  # doctest: +SKIP
        [PosixPath('run/history.json'), PosixPath('run/history.csv'), PosixPath('run/history.png')]
    """
    doc = json.dumps({"recipe": recipe, "steps": list(rows), "outcome": outcome}, indent=1)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    written = [
        atomic_write(folder / "history.json", lambda tmp: tmp.write_text(doc, encoding="utf-8")),
        atomic_write(folder / "history.csv", lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8")),
    ]
    plot = _plot(rows, f"{recipe['schedule']} schedule")
    if plot is not None:
        written.append(atomic_write(folder / "history.png", lambda tmp: tmp.write_bytes(plot)))
    return written


def _plot(rows: Sequence[dict[str, Any]], title: str) -> bytes | None:
    """mAP50-95 and mAP50 against GFLOPs, one point per step, labelled with its number (PNG bytes)."""
    try:
        plt = pyplot()
    except YoloPruneError:  # no matplotlib: the history goes without its plot
        return None
    gflops = [r["flops"] / 1e9 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key, label in (("map50_95", "mAP50-95"), ("map50", "mAP50")):
        ax.plot(gflops, [r[key] for r in rows], marker="o", label=label)
    labels: dict[tuple[float, float], list[str]] = {}  # steps at the same point share one label
    for r, x in zip(rows, gflops, strict=True):
        labels.setdefault((x, r["map50_95"]), []).append(str(r["step"]))
    for point, steps in labels.items():
        ax.annotate(",".join(steps), point, textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"GFLOPs at {rows[0]['imgsz']}x{rows[0]['imgsz']}")
    ax.set_ylabel("mAP (val)")
    ax.set_title(f"{title}: mAP against FLOPs (point labels: step)")
    ax.grid(alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def render_history(rows: Sequence[dict[str, Any]]) -> str:
    """The history as an aligned text table, steps that were not kept marked `*` and explained in a
    legend line under the table.

    Example:
        >>> print(render_history(json.loads(Path("run/history.json").read_text())["steps"]))  # doctest: +SKIP
        step  what      epochs     params  GFLOPs  mAP50-95  mAP50      P      R
        ...
        * not kept: step 2 fell more than max_drop below the baseline's mAP50-95 ...
    """
    body = [
        (
            f"{r['step']}{'' if r['accepted'] else '*'}",
            r["what"],
            r["epochs"],
            f"{r['params']:,}",
            f"{r['flops'] / 1e9:.3g}",
            f"{r['map50_95']:.3f}",
            f"{r['map50']:.3f}",
            f"{r['precision']:.3f}",
            f"{r['recall']:.3f}",
        )
        for r in rows
    ]
    headers = ("step", "what", "epochs", "params", "GFLOPs", "mAP50-95", "mAP50", "P", "R")
    table = text_table(headers, body, right=(0, 2, 3, 4, 5, 6, 7, 8))
    why = [f"step {r['step']} {NOT_KEPT[r['kind']]}" for r in rows if not r["accepted"]]
    if not why:
        return table
    return f"{table}\n* not kept: {'; '.join(why)}. final.pt is the last step without *."
