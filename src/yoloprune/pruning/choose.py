"""Choosing a plan: rank the channels of the chosen groups with a criterion, then allocate (`allocate.py`)
what to remove under `PruneOptions` (a ratio, `auto`, a params/FLOPs target, or a latency target:
`latency.py`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from yoloprune.channel_blocks import channel_multiple
from yoloprune.errors import OptionError
from yoloprune.graph.groups import ChannelGraph, Group, covers
from yoloprune.importance import CRITERIA, Context, Evidence, Ranking
from yoloprune.progress import phase
from yoloprune.pruning.allocate import Allocator, CostModel, Limits, Measure, meet_target
from yoloprune.pruning.latency import LatencyTimer, layers_of, meet_latency
from yoloprune.pruning.options import Allocation, PruneOptions
from yoloprune.pruning.plan import Plan, plan_from_removed
from yoloprune.runtimes import Runtime


def select_groups(graph: ChannelGraph, scope: Iterable[str] | None) -> list[Group]:
    """Groups whose producing layers lie under a scope path (all groups for None). A group that no
    layer produces (the input image's channels, an attention product read by a projection) lies
    where its members do."""
    if scope is None:
        return list(graph.groups)
    prefixes = tuple(scope)
    return [
        g
        for g in graph.groups
        if any(covers(p, m.module) for m in g.producers or g.members for p in prefixes)
    ]


def choose(
    graph: ChannelGraph,
    model: nn.Module,
    groups: list[Group],
    options: PruneOptions,
    evidence: Evidence | None = None,
    inputs: tuple[torch.Tensor, ...] | None = None,
    measure: Measure | None = None,
    timer: LatencyTimer | None = None,
) -> Plan:
    """Remove the least important classes of the prunable groups in `groups`, as `options` say.

    A target needs `inputs` (an image at the model's training size: FLOPs depend on it) and is
    checked against `measure(removed) -> (params, FLOPs)` when given (see `allocate.measurer`). A
    latency target needs `inputs` too and `timer`, which times layers and models on the runtime.

    Example:
        >>> from yoloprune.yolo.api import analyze
        >>> a = analyze("yolov8n.yaml", run_probe=False)
        >>> plan = choose(a.graph, a.model, select_groups(a.graph, ["model.1"]), PruneOptions(0.5))
        >>> plan.convs["model.1.conv"]["out_before"], len(plan.convs["model.1.conv"]["keep_out"])
        (32, 16)
    """
    ctx = Context(model, graph, np.random.default_rng(options.seed), evidence, options.aggregation)
    ranked = []
    prunable = [g for g in groups if g.prunable]
    with phase(f"ranking channels by {options.importance}", len(prunable), "groups") as progress:
        for group in prunable:
            ranking = CRITERIA[options.importance](ctx, group)
            ranked.append((group, ranking if isinstance(ranking, Ranking) else Ranking(ranking)))
            progress.advance()
    alloc = Allocator(ranked, Limits.of(options), options.allocation is Allocation.GLOBAL)
    budget = None
    if options.ratio == "auto":
        if any(r.keep is None for _, r in ranked):
            raise OptionError(
                f"`ratio='auto'` needs a criterion that chooses how many channels to keep (the act-* "
                f"criteria); `importance={options.importance!r}` does not. Pass a number such as "
                "`ratio=0.5`."
            )
        kept = alloc.chosen([r.keep for _, r in ranked])
    elif options.target is not None:
        if inputs is None:
            raise ValueError("choose: a params/FLOPs target needs `inputs` to count FLOPs at")
        with phase(f"searching for the {options.target[0].value} target"):
            cost = CostModel.build(model, graph, inputs)
            kept, budget = meet_target(alloc, graph, cost, *options.target, measure)
    elif options.latency is not None:
        if inputs is None or timer is None:
            raise ValueError("choose: a latency target needs `inputs` and a `timer` of the runtime")
        with phase(f"searching for the latency target on {timer.setting}"):
            cost = CostModel.build(model, graph, inputs)
            block = channel_multiple(options.runtime or Runtime.ORT, options.int8)
            layers = layers_of(model, inputs)
            kept, budget = meet_latency(alloc, graph, cost, layers, options.latency, timer, block)
    elif alloc.is_global:
        kept = alloc.search(lambda k: float(k.sum()), (1 - options.ratio) * alloc.sizes.sum())
    else:
        kept = alloc.kept(options.ratio)
    return replace(plan_from_removed(graph, model, alloc.removed(kept)), budget=budget)
