"""The plan file format: which channel classes a prune removes, as JSON, read back and checked
(choosing them is `choose.py`).

Internally a plan is a set of removed class roots of one `ChannelGraph`. On disk it is plain JSON
keyed by `named_modules()` paths: for every conv/linear whose output channels change,
`{"keep_out": [sorted kept indices], "out_before": N}` under `"convs"`. Loading a plan resolves
those lists back to classes and refuses a plan that splits a coupled group or names unknown layers.
A plan that also removes whole blocks lists them under `"removed_blocks"` (paths in the original);
its convs then name the layers of the shallower model (see `yoloprune.pruning.depth`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from yoloprune.errors import YoloPruneError
from yoloprune.graph.groups import ChannelGraph
from yoloprune.pruning.allocate import Budget
from yoloprune.pruning.layers import output_weight
from yoloprune.pruning.options import PruneOptions

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


def plan_removed_blocks(text: str, where: str = "plan") -> tuple[str, ...]:
    """The whole blocks a plan's JSON removes before its channels (`removed_blocks`: module paths of
    the original model); empty for a plan without them or text that is no JSON (`load_plan` says
    what is wrong with it)."""
    try:
        paths = json.loads(text).get("removed_blocks", [])
    except (ValueError, AttributeError):
        return ()
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise YoloPruneError(
            f"{where}'s removed_blocks must be a list of module paths; replay only plans yoloprune wrote."
        )
    return tuple(paths)


def fingerprint(graph: ChannelGraph) -> str:
    """A short hash of every member's name and width: plans only apply to the same architecture."""
    text = ";".join(f"{m.module}:{m.axis}:{len(lay)}" for m, lay in graph.layout.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
