"""Pruning plans: which channel classes to remove, chosen per group, and their JSON form.

Internally a plan is a set of removed class roots of one `ChannelGraph`. On disk it is plain JSON
keyed by `named_modules()` paths: for every conv/linear whose output channels change,
`{"keep_out": [sorted kept indices], "out_before": N}` under `"convs"`. Loading a plan resolves
those lists back to classes and refuses a plan that splits a coupled group or names unknown layers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from yoloprune._layers import output_weight
from yoloprune.errors import YoloPruneError
from yoloprune.graph.groups import ChannelGraph, Group, covers
from yoloprune.importance import CRITERIA, Context, Evidence, Ranking

PLAN_VERSION = 1


@dataclass(frozen=True)
class PruneOptions:
    """How to choose channels. `scope` holds module paths; None means every prunable group."""

    ratio: float | str = 0.5  # or "auto": the criterion decides (see `Ranking.keep`)
    importance: str = "l1"
    round_to: int = 1
    seed: int = 0
    scope: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.ratio != "auto" and not (isinstance(self.ratio, (int, float)) and 0.0 <= self.ratio < 1.0):
            raise YoloPruneError(
                f"--ratio {self.ratio} is outside [0, 1): it is the fraction of each group's channels to "
                "remove, so 0.5 removes half. Pass a value such as 0.3."
            )
        if self.importance not in CRITERIA:
            raise YoloPruneError(
                f"unknown importance {self.importance!r}; choose one of {', '.join(sorted(CRITERIA))}."
            )
        if self.round_to < 1:
            raise YoloPruneError(f"--round-to must be a positive integer, got {self.round_to}.")


@dataclass(frozen=True)
class Plan:
    """Removed channel classes of one traced model, plus what is needed to write and check it."""

    removed: frozenset[int]
    convs: dict[str, dict] = field(hash=False)  # path -> {"keep_out": [...], "out_before": N}
    fingerprint: str = ""

    def to_json(self, source: str, options: dict) -> str:
        doc = {
            "version": PLAN_VERSION,
            "source": source,
            "fingerprint": self.fingerprint,
            "options": options,
            "convs": self.convs,
        }
        return json.dumps(doc, indent=1)


def recorded_options(text: str) -> dict:
    """The choosing options stored in a plan's JSON (empty when it has none or is not JSON)."""
    try:
        options = json.loads(text).get("options")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(options, dict):
        return {}
    keys = ("ratio", "importance", "round_to", "seed")
    found = {k: options[k] for k in keys if k in options}
    found.update({k: tuple(options[k]) for k in ("scope", "exclude") if isinstance(options.get(k), list)})
    return found


def fingerprint(graph: ChannelGraph) -> str:
    """A short hash of every member's name and width: plans only apply to the same architecture."""
    text = ";".join(f"{m.module}:{m.axis}:{len(lay)}" for m, lay in graph.layout.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def select_groups(graph: ChannelGraph, scope: Iterable[str] | None) -> list[Group]:
    """Groups whose producing layers lie under a scope path (all groups for None)."""
    if scope is None:
        return list(graph.groups)
    prefixes = tuple(scope)
    return [g for g in graph.groups if any(covers(p, m.module) for m in g.producers for p in prefixes)]


def kept_count(size: int, ratio: float, round_to: int, wanted: int | None = None) -> int:
    """Channels a group of `size` keeps: `size * (1 - ratio)` (or `wanted`, when given) rounded to
    `round_to`, never zero."""
    keep = size - int(size * ratio) if wanted is None else wanted
    if round_to > 1:
        keep = max(round_to, round(keep / round_to) * round_to)
    return max(1, min(size, keep))


def choose(
    graph: ChannelGraph,
    model: nn.Module,
    groups: list[Group],
    options: PruneOptions,
    evidence: Evidence | None = None,
) -> Plan:
    """Remove the least important classes of each prunable group in `groups`."""
    ctx = Context(model, graph, np.random.default_rng(options.seed), evidence)
    score = CRITERIA[options.importance]
    removed: set[int] = set()
    for group in groups:
        if not group.prunable:
            continue
        ranking = score(ctx, group)
        ranking = ranking if isinstance(ranking, Ranking) else Ranking(ranking)
        if options.ratio == "auto" and ranking.keep is None:
            raise YoloPruneError(
                f"--ratio auto needs a criterion that chooses how many channels to keep (the act-* "
                f"criteria); {options.importance} does not. Pass a number such as --ratio 0.5."
            )
        auto = options.ratio == "auto"
        keep = kept_count(
            group.size, 0.0 if auto else options.ratio, options.round_to, ranking.keep if auto else None
        )
        if keep == group.size:
            continue
        order = np.argsort(ranking.scores, kind="stable")  # least important first
        removed.update(group.classes[i] for i in order[: group.size - keep].tolist())
    return plan_from_removed(graph, model, frozenset(removed))


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
            f"{where} is not a yoloprune plan ({e}); write one with `yoloprune prune --plan`."
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
            "coupled to them (or touches a pinned group), so it would break the model. Make plans with "
            "`yoloprune prune --plan` and do not edit coupled layers separately."
        )
    return plan
