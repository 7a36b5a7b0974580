"""Sensitivity results and how they are shown: the curves (`Sensitivity`, measured by
`workflows.sensitivity.sensitivity`) as an aligned table, CSV and a plot, and a plan chosen from them
(`workflows.sensitivity.plan_for_target`) as text and as the plan JSON that `prune` replays.

Scope: plain data in, text, JSON and pictures out; nothing here measures or chooses.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yoloprune.pruning.options import PruneOptions
from yoloprune.pruning.plan import Plan
from yoloprune.reports.plots import pyplot, save_figure
from yoloprune.reports.tables import text_table
from yoloprune.yolo.api import Analysis

METRICS = {"loss": "validation loss", "map": "mAP50-95"}  # metric -> what is measured


@dataclass(frozen=True)
class Curve:
    """One group pruned alone at each ratio: the metric and the model's FLOPs."""

    group: int  # id in the model's ChannelGraph
    block: int  # the block its first producer lies in (model.<block>....)
    producer: str  # its first producing layer, e.g. model.2.cv1.conv
    channels: int
    ratios: tuple[float, ...]
    kept: tuple[int, ...]  # channels kept at each ratio
    values: tuple[float, ...]  # the metric at each ratio
    flops: tuple[int, ...]  # the whole model's FLOPs at each ratio at its training size (cost model)
    scores: tuple[float, ...] = field(default=(), repr=False)  # the criterion's score per channel class


@dataclass(frozen=True)
class Sensitivity:
    """Curves of every selected group, the unpruned model's metric and FLOPs, and how they were measured."""

    source: str
    data: str
    metric: str  # a key of METRICS
    baseline: float
    flops: int  # the unpruned model's, at `flops_imgsz`
    flops_imgsz: int
    imgsz: int  # the images the metric was measured on
    images: int  # val images the loss was measured on (mAP: the whole val split)
    importance: str
    curves: tuple[Curve, ...]
    scope: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()

    def damage(self, curve: Curve) -> np.ndarray:
        """The metric's change for the worse at each ratio (loss up, mAP down); negative = better."""
        values = np.asarray(curve.values, dtype=float)
        return values - self.baseline if self.metric == "loss" else self.baseline - values

    def to_csv(self) -> str:
        """One row per group and ratio."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(
            ["group", "block", "producer", "channels", "ratio", "kept", self.metric, "damage", "flops"]
        )
        for c in self.curves:
            for r, k, v, d, f in zip(c.ratios, c.kept, c.values, self.damage(c), c.flops, strict=True):
                w.writerow([c.group, c.block, c.producer, c.channels, r, k, f"{v:.6g}", f"{d:.6g}", f])
        return out.getvalue()

    def to_text(self) -> str:
        """An aligned table: one row per group, the damage at each ratio."""
        ratios = self.curves[0].ratios if self.curves else ()
        head = ["block", "group", "producer", "channels", *(f"{r:g}" for r in ratios)]
        rows = [
            [c.block, c.group, c.producer, c.channels, *(f"{d:+.4g}" for d in self.damage(c))]
            for c in self.curves
        ]
        worse = "higher" if self.metric == "loss" else "lower"
        on = f"{self.images} val images" if self.metric == "loss" else "the val split"
        title = (
            f"Sensitivity of {self.source}: {METRICS[self.metric]} on {on} of {self.data} at "
            f"{self.imgsz}x{self.imgsz}, baseline {self.baseline:.5g}.\nEach row prunes one group alone by "
            f"the ratio heading its column ({self.importance} ranking); cells are the change for the worse "
            f"({worse} {METRICS[self.metric]}), negative where it improved."
        )
        return f"{title}\n\n{text_table(head, rows, right=tuple(range(3, len(head))))}\n"

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """One panel per block: the metric against the ratio for each of its groups; written atomically."""
        plt = pyplot()
        blocks = sorted({c.block for c in self.curves})
        cols = min(4, len(blocks))
        rows = -(-len(blocks) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
        for ax, block in zip(axes.flat, blocks, strict=False):
            for c in (c for c in self.curves if c.block == block):
                ax.plot([0, *c.ratios], [self.baseline, *c.values], "o-", ms=3, label=c.producer)
            ax.axhline(self.baseline, color="grey", lw=0.8, ls="--")
            ax.set_title(f"block {block}", fontsize=9)
            ax.legend(fontsize=6)
            ax.grid(alpha=0.3)
        for ax in axes.flat[len(blocks) :]:
            ax.axis("off")
        for ax in axes[:, 0]:
            ax.set_ylabel(METRICS[self.metric], fontsize=8)
        for ax in axes[-1]:
            ax.set_xlabel("ratio pruned", fontsize=8)
        fig.suptitle(f"Sensitivity of {self.source} ({self.importance} ranking)", fontsize=10)
        fig.tight_layout()
        return save_figure(fig, path)


def plan_json(s: Sensitivity, plan: Plan, round_to: int | str = 1, min_channels: int = 1) -> str:
    """`plan` as the plan JSON that `prune` replays, recording the options and how it was made."""
    options = PruneOptions(
        target_flops=plan.budget.target if plan.budget else None,
        importance=s.importance,
        round_to=round_to,
        layers=s.scope,
        exclude=s.exclude,
        max_ratio=max(c.ratios[-1] for c in s.curves),
        min_channels=min_channels,
    )
    made = {"data": s.data, "metric": s.metric, "images": s.images, "imgsz": s.imgsz}
    return plan.to_json(s.source, options, sensitivity={**made, "ratios": list(s.curves[0].ratios)})


def removed_per_group(s: Sensitivity, plan: Plan, analysis: Analysis) -> list[tuple[Curve, int]]:
    """Each measured group with the channels `plan` removes from it."""
    return [(c, len(plan.removed.intersection(analysis.graph.groups[c.group].classes))) for c in s.curves]


def render_plan(s: Sensitivity, plan: Plan, analysis: Analysis) -> str:
    """What `plan` reached and the ratio it gives each measured group, as aligned text."""
    b = plan.budget  # set by plan_for_target
    head = (
        f"Per-group ratios, least damage per FLOP saved first: {b.reached:.3f} of the FLOPs kept (target "
        f"{b.target:g}; the cost model estimated {b.estimate:.3f})"
    )
    rows = [
        (c.block, c.producer, c.channels, n, f"{n / c.channels:.2f}")
        for c, n in removed_per_group(s, plan, analysis)
    ]
    return (
        f"{head}\n\n{text_table(('block', 'group', 'channels', 'removed', 'ratio'), rows, right=(2, 3, 4))}\n"
    )
