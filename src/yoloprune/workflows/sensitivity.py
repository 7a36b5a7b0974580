"""Sensitivity: what each prunable group costs in accuracy when it alone loses channels, and per-group
ratios that meet a FLOPs target at the least total cost.

Scope: for every selected group and ratio, a copy of the model with only that group pruned (its
least important channels by `importance`, the ones `prune` would remove) is scored by a metric,
the validation loss (`ValLoss`, fast, the default) or mAP50-95 (Ultralytics validation), and its
FLOPs at the model's training size are estimated by the cost model `prune --target-flops` searches
on (exact for convolutions). `plan_for_target` reads the curves as "damage"
(the metric's change for the worse) against FLOPs saved: it keeps each group's lower convex hull,
takes hull segments in order of least damage per FLOP saved (ties: the lower ratios of every group
first, so equal curves give equal ratios), part of the last one, and searches how far to go with
`meet_target`, the same search and 2% check `prune --target-flops` uses; the result is a plan
`prune --plan-in` replays.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.graph.groups import Group
from yoloprune.importance import CRITERIA, NEEDS, Context, Ranking
from yoloprune.progress import Progress
from yoloprune.pruning.allocate import (
    TOLERANCE,
    Allocator,
    CostModel,
    Limits,
    Metric,
    fraction_of,
    meet_target,
)
from yoloprune.pruning.allocate import measurer as flops_measurer
from yoloprune.pruning.apply import apply_plan
from yoloprune.pruning.choose import select_groups
from yoloprune.pruning.options import PruneOptions, resolve_round_to
from yoloprune.pruning.plan import Plan, plan_from_removed
from yoloprune.reports.plots import pyplot, save_figure
from yoloprune.reports.tables import text_table
from yoloprune.text import plural
from yoloprune.workflows.evaluate import ValLoss, accuracy
from yoloprune.yolo.adapter import ULTRALYTICS
from yoloprune.yolo.api import Analysis, analyze, imgsz_of, scope_of
from yoloprune.yolo.calibrate import evidence_for

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
METRICS = {"loss": "validation loss", "map": "mAP50-95"}  # --metric -> what is measured


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


def _block_of(path: str) -> int:
    parts = path.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "model" and parts[1].isdigit() else -1


def _rankings(
    a: Analysis, groups: list[Group], importance: str, data: object, images: int, imgsz: int
) -> list:
    evidence = evidence_for(
        a.model, a.graph, importance, data if NEEDS.get(importance) else None, groups, images, imgsz
    )
    ctx = Context(a.model, a.graph, np.random.default_rng(0), evidence)
    ranked = []
    for g in groups:
        r = CRITERIA[importance](ctx, g)
        ranked.append((g, r if isinstance(r, Ranking) else Ranking(np.asarray(r))))
    return ranked


def sensitivity(
    source: object,
    data: str | os.PathLike[str],
    *,
    blocks: Iterable[int] | None = None,
    layers: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    ratios: Sequence[float] = DEFAULT_RATIOS,
    metric: str = "loss",
    importance: str = "l1",
    images: int = 32,
    imgsz: int | None = None,
    batch: int = 8,
    analysis: Analysis | None = None,
    progress: bool = True,
) -> Sensitivity:
    """Prune each selected prunable group alone at each of `ratios` and measure `metric` on `data`.

    `metric="loss"` is the mean validation loss on `images` val images (seconds per point);
    `"map"` is mAP50-95 by Ultralytics validation on the whole val split (much slower). The metric
    runs at `imgsz` (default: the model's training size); FLOPs are always at the training size, as
    `prune --target-flops` counts them. Progress goes to stderr.

    Example:
        >>> s = sensitivity("best.pt", "digits/data.yaml", blocks=[2], ratios=[0.5, 0.9], imgsz=64, images=4)
        >>> [c.producer for c in s.curves]
        ['model.2.cv1.conv', 'model.2.m.0.cv1.conv', 'model.2.cv2.conv']
    """
    if metric not in METRICS:
        raise YoloPruneError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    if importance not in CRITERIA:
        raise YoloPruneError(
            f"unknown importance {importance!r}; choose one of {', '.join(sorted(CRITERIA))}."
        )
    ratios = tuple(sorted({float(r) for r in ratios}))
    if not ratios or not all(0.0 < r < 1.0 for r in ratios):
        raise OptionError(f"`ratios={list(ratios)!r}`: give fractions in (0, 1), e.g. 0.1 0.3 0.5.")
    a = analysis or analyze(source, exclude=exclude)
    scope = scope_of(a.model, blocks, layers)
    groups = [g for g in select_groups(a.graph, scope) if g.prunable]
    if not groups:
        raise YoloPruneError(
            "nothing to measure: every group in the selection is pinned (see `yoloprune analyze`)."
        )
    train_size = imgsz_of(a)
    imgsz = imgsz or train_size
    cost = CostModel.build(a.model, a.graph, (torch.zeros(1, 3, train_size, train_size),))
    ranked = _rankings(a, groups, importance, data, images, imgsz)
    alloc = Allocator(ranked, Limits(max_ratio=1.0), is_global=False)
    if metric == "loss":
        score = ValLoss(data, a.task, imgsz, images, batch)
        images = score.images
    else:

        def score(m: torch.nn.Module) -> float:
            return accuracy(m, data, imgsz, batch).map50_95

    p = Progress(1 + len(groups) * len(ratios), "sensitivity", enabled=progress)
    p.start(f"{a.source}: unpruned {METRICS[metric]}")
    baseline, flops0 = score(a.model), int(cost.base[1])
    curves = []
    for i, g in enumerate(groups):
        producer = g.producers[0].module if g.producers else g.members[0].module
        measured: dict[int, tuple[float, int]] = {g.size: (baseline, flops0)}  # kept -> (value, FLOPs)
        kept_at = []
        for r in ratios:
            p.start(f"group {g.id} ({producer}, {plural(g.size, 'channel')}) at ratio {r:g}")
            kept = alloc.sizes.copy()  # every other group keeps all its channels
            kept[i] = max(1, g.size - fraction_of(g.size, r))
            if kept[i] not in measured:
                removed = alloc.removed(kept)
                pruned = copy.deepcopy(a.model)
                apply_plan(pruned, a.graph, removed)
                ULTRALYTICS.fix_attributes(pruned)
                lost = np.array([np.isin(a.graph.layout[m], list(removed)).sum() for m in cost.members])
                measured[int(kept[i])] = (score(pruned), round(cost.estimate(lost)[1]))
            kept_at.append(int(kept[i]))
        curves.append(
            Curve(
                g.id,
                _block_of(producer),
                producer,
                g.size,
                ratios,
                tuple(kept_at),
                tuple(measured[k][0] for k in kept_at),
                tuple(measured[k][1] for k in kept_at),
                tuple(float(s) for s in ranked[i][1].scores),
            )
        )
    p.done()
    return Sensitivity(
        a.source,
        str(data),
        metric,
        baseline,
        flops0,
        train_size,
        imgsz,
        images,
        importance,
        tuple(curves),
        scope,
        tuple(exclude),
    )


@dataclass(frozen=True)
class _CurveAllocator(Allocator):
    """Kept channels per group as a function of one knob: how many hull segments are taken, cheapest
    (least damage per FLOP saved) first; the knob's fraction takes that part of the next segment."""

    segment_group: tuple[int, ...] = ()  # group index of each segment, in the order they are taken
    segment_start: tuple[float, ...] = ()  # ratio where each segment starts
    segment_end: tuple[float, ...] = ()  # and ends

    @property
    def span(self) -> tuple[float, float]:
        return 0.0, float(len(self.segment_end))

    def kept(self, knob: float) -> np.ndarray:
        n = min(int(knob), len(self.segment_end))
        ratios = np.zeros(len(self.sizes))
        np.maximum.at(ratios, np.asarray(self.segment_group[:n], dtype=int), self.segment_end[:n])
        if n < len(self.segment_end):
            g, lo, hi = self.segment_group[n], self.segment_start[n], self.segment_end[n]
            ratios[g] = max(ratios[g], lo + (knob - n) * (hi - lo))
        return self.limits.kept(self.sizes, self.sizes - fraction_of(self.sizes, ratios))


def _hull(saved: np.ndarray, damage: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of the points (saved, damage), `saved` increasing; collinear
    points are kept so that equal slopes are taken one ratio step at a time."""
    hull: list[int] = []
    for i in range(len(saved)):
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = (saved[hull[-2]], damage[hull[-2]]), (saved[hull[-1]], damage[hull[-1]])
            if (x1 - x0) * (damage[i] - y0) - (y1 - y0) * (saved[i] - x0) < 0:  # hull[-1] lies above
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def _segments(s: Sensitivity) -> list[tuple[float, float, int, float, float]]:
    """(slope, start ratio, group index, start, end) of every curve's hull segments, sorted."""
    segments = []
    for gi, c in enumerate(s.curves):
        saved = np.array([0.0, *(s.flops - f for f in c.flops)], dtype=float)
        damage = np.nan_to_num(np.array([0.0, *s.damage(c)]), nan=1e30, posinf=1e30)  # NaN loss: worst
        ratio = np.array([0.0, *c.ratios])
        rising = [0] + [i for i in range(1, len(saved)) if saved[i] > saved[:i].max()]  # more FLOPs saved
        idx = [rising[j] for j in _hull(saved[rising], damage[rising])]
        for a, b in itertools.pairwise(idx):
            slope = (damage[b] - damage[a]) / (saved[b] - saved[a])
            segments.append((slope, ratio[a], gi, ratio[a], ratio[b]))
    return sorted(segments)


def plan_for_target(
    s: Sensitivity, analysis: Analysis, target_flops: float, round_to: int | str = 1, min_channels: int = 1
) -> Plan:
    """Per-group ratios from the curves of `s` that keep `target_flops` of the model's FLOPs (within 2%),
    as a plan of the model `analysis` holds (the one `s` was measured on). Only the measured groups
    are pruned, none beyond its largest measured ratio. `round_to` as in `prune` ("auto" included).

    Example:
        >>> s = sensitivity("yolov8n.yaml", "digits/data.yaml", imgsz=160)  # doctest: +SKIP
        >>> plan = plan_for_target(s, analyze("yolov8n.yaml"), 0.5)  # doctest: +SKIP
        >>> plan.budget.reached  # doctest: +SKIP
        0.4987
    """
    if not 0.0 < target_flops <= 1.0:
        raise OptionError(
            f"`target_flops={target_flops!r}` is outside (0, 1]: the fraction of FLOPs to keep."
        )
    graph, model = analysis.graph, analysis.model
    groups = []
    for c in s.curves:
        g = graph.groups[c.group] if c.group < len(graph.groups) else None
        if g is None or g.size != c.channels or not g.prunable:
            raise YoloPruneError(
                f"the sensitivity curves were measured on another model than {analysis.source} (group "
                f"{c.group}); measure and plan on the same model."
            )
        groups.append(g)
    segments = _segments(s)
    limits = Limits(
        max_ratio=max(c.ratios[-1] for c in s.curves),
        min_channels=min_channels,
        round_to=resolve_round_to(round_to),
    )
    alloc = _CurveAllocator(
        [(g, Ranking(np.asarray(c.scores))) for g, c in zip(groups, s.curves, strict=True)],
        limits,
        False,
        tuple(seg[2] for seg in segments),
        tuple(seg[3] for seg in segments),
        tuple(seg[4] for seg in segments),
    )
    size_in = (torch.zeros(1, 3, s.flops_imgsz, s.flops_imgsz),)
    measure = flops_measurer(model, graph, size_in, ULTRALYTICS)
    floor = measure(alloc.removed(alloc.kept(alloc.span[1])))[1] / s.flops
    if floor > target_flops * (1 + TOLERANCE):
        raise OptionError(
            f"`target_flops={target_flops:g}` cannot be reached from these curves: pruning every measured "
            f"group to its largest measured ratio ({limits.max_ratio:g}) leaves {floor:.3f} of the FLOPs. "
            "Measure more groups (`blocks`, `layers`) or larger `ratios`, or ask for "
            f"{np.ceil(floor * 100) / 100:.2f} or more."
        )
    cost = CostModel.build(model, graph, size_in)
    kept, budget = meet_target(alloc, graph, cost, Metric.FLOPS, target_flops, measure)
    return replace(plan_from_removed(graph, model, alloc.removed(kept)), budget=budget)


def plan_json(s: Sensitivity, plan: Plan, round_to: int | str = 1, min_channels: int = 1) -> str:
    """`plan` as the JSON `prune --plan-in` replays, recording the options and how it was made."""
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
