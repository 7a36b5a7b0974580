"""A safety net under the tracer: really remove one channel from every prunable group, run the
model, and pin (with the error) any group whose removal breaks the forward pass or changes what
the kept channels compute. Catches couplings no op-level trace can see, such as a module that
reads `x.shape` and reshapes another tensor with it (e.g. attention blocks)."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from yoloprune.graph.groups import ChannelGraph, Group
from yoloprune.graph.trace import Pin
from yoloprune.pruning.apply import apply_plan
from yoloprune.pruning.verify import compare, masked_copy


def _attempt(model: nn.Module, graph: ChannelGraph, groups: list[Group], inputs, fix, select) -> str | None:
    removed = frozenset(g.classes[-1] for g in groups)
    trial = copy.deepcopy(model)
    apply_plan(trial, graph, removed)
    fix(trial)
    try:
        eq = compare(trial, masked_copy(model, graph, removed), inputs, select)
    except Exception as e:  # the point of the probe: any failure of the pruned forward pass
        return f"{type(e).__name__}: {e}".splitlines()[0]
    return None if eq.ok else f"outputs differ from the masked original (relative error {eq.max_rel_error:.2g})"


def probe(
    model: nn.Module,
    graph: ChannelGraph,
    inputs: tuple,
    fix_attributes: Callable[[nn.Module], None] = lambda m: None,
    select_outputs: Callable[[object], object] = lambda o: o,
) -> ChannelGraph:
    """Return `graph` with a probe pin on every prunable group that cannot really be pruned.

    Tries all prunable groups at once; on failure, bisects to the groups responsible.
    """
    found: dict[int, Pin] = {}

    def search(groups: list[Group]) -> None:
        err = _attempt(model, graph, groups, inputs, fix_attributes, select_outputs)
        if err is None:
            return
        if len(groups) == 1:
            g = groups[0]
            who = g.producers[0].module if g.producers else g.members[0].module
            found[g.id] = Pin(who, f"removing any of its channels breaks the pruned model: {err}")
            return
        before = len(found)
        half = len(groups) // 2
        search(groups[:half])
        search(groups[half:])
        if len(found) == before:  # only the combination fails: keep all of them
            for g in groups:
                found[g.id] = Pin(g.members[0].module, f"pruned together with other groups it breaks: {err}")

    search([g for g in graph.groups if g.prunable])
    return graph.with_pins(found)
