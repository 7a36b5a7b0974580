"""The stages of a prune request before its proof: which whole blocks go (given by `depth`, replayed
from a plan, or searched with `depth="auto"`), then which channels of the model that is left
(`channels`). `prune` proves and packages what `shape` or `search_depth` returns.

`depth="auto"` (see `yoloprune.pruning.split`): the removable blocks are ranked by how far removing
each alone moves the model's predictions (least first); for a few counts `k` the first `k` go and
the channels meet the rest of the target; the split whose predictions differ least from the
original's wins.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch

from yoloprune.errors import YoloPruneError
from yoloprune.graph.groups import Group
from yoloprune.progress import phase
from yoloprune.pruning.allocate import measurer
from yoloprune.pruning.apply import pruned_copy
from yoloprune.pruning.choose import choose, select_groups
from yoloprune.pruning.depth import identity_masked
from yoloprune.pruning.options import PruneOptions
from yoloprune.pruning.plan import Plan, load_plan
from yoloprune.pruning.split import Measured, Split, distortion, search_split
from yoloprune.pruning.verify import eval_outputs
from yoloprune.yolo.adapter import ULTRALYTICS
from yoloprune.yolo.analyze import Analysis, analyze, scope_of
from yoloprune.yolo.calibrate import evidence_for
from yoloprune.yolo.depth import Repeated
from yoloprune.yolo.depth_step import (
    DepthStep,
    block_pool,
    calibration_inputs,
    take_out,
    whole_budget,
    width_options,
)

DISTORTION_IMAGES = 16  # calibration images the depth search compares predictions on


@dataclass(frozen=True)
class Shape:
    """What a prune removes: `depth`, the blocks (None: none), then `chosen`, channels of
    `analysis.model` (the shallower model when blocks went) chosen with `options` (the channel
    step's: `layers`/`exclude` renamed, a target rescaled to the shallower model); `chosen.budget`
    is against the original, blocks included."""

    analysis: Analysis
    options: PruneOptions
    depth: DepthStep | None
    chosen: Plan


def _explain_all_pinned(groups: list[Group]) -> str:
    lines = []
    for g in groups[:8]:
        why = "; ".join(g.reasons)
        lines.append(f"group {g.id} ({g.producers[0].module if g.producers else g.members[0].module}): {why}")
    more = f" (and {len(groups) - 8} more)" if len(groups) > 8 else ""
    return "; ".join(lines) + more


def channels(
    a: Analysis,
    options: PruneOptions,
    data: str | os.PathLike[str] | None,
    size_in: tuple[torch.Tensor, ...],
    imgsz: int,
) -> Plan:
    """The channels of `a.model` that `options` remove (criterion, allocation, target), as a plan."""
    groups = select_groups(a.graph, scope_of(a.model, options.blocks, options.layers))
    if not any(g.prunable for g in groups):
        raise YoloPruneError(
            "nothing to prune: every group in the selection is pinned. " + _explain_all_pinned(groups)
        )
    measure = measurer(a.model, a.graph, size_in, ULTRALYTICS)
    calib = (options.calib_images, options.calib_imgsz or imgsz)
    with contextlib.ExitStack() as stack:
        timer = None
        if options.latency is not None:  # checked before the criterion's (maybe slow) evidence
            from yoloprune.yolo.latency import runtime_timer  # the runtimes load only for this

            timer = stack.enter_context(runtime_timer(a.model, a.graph, a.ckpt, options, imgsz, data))
        evidence = evidence_for(a.model, a.graph, options.importance, data, groups, *calib)
        return choose(
            a.graph, a.model, groups, options, evidence, inputs=size_in, measure=measure, timer=timer
        )


def shape(
    a: Analysis,
    blocks: Sequence[Repeated],
    options: PruneOptions,
    data: str | os.PathLike[str] | None,
    size_in: tuple[torch.Tensor, ...],
    imgsz: int,
    plan: str | None = None,
) -> Shape:
    """Remove `blocks` from `a.model` (proved, see `take_out`), then choose channels of what is left
    as `options` say, or as `plan` (JSON text) records them."""
    depth, ratio = None, None
    if blocks:
        depth = take_out(a.model, blocks, options.seed)
        if options.latency is not None and plan is None:
            # the target is the original's latency: how fast is what the blocks left?
            from yoloprune.yolo.latency import latency_ratio  # the runtimes load only for this

            ratio = latency_ratio(depth.original, depth.model, a.ckpt, options, imgsz, data)
        options = width_options(options, depth, size_in, ratio)
        shallower = analyze(depth.model, exclude=options.exclude)
        a = replace(shallower, source=a.source, task=a.task, ckpt=a.ckpt)
    if plan is not None:
        return Shape(a, options, depth, load_plan(a.graph, a.model, plan))
    chosen = channels(a, options, data, size_in, imgsz)
    if depth is not None:
        chosen = replace(chosen, budget=whole_budget(chosen.budget, depth, size_in, ratio))
    return Shape(a, options, depth, chosen)


def _images(
    model: torch.nn.Module, options: PruneOptions, data: str | os.PathLike[str] | None, imgsz: int
) -> list[tuple[torch.Tensor, ...]]:
    """The inputs the depth search compares predictions on: calibration images of `data` when the
    criterion reads a dataset, else the example input (as the blocks' importance is measured)."""
    found = calibration_inputs(model, options, data, imgsz, min(options.calib_images, DISTORTION_IMAGES))
    return [ULTRALYTICS.example_inputs(model, batch=2, seed=options.seed)] if found is None else list(found)


def predictions(
    model: torch.nn.Module, images: Iterable[tuple[torch.Tensor, ...]]
) -> list[list[torch.Tensor]]:
    """The model's predictions (eval mode, `ULTRALYTICS.select_outputs`) on every image of `images`
    (input tuples, batched): one list of tensors per image, each with a batch of one."""
    out = []
    for x in images:
        tensors = eval_outputs(model, x, ULTRALYTICS.select_outputs, torch.float32)
        out += [[t[i : i + 1] for t in tensors] for i in range(x[0].shape[0])]
    return out


def prediction_distortion(
    model: torch.nn.Module, images: list[tuple[torch.Tensor, ...]], reference: list[list[torch.Tensor]]
) -> Measured:
    """How far `model`'s predictions are from `reference` (`predictions` of the original), image by image."""
    return Measured.of([distortion(o, r) for o, r in zip(predictions(model, images), reference, strict=True)])


def search_depth(
    a: Analysis,
    options: PruneOptions,
    scope: tuple[str, ...] | None,
    data: str | os.PathLike[str] | None,
    size_in: tuple[torch.Tensor, ...],
    imgsz: int,
) -> tuple[Shape, tuple[Split, ...]]:
    """`depth="auto"`: the split between whole blocks and channels that `search_split` chooses by
    the distortion of the result's predictions against the original's, and every split tried. The
    blocks are ranked in the same currency first: the distortion of removing each alone (the
    original with it as identity), the least first, so a split of `k` removes the `k` that move the
    predictions least."""
    images = _images(a.model, options, data, imgsz)
    reference = predictions(a.model, images)
    pool = block_pool(a.model, options, scope)  # ranked again below: no calibration pass for the change
    with phase(f"depth auto: the distortion of removing each of {len(pool)} blocks alone"):
        alone = [
            prediction_distortion(identity_masked(a.model, r.blocks), images, reference).mean for r in pool
        ]
    pool = [pool[i] for i in sorted(range(len(pool)), key=lambda i: (alone[i], i))]
    latest: list[tuple[int, Shape]] = []  # only the last split tried is kept (memory): often the one chosen

    def split(k: int) -> Shape:
        with phase(f"depth auto: {k} of {len(pool)} removable blocks, then channels"):
            return shape(a, pool[:k], options, data, size_in, imgsz)

    def evaluate(k: int) -> Measured:
        latest[:] = [(k, split(k))]
        s = latest[0][1]
        pruned, _ = pruned_copy(s.analysis.model, s.analysis.graph, s.chosen.removed, ULTRALYTICS)
        return prediction_distortion(pruned, images, reference)

    chosen, tried = search_split(len(pool), evaluate)
    return (latest[0][1] if latest[0][0] == chosen else split(chosen)), tried
