"""A safety net under the tracer: really remove one channel from every prunable group, run the
model, and pin (with the error) any group whose removal breaks the forward pass or changes what
the kept channels compute. Catches couplings no op-level trace can see, such as a module that
reads `x.shape` and reshapes another tensor with it (e.g. attention blocks).

Two stages, each bisecting to the responsible groups on failure: shapes first, on the meta device
(no compute, no weight copies), then values: one real forward of the pruned model against the
masked original."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

from yoloprune.errors import first_line
from yoloprune.graph.adapter import PLAIN, ModelAdapter
from yoloprune.graph.groups import ChannelGraph, Group
from yoloprune.graph.trace import Pin
from yoloprune.progress import phase
from yoloprune.pruning.apply import pruned_copy
from yoloprune.pruning.copies import meta_copy
from yoloprune.pruning.verify import prune_and_compare
from yoloprune.text import plural

Check = Callable[[list[Group]], "str | None"]


@contextlib.contextmanager
def _innermost(model: nn.Module) -> Iterator[list[str]]:
    """Track the modules running inside `model`: when a forward pass raises, the list's last entry
    names the innermost module the error came from, as `path (Type)`."""
    running: list[str] = []
    hooks = []
    for name, m in model.named_modules():
        label = f"{name or 'the model'} ({type(m).__name__})"
        hooks.append(m.register_forward_pre_hook(lambda *_, label=label: running.append(label)))
        hooks.append(m.register_forward_hook(lambda *_: running.pop() and None))  # output unchanged
    try:
        yield running
    finally:
        for h in hooks:
            h.remove()


def _removal(groups: list[Group]) -> frozenset[int]:
    return frozenset(g.classes[-1] for g in groups)


def _bisect(groups: list[Group], check: Check, found: dict[int, Pin]) -> None:
    err = check(groups) if groups else None
    if err is None:
        return
    if len(groups) == 1:
        g = groups[0]
        who = g.producers[0].module if g.producers else g.members[0].module
        found[g.id] = Pin(who, f"removing any of its channels breaks the pruned model: {err}")
        return
    before = len(found)
    half = len(groups) // 2
    _bisect(groups[:half], check, found)
    _bisect(groups[half:], check, found)
    if len(found) == before:  # only the combination fails: keep all of them
        for g in groups:
            found[g.id] = Pin(g.members[0].module, f"pruned together with other groups it breaks: {err}")


def probe(
    model: nn.Module,
    graph: ChannelGraph,
    inputs: tuple[torch.Tensor, ...],
    adapter: ModelAdapter = PLAIN,
) -> ChannelGraph:
    """Return `graph` with a probe pin on every prunable group that cannot really be pruned."""

    def shapes(groups: list[Group]) -> str | None:
        trial, _ = pruned_copy(
            model, graph, _removal(groups), adapter, meta_copy if on_meta else copy.deepcopy
        )
        with _innermost(trial) as running:
            try:
                with torch.no_grad():
                    trial.eval()(*(x.to("meta") if on_meta else x for x in inputs))
            except Exception as e:  # the point of the probe: any failure of the pruned forward pass
                where = f" in {running[-1]}" if running else ""
                return f"the forward pass fails{where}: {first_line(e)}"
        return None

    def values(groups: list[Group]) -> str | None:
        try:
            _, _, eq = prune_and_compare(model, graph, _removal(groups), inputs, adapter)
        except Exception as e:
            return first_line(e)
        if eq.ok:
            return None
        where = f", first at {eq.first_divergence[0]}" if eq.first_divergence else ""
        return f"its outputs differ from the masked original{where} (relative error {eq.max_rel_error:.2g})"

    try:
        with torch.no_grad():
            meta_copy(model).eval()(*(x.to("meta") for x in inputs))
        on_meta = True
    except Exception:  # some models read tensor values (e.g. .item()); probe them for real
        on_meta = False
    found: dict[int, Pin] = {}
    prunable = [g for g in graph.groups if g.prunable]
    with phase(f"probe: pruning each of {plural(len(prunable), 'group')} for real"):
        _bisect(prunable, shapes, found)
        _bisect([g for g in prunable if g.id not in found], values, found)
    return graph.with_pins(found)
