"""Allocation: how many channels each selected group keeps, and the search for a params/FLOPs target.

Local allocation removes the same fraction of every group. Global allocation divides each group's
scores by their mean absolute value (a group whose channels all score alike gets 1.0 everywhere,
whatever the criterion's scale; ranks would make it the same as local), ranks the classes of every
selected group together and removes from the bottom, which amounts to one threshold on the scores;
equal scores (e.g. the BatchNorm gammas of a fresh model) go from each group in turn, in proportion
to its size. Both honour `Limits`: no group loses
more than `max_ratio` of its channels or keeps fewer than `min_channels`, and each keeps a multiple
of `round_to` (or all of its channels). Within a group the lowest-scoring classes go first.

Targets: params and FLOPs are sums of per-tensor terms, each scaling with the kept fraction of every
member that slices the tensor (a conv's weight, and so its multiply-adds, scales with kept outputs x
kept inputs). `CostModel.estimate` is therefore a few numpy ops per candidate. The allocation's knob
(the global threshold, or the local ratio) is bisected on that estimate, the pruned shapes are
measured for real, and the aim is corrected by the difference (ops the estimate does not scale).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from yoloprune.errors import OptionError
from yoloprune.graph.adapter import PLAIN, ModelAdapter
from yoloprune.graph.groups import ChannelGraph, Group
from yoloprune.graph.trace import Member
from yoloprune.importance import Ranking
from yoloprune.pruning.apply import pruned_copy
from yoloprune.pruning.copies import meta_copy
from yoloprune.pruning.count import count_flops, count_params, flops_by_module
from yoloprune.pruning.layers import slice_member
from yoloprune.pruning.options import Metric, PruneOptions

TOLERANCE = 0.02  # a target is met when within 2% of it (relative)
Measure = Callable[[frozenset[int]], tuple[int, int]]  # removed classes -> (params, FLOPs)


def fraction_of(size: np.ndarray | int, ratio: float) -> np.ndarray | int:
    """`int(size * ratio)`, safe from float error (`100 * 0.29` is 28.999...)."""
    return np.floor(np.asarray(size) * ratio + 1e-9).astype(int)


@dataclass(frozen=True)
class Limits:
    """Bounds on every group: the most it may lose, the fewest it keeps, the multiple it keeps."""

    max_ratio: float = 0.9
    min_channels: int = 1
    round_to: int = 1

    @classmethod
    def of(cls, options: PruneOptions) -> Limits:
        """The limits `options` set."""
        return cls(options.max_ratio, options.min_channels, options.round_to)

    def kept(self, size: np.ndarray, want: np.ndarray, width: np.ndarray | int = 1) -> np.ndarray:
        """`want` kept classes per group rounded to the nearest multiple of `round_to` channels, then
        raised to the limits; `size` where no multiple fits. A class of `width` channels per layer (an
        attention head) steps by `round_to / gcd(round_to, width)` classes.

        Example:
            >>> Limits(max_ratio=0.5, round_to=8).kept(np.array([64, 64, 20]), np.array([41, 8, 3]))
            array([40, 32, 16])
            >>> Limits(round_to=8).kept(np.array([4, 32]), np.array([3, 7]), np.array([32, 2]))
            array([3, 8])
        """
        size = np.asarray(size)
        r = self.round_to // np.gcd(self.round_to, np.asarray(width))
        keep = np.round(np.asarray(want) / r).astype(int) * r
        low = np.maximum(self.min_channels, size - fraction_of(size, self.max_ratio))
        keep = np.where(keep < low, -(-low // r) * r, keep)
        return np.minimum(size, keep)


@dataclass(frozen=True)
class Allocator:
    """Kept channels per group as a function of one knob: the ratio (local), or how many classes go
    from the bottom of the global ranking (global). More removal as the knob grows."""

    ranked: Sequence[tuple[Group, Ranking]]
    limits: Limits
    is_global: bool
    sizes: np.ndarray = field(init=False, repr=False)
    orders: tuple[np.ndarray, ...] = field(init=False, repr=False)  # per group, least important first
    owners: np.ndarray = field(init=False, repr=False)  # (K,) group index of each class, global order

    def __post_init__(self) -> None:
        scores = [np.asarray(r.scores, dtype=float) for _, r in self.ranked]
        orders = tuple(np.argsort(s, kind="stable") for s in scores)
        sizes = np.array([len(s) for s in scores], dtype=int)
        norm, place = [np.zeros(0)], [np.zeros(0)]
        for s, order in zip(scores, orders, strict=True):
            mean = np.abs(s).mean()
            norm.append(s / mean if mean > 0 else np.zeros_like(s))
            rank = np.empty(len(s))
            rank[order] = (np.arange(len(s)) + 0.5) / len(s)
            place.append(rank)  # ties across groups go in turn, in proportion to their sizes
        owner = np.repeat(np.arange(len(scores)), sizes)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "orders", orders)
        object.__setattr__(self, "owners", owner[np.lexsort((np.concatenate(place), np.concatenate(norm)))])

    @property
    def span(self) -> tuple[float, float]:
        """Knob values that remove nothing and everything the limits allow."""
        return (0.0, float(len(self.owners))) if self.is_global else (0.0, 1.0)

    def kept(self, knob: float) -> np.ndarray:
        if self.is_global:
            below = np.bincount(self.owners[: int(knob)], minlength=len(self.sizes))
            return self.limits.kept(self.sizes, self.sizes - below, self.widths)
        return self.limits.kept(self.sizes, self.sizes - fraction_of(self.sizes, knob), self.widths)

    def chosen(self, keep: Sequence[int]) -> np.ndarray:
        """The criterion's own kept counts (`ratio="auto"`), within the limits."""
        return self.limits.kept(self.sizes, np.array(keep, dtype=int), self.widths)

    @property
    def widths(self) -> np.ndarray:
        """Channels per class in each group (1, or e.g. an attention head's width)."""
        return np.array([g.width for g, _ in self.ranked], dtype=int)

    def removed(self, kept: np.ndarray) -> frozenset[int]:
        """The classes removed when each group keeps `kept` of its most important ones."""
        out: set[int] = set()
        for (group, _), order, k in zip(self.ranked, self.orders, kept.tolist(), strict=True):
            out.update(group.classes[i] for i in order[: group.size - k].tolist())
        return frozenset(out)

    def search(self, value: Callable[[np.ndarray], float], goal: float) -> np.ndarray:
        """Kept counts whose `value` (non-increasing as the knob grows) comes closest to `goal`: the
        knob's closest value, or between the two closest, some groups at one and the rest at the other."""
        lo, hi = self.span
        if value(self.kept(hi)) >= goal:
            return self.kept(hi)
        for _ in range(60):  # value(kept(hi)) < goal: find the step where value crosses it
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if value(self.kept(mid)) > goal else (lo, mid)
        above, below = self.kept(lo), self.kept(hi)
        # Rounding can make many groups step together between `lo` and `hi` (every group of one
        # width crosses a multiple at the same ratio): let them step one at a time, in group order.
        best, trial = above, above.copy()
        for g in np.flatnonzero(above != below):
            trial[g] = below[g]
            if abs(value(trial) - goal) < abs(value(best) - goal):
                best = trial.copy()
        return best


def _sliced_by(module: nn.Module, axis: str, width: int) -> list[str]:
    """Names of `module`'s own parameters whose size changes when the member loses a channel
    (found by slicing a shape-only copy, so `_layers` stays the one place that knows)."""
    trial = meta_copy(module)
    slice_member(trial, axis, torch.arange(width - 1, device="meta"))
    before = dict(module.named_parameters(recurse=False))
    return [n for n, p in trial.named_parameters(recurse=False) if p.numel() != before[n].numel()]


@dataclass(frozen=True)
class CostModel:
    """Params and FLOPs of the model as a function of how many channel positions each member loses.

    Every parameter of a member's module is one term: its size, its module's FLOPs when it is the
    weight of a leaf module (a conv or linear's multiply-adds scale exactly like its weight), and the
    members that slice it. Everything else (other modules, ops between layers) is constant.
    """

    members: tuple[Member, ...]
    widths: np.ndarray  # (M,) channels per member, unpruned
    params: np.ndarray  # (T,) elements per term
    flops: np.ndarray  # (T,) FLOPs per term
    axes: np.ndarray  # (T, A) member index slicing each term, M where none (fraction 1)
    base: tuple[int, int]  # unpruned (params, FLOPs)

    @staticmethod
    def build(model: nn.Module, graph: ChannelGraph, inputs: tuple[torch.Tensor, ...]) -> CostModel:
        """Profile `model` once at `inputs` (its training image size) on the meta device."""
        modules, per_module = dict(model.named_modules()), flops_by_module(model, inputs)
        members = tuple(graph.layout)
        slicers: dict[tuple[str, str], list[int]] = {}
        for i, m in enumerate(members):
            for name in _sliced_by(modules[m.module], m.axis, len(graph.layout[m])):
                slicers.setdefault((m.module, name), []).append(i)
        width = max(map(len, slicers.values()), default=1)
        params, flops, axes = [], [], []
        for (path, name), idx in slicers.items():
            module = modules[path]
            leaf = name == "weight" and next(module.children(), None) is None
            params.append(getattr(module, name).numel())
            flops.append(per_module.get(path, 0) if leaf else 0)
            axes.append(idx + [len(members)] * (width - len(idx)))
        return CostModel(
            members,
            np.array([len(graph.layout[m]) for m in members]),
            np.array(params, dtype=float),
            np.array(flops, dtype=float),
            np.array(axes, dtype=int).reshape(len(axes), width),
            (count_params(model), per_module[""]),
        )

    def estimate(self, lost: np.ndarray) -> tuple[float, float]:
        """(params, FLOPs) when member i loses `lost[i]` of its channel positions."""
        frac = np.append(1.0 - lost / self.widths, 1.0)[self.axes].prod(1)  # (T,)
        p0, f0 = self.base
        return p0 - self.params @ (1 - frac), f0 - self.flops @ (1 - frac)


def lost_table(alloc: Allocator, graph: ChannelGraph, cost: CostModel) -> Callable[[np.ndarray], np.ndarray]:
    """A function from kept counts per group to channel positions lost per member."""
    index = {m: i for i, m in enumerate(cost.members)}
    tables = []
    for (group, _), order in zip(alloc.ranked, alloc.orders, strict=True):
        rank = np.empty(group.size, dtype=int)
        rank[order] = np.arange(group.size)  # class i is the rank[i]-th to go
        where = {c: rank[i] for i, c in enumerate(group.classes)}
        idx, cum = [], []
        for m in group.members:
            ranks = [where[c] for c in graph.layout[m][graph.positions(group, m)].tolist()]
            idx.append(index[m])
            cum.append(np.concatenate([[0], np.cumsum(np.bincount(ranks, minlength=group.size))]))
        tables.append((np.array(idx), np.array(cum)))  # (members,), (members, size + 1)

    def lost(kept: np.ndarray) -> np.ndarray:
        out = np.zeros(len(cost.members))
        for (idx, cum), n in zip(tables, (alloc.sizes - kept).tolist(), strict=True):
            out[idx] += cum[:, n]
        return out

    return lost


@dataclass(frozen=True)
class Budget:
    """A params or FLOPs target and what was reached, as fractions of the original model."""

    metric: Metric
    target: float
    estimate: float  # from the cost model
    reached: float  # measured on the pruned shapes
    original: int  # params, or FLOPs at the model's image size

    def as_json(self) -> dict:
        return {
            "metric": self.metric.value,
            "target": self.target,
            "estimate": round(self.estimate, 6),
            "reached": round(self.reached, 6),
            "original": self.original,
        }


def meet_target(
    alloc: Allocator,
    graph: ChannelGraph,
    cost: CostModel,
    metric: Metric,
    target: float,
    measure: Measure | None = None,
) -> tuple[np.ndarray, Budget]:
    """Kept counts per group whose params or FLOPs (`metric`) come within 2% of `target` x the
    original, and the report; `measure` gives the real numbers (the estimate is trusted without)."""
    which = 0 if metric is Metric.PARAMS else 1
    lost = lost_table(alloc, graph, cost)
    original = cost.base[which]
    goal = target * original

    def value(kept: np.ndarray) -> float:
        return cost.estimate(lost(kept))[which]

    floor = value(alloc.kept(alloc.span[1])) / original
    if floor > target * (1 + TOLERANCE):
        limits = alloc.limits
        raise OptionError(
            f"`target_{metric.value}={target:g}` cannot be reached: removing every prunable channel the "
            f"limits allow (`max_ratio={limits.max_ratio:g}`, `min_channels={limits.min_channels}`, "
            f"`round_to={limits.round_to}`) leaves {floor:.3f} of the original {metric.value}. Ask for "
            f"{np.ceil(floor * 100) / 100:.2f} or more, raise `max_ratio`, or select more of the model "
            "(`blocks`, `layers`)."
        )

    def check(kept: np.ndarray) -> float:
        return float(measure(alloc.removed(kept))[which]) if measure else value(kept)

    kept, estimate, reached, met = converge(alloc, value, goal, check)
    if not met:
        raise OptionError(
            f"`target_{metric.value}={target:g}`: the closest allocation reaches {reached / original:.3f} "
            f"of the original {metric.value}, not within {TOLERANCE:.0%}; the steps are too coarse here. "
            "Lower `round_to` or select more of the model."
        )
    return kept, Budget(metric, target, float(estimate / original), float(reached / original), original)


def converge(
    alloc: Allocator,
    value: Callable[[np.ndarray], float],
    goal: float,
    check: Callable[[np.ndarray], float],
    tolerance: float = TOLERANCE,
    rounds: int = 3,
) -> tuple[np.ndarray, float, float, bool]:
    """Kept counts whose estimated `value` is the aim, checked for real (`check`) until the check is
    within `tolerance` of `goal` or `rounds` are spent: (kept, estimate, checked value, met), the
    closest round when none met it. After each miss the aim moves by the miss over the slope of the
    checked value against the estimate (1 at first, then measured from the last two rounds): what
    the estimate does not scale (ops it leaves out, a runtime's own speed) is corrected, not modelled."""
    aim, tried = goal, []
    for _ in range(rounds):
        kept = alloc.search(value, aim)
        estimate, reached = value(kept), check(kept)
        tried.append((abs(reached - goal), kept, estimate, reached))
        if abs(reached - goal) <= tolerance * goal:
            return kept, estimate, reached, True
        slope = 1.0
        if len(tried) > 1 and tried[-1][2] != tried[-2][2]:
            slope = (tried[-1][3] - tried[-2][3]) / (tried[-1][2] - tried[-2][2])
            slope = float(np.clip(slope, 0.25, 4.0))  # noise must not throw the aim far off
        aim += (goal - reached) / slope
    _, kept, estimate, reached = min(tried, key=lambda t: t[0])
    return kept, estimate, reached, False


def measurer(
    model: nn.Module,
    graph: ChannelGraph,
    inputs: tuple[torch.Tensor, ...],
    adapter: ModelAdapter = PLAIN,
) -> Measure:
    """A `Measure` that slices a shape-only (meta) copy of `model` and counts it at `inputs`, after
    `adapter.fix_attributes` brings Python attributes in line with the sliced widths."""

    def measure(removed: frozenset[int]) -> tuple[int, int]:
        trial, _ = pruned_copy(model, graph, removed, adapter, meta_copy)
        return count_params(trial), count_flops(trial, inputs)

    return measure
