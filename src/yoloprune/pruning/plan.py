"""Pruning plans: which channel classes to remove, chosen by a criterion and an allocation
(`allocate.py`) under `PruneOptions`, and their JSON form.

Internally a plan is a set of removed class roots of one `ChannelGraph`. On disk it is plain JSON
keyed by `named_modules()` paths: for every conv/linear whose output channels change,
`{"keep_out": [sorted kept indices], "out_before": N}` under `"convs"`. Loading a plan resolves
those lists back to classes and refuses a plan that splits a coupled group or names unknown layers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.graph.groups import ChannelGraph, Group, covers
from yoloprune.importance import CRITERIA, Context, Evidence, Ranking
from yoloprune.progress import phase
from yoloprune.pruning.allocate import Allocator, Budget, CostModel, Limits, Measure, meet_target
from yoloprune.pruning.layers import output_weight
from yoloprune.pruning.options import Allocation, PruneOptions

PLAN_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """Removed channel classes of one traced model, plus what is needed to write and check it."""

    removed: frozenset[int]
    convs: dict[str, dict] = field(hash=False)  # path -> {"keep_out": [...], "out_before": N}
    fingerprint: str = ""
    budget: Budget | None = field(default=None, compare=False)  # the target and what it reached

    def to_json(self, source: str, options: PruneOptions, **extra: object) -> str:
        """The plan as JSON: the format version, `source`, the fingerprint, the `options` that chose
        it (`plan_options` reads them back), the convs, the budget (with a target) and `extra` keys."""
        doc = {
            "version": PLAN_VERSION,
            "source": source,
            "fingerprint": self.fingerprint,
            "options": options.to_json(),
            "convs": self.convs,
        }
        if self.budget is not None:
            doc["budget"] = self.budget.as_json()
        return json.dumps({**doc, **extra}, indent=1)


def plan_options(text: str, where: str = "plan") -> PruneOptions:
    """The options a plan's JSON records (`Plan.to_json`), as `PruneOptions`. A plan without them, or
    text that is no JSON, gives the defaults: `load_plan` says what is wrong with it.

    Older plans record `scope` (module paths), read as `layers`, and may hold a sensitivity plan's
    `sensitivity` entry among the options (now beside them); a field they lack takes its default.
    """
    try:
        options = json.loads(text).get("options")
    except (ValueError, AttributeError):
        return PruneOptions()
    if not isinstance(options, dict):
        return PruneOptions()
    options = {k: v for k, v in options.items() if k != "sensitivity"}
    if "scope" in options:
        options["layers"] = options.pop("scope")
    try:
        return PruneOptions.from_json(options)
    except YoloPruneError as e:
        raise YoloPruneError(
            f"{where}'s options have the wrong type or value ({e}), so yoloprune did not write it or it was "
            "edited; replay only plans that yoloprune wrote."
        ) from e


def fingerprint(graph: ChannelGraph) -> str:
    """A short hash of every member's name and width: plans only apply to the same architecture."""
    text = ";".join(f"{m.module}:{m.axis}:{len(lay)}" for m, lay in graph.layout.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
) -> Plan:
    """Remove the least important classes of the prunable groups in `groups`, as `options` say.

    A target needs `inputs` (an image at the model's training size: FLOPs depend on it) and is
    checked against `measure(removed) -> (params, FLOPs)` when given (see `allocate.measurer`).

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
    elif alloc.is_global:
        kept = alloc.search(lambda k: float(k.sum()), (1 - options.ratio) * alloc.sizes.sum())
    else:
        kept = alloc.kept(options.ratio)
    return replace(plan_from_removed(graph, model, alloc.removed(kept)), budget=budget)


def plan_from_removed(graph: ChannelGraph, model: nn.Module, removed: frozenset[int]) -> Plan:
    """Describe `removed` as kept output channels per conv/linear."""
    modules = dict(model.named_modules())
    rem = np.fromiter(removed, dtype=np.int64, count=len(removed))
    convs = {}
    for member, layout in graph.layout.items():
        if output_weight(modules[member.module], member.axis) is None:
            continue
        keep = np.flatnonzero(~np.isin(layout, rem))
        if len(keep) < len(layout):
            convs[member.module] = {"keep_out": keep.tolist(), "out_before": len(layout)}
    return Plan(removed, convs, fingerprint(graph))


def load_plan(graph: ChannelGraph, model: nn.Module, text: str, where: str = "plan") -> Plan:
    """Resolve a plan's JSON against a traced model, refusing any plan that does not fit it."""
    try:
        doc = json.loads(text)
        convs = doc["convs"]
        if not isinstance(convs, dict):
            raise TypeError("'convs' is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise YoloPruneError(
            f"{where} is not a yoloprune plan ({e}); replay only plans that yoloprune wrote."
        ) from e
    expected = doc.get("fingerprint")
    if expected and expected != fingerprint(graph):
        raise YoloPruneError(
            f"{where} was made for a different model (fingerprint {expected}, this model "
            f"{fingerprint(graph)}, source {doc.get('source')!r}); replay it on the model it was made for."
        )
    outs = {m.module: lay for m, lay in graph.layout.items() if m.axis == "out"}
    removed: set[int] = set()
    for path, entry in convs.items():
        if path not in outs:
            raise YoloPruneError(f"{where} names layer {path!r}, which this model does not have.")
        layout = outs[path]
        keep = entry.get("keep_out") if isinstance(entry, dict) else None
        ok = isinstance(keep, list) and all(isinstance(i, int) for i in keep)
        if not ok or len(set(keep)) != len(keep) or not keep or min(keep) < 0 or max(keep) >= len(layout):
            raise YoloPruneError(
                f"{where}: keep_out of {path!r} must be distinct channel indices in [0, {len(layout)}), "
                "at least one."
            )
        if entry.get("out_before", len(layout)) != len(layout):
            raise YoloPruneError(
                f"{where}: {path!r} had {entry['out_before']} output channels when the plan was made, "
                f"this model has {len(layout)}."
            )
        drop = np.setdiff1d(np.arange(len(layout)), keep)
        removed.update(layout[drop].tolist())
    plan = plan_from_removed(graph, model, frozenset(removed))
    pinned = {c for g in graph.groups if not g.prunable for c in g.classes}
    changed = {p for p, e in convs.items() if len(e["keep_out"]) < e.get("out_before", len(outs[p]))}
    clash = sorted(set(plan.convs) ^ changed) or [
        p for p in changed if plan.convs[p]["keep_out"] != sorted(convs[p]["keep_out"])
    ]
    if clash or removed & pinned:
        raise YoloPruneError(
            f"{where} removes channels of {', '.join(clash) or 'a pinned group'} without the layers "
            "coupled to them (or touches a pinned group), so it would break the model. Replay plans that "
            "yoloprune wrote, and do not edit coupled layers separately."
        )
    return plan
