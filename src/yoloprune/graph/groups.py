"""Turn a trace into pruning groups: sets of channels that must be removed together.

A *class* is one union-find root: every (member, position) holding one of its elements is removed
with it. A *group* is all classes that touch exactly the same members, e.g. the 64 output channels
of `model.1.conv` together with `model.1.bn` and `model.2.cv1.conv`'s input. A group is prunable
when none of its classes is pinned; otherwise it carries every pin that blocks it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np

from yoloprune.graph.trace import Member, Pin, Trace

OUTPUT_REASON = "its output channels are the model's predictions (head output)"


@dataclass(frozen=True)
class Group:
    """Channels that must be removed together: `size` classes, each spread over `members`."""

    id: int
    classes: tuple[int, ...]  # class roots, in channel order of the first member
    members: tuple[Member, ...]
    pinned_by: tuple[Pin, ...]
    width: int = 1  # channels a class holds in each member, at least (an attention head: head_dim)

    @property
    def size(self) -> int:
        return len(self.classes)

    @property
    def prunable(self) -> bool:
        return not self.pinned_by and self.size >= 2

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the group cannot be pruned, one `where: why` line per pin (empty when it can be)."""
        if self.prunable:
            return ()
        pins = tuple(f"{p.member}: {p.reason}" for p in self.pinned_by)
        return pins or (f"{self.members[0].module}: a group of 1 channel cannot lose any",)

    @property
    def producers(self) -> tuple[Member, ...]:
        """Members whose layers create these channels (conv/linear outputs and their norms)."""
        return tuple(m for m in self.members if m.axis == "out")


@dataclass
class ChannelGraph:
    """The model's channel coupling: every member's channels mapped to classes, and the groups."""

    trace: Trace
    layout: dict[Member, np.ndarray]  # member -> class root per channel position
    groups: tuple[Group, ...]

    def positions(self, group: Group, member: Member) -> np.ndarray:
        """Channel positions of `member` that belong to `group`."""
        return np.flatnonzero(np.isin(self.layout[member], group.classes))

    def ranges(self, group: Group) -> list[tuple[Member, int, int]]:
        """The group's members as contiguous (member, start, stop) channel ranges."""
        out = []
        for member in group.members:
            pos = self.positions(group, member)
            breaks = np.flatnonzero(np.diff(pos) != 1) + 1
            for run in np.split(pos, breaks):
                out.append((member, int(run[0]), int(run[-1]) + 1))
        return out

    def with_pins(self, pins: dict[int, Pin]) -> ChannelGraph:
        """A copy in which group `id` also carries `pins[id]`."""
        groups = tuple(
            replace(g, pinned_by=(*g.pinned_by, pins[g.id])) if g.id in pins else g for g in self.groups
        )
        return ChannelGraph(self.trace, self.layout, groups)

    def groups_of(self, module: str, axis: str | None = None) -> list[Group]:
        """Groups with a member on `module` (and `axis` when given)."""
        return [
            g for g in self.groups if any(m.module == module and axis in (None, m.axis) for m in g.members)
        ]


def covers(prefix: str, module: str) -> bool:
    """True when module path `module` is `prefix` or lies inside it (`model.2` covers `model.2.cv1`)."""
    return module == prefix or module.startswith(prefix + ".")


def build_groups(trace: Trace, exclude: tuple[str, ...] = ()) -> ChannelGraph:
    """Group the traced channel classes; members under an `exclude` module path are pinned.

    Example:
        >>> import torch
        >>> from yoloprune.graph.trace import trace
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
        >>> g = build_groups(trace(net, (torch.zeros(1, 3, 8, 8),)))
        >>> [(grp.size, grp.prunable) for grp in g.groups]
        [(3, False), (8, True), (4, False)]
    """
    layout = {member: trace.roots(elems) for member, elems in trace.members.items()}
    pins: dict[int, list[Pin]] = defaultdict(list)
    for elems, pin in trace.pins:
        for root in set(trace.roots(elems).tolist()):
            if pin not in pins[root]:
                pins[root].append(pin)
    signature: dict[int, list[Member]] = defaultdict(list)
    for member, roots in layout.items():
        for root in dict.fromkeys(roots.tolist()):
            signature[root].append(member)
    by_signature: dict[tuple[Member, ...], list[int]] = defaultdict(list)
    for root, members in signature.items():
        by_signature[tuple(members)].append(root)

    groups = []
    for members, roots in by_signature.items():
        first = layout[members[0]]
        wanted = set(roots)
        order = dict.fromkeys(r for r in first.tolist() if r in wanted)
        blocked: list[Pin] = []
        for root in order:
            for pin in pins.get(root, ()):
                if pin not in blocked:
                    blocked.append(pin)
        blocked = _name_output_pins(blocked, members)
        blocked += [
            Pin(m.module, f"excluded by the user (exclude {p})")
            for m in members
            for p in exclude
            if covers(p, m.module)
        ]
        held = min(int(np.isin(layout[m], roots).sum()) for m in members)
        width = held // len(order)  # the classes of a group are alike
        groups.append(Group(len(groups), tuple(order), members, tuple(dict.fromkeys(blocked)), max(1, width)))
    return ChannelGraph(trace, layout, tuple(groups))


def _name_output_pins(pins: list[Pin], members: tuple[Member, ...]) -> list[Pin]:
    """Name the layers that produce a model output instead of the anonymous 'output'."""
    producers = [m.module for m in members if m.axis == "out"]
    named = []
    for pin in pins:
        if pin.member == "output" and producers:
            named.extend(Pin(p, OUTPUT_REASON) for p in producers[:1])
        else:
            named.append(pin)
    return named
