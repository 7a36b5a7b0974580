"""Sensitivity: what each prunable group costs in accuracy when it alone loses channels, and per-group
ratios that meet a FLOPs target at the least total cost.

Scope: for every selected group and ratio, a copy of the model with only that group pruned (its
least important channels by `importance`, the ones `prune` would remove) is scored by a metric,
the validation loss (`ValLoss`, fast, the default) or mAP50-95 (Ultralytics validation), and its
FLOPs at the model's training size are estimated by the cost model a `target_flops` search runs on
(exact for convolutions). `plan_for_target` reads the curves as "damage" (the metric's change for
the worse) against FLOPs saved and lets `pruning.hull.HullAllocator` take hull segments in order of
least damage per FLOP saved, searching how far to go with `meet_target`, the same search and 2% check
`prune(target_flops=...)` uses; the result is a plan `prune` replays. Showing the curves and the
plan (text, CSV, plot, plan JSON) is `reports.sensitivity`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace

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
from yoloprune.pruning.apply import pruned_copy
from yoloprune.pruning.choose import select_groups
from yoloprune.pruning.hull import HullAllocator, Tradeoff
from yoloprune.pruning.options import resolve_round_to
from yoloprune.pruning.plan import Plan, plan_from_removed
from yoloprune.reports.sensitivity import METRICS, Curve, Sensitivity
from yoloprune.text import plural
from yoloprune.workflows.evaluate import ValLoss, accuracy
from yoloprune.yolo.adapter import ULTRALYTICS
from yoloprune.yolo.api import Analysis, analyze, imgsz_of, scope_of
from yoloprune.yolo.calibrate import evidence_for

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


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
    `prune(target_flops=...)` counts them. Progress goes to stderr.

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
        raise OptionError(
            "nothing to measure: every group in the selection is pinned (the analysis report says why); "
            "select other `blocks` or `layers`."
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
                pruned, _ = pruned_copy(a.model, a.graph, removed, ULTRALYTICS)
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
    limits = Limits(
        max_ratio=max(c.ratios[-1] for c in s.curves),
        min_channels=min_channels,
        round_to=resolve_round_to(round_to),
    )
    alloc = HullAllocator.build(
        [(g, Ranking(np.asarray(c.scores))) for g, c in zip(groups, s.curves, strict=True)],
        limits,
        [Tradeoff(c.ratios, tuple(s.flops - f for f in c.flops), tuple(s.damage(c))) for c in s.curves],
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
