"""Hull allocation: per-group ratios from measured curves of damage against FLOPs saved.

Scope: each selected group was pruned alone at a few ratios, and each point says how many FLOPs that
saved and how much damage it did (any metric's change for the worse; NaN counts as the worst).
`segments` keeps each group's lower convex hull through the unpruned point (0 saved, 0 damage) and
orders the hull segments by least damage per FLOP saved (ties: the lower ratios of every group first,
so equal curves give equal ratios). `HullAllocator` turns one knob, how many segments are taken (and
part of the next), into kept channels per group, so `allocate.meet_target` searches it like any
other allocator. Framework-free: groups, scores and numbers in, kept counts out.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yoloprune.graph.groups import Group
from yoloprune.importance import Ranking
from yoloprune.pruning.allocate import Allocator, Limits, fraction_of


@dataclass(frozen=True)
class Tradeoff:
    """One group pruned alone at each of `ratios`: the FLOPs that saved and the damage it did."""

    ratios: tuple[float, ...]  # increasing, in (0, 1]
    saved: tuple[float, ...]  # FLOPs saved at each ratio
    damage: tuple[float, ...]  # the metric's change for the worse at each ratio; NaN: the worst


@dataclass(frozen=True)
class Segment:
    """One step of a group's hull: from ratio `start` to `end` at `slope` damage per FLOP saved."""

    slope: float
    group: int  # index of the group in the allocator's order
    start: float
    end: float


def lower_hull(saved: np.ndarray, damage: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of the points (saved, damage), `saved` increasing; collinear
    points are kept so that equal slopes are taken one ratio step at a time.

    Example:
        >>> lower_hull(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 5.0, 2.0, 3.0]))
        [0, 2, 3]
    """
    hull: list[int] = []
    for i in range(len(saved)):
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = (saved[hull[-2]], damage[hull[-2]]), (saved[hull[-1]], damage[hull[-1]])
            if (x1 - x0) * (damage[i] - y0) - (y1 - y0) * (saved[i] - x0) < 0:  # hull[-1] lies above
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def segments(curves: Sequence[Tradeoff]) -> list[Segment]:
    """The hull segments of every curve, least damage per FLOP saved first (ties: lower ratios first).

    Example:
        >>> flat = Tradeoff((0.5, 1.0), (10.0, 20.0), (1.0, 2.0))
        >>> steep = Tradeoff((0.5,), (10.0,), (5.0,))
        >>> [(s.group, s.start, s.end) for s in segments([steep, flat])]
        [(1, 0.0, 0.5), (1, 0.5, 1.0), (0, 0.0, 0.5)]
    """
    out = []
    for gi, c in enumerate(curves):
        saved = np.array([0.0, *c.saved], dtype=float)
        damage = np.nan_to_num(np.array([0.0, *c.damage], dtype=float), nan=1e30, posinf=1e30)
        ratio = np.array([0.0, *c.ratios])
        rising = [0] + [i for i in range(1, len(saved)) if saved[i] > saved[:i].max()]  # more FLOPs saved
        idx = [rising[j] for j in lower_hull(saved[rising], damage[rising])]
        for a, b in itertools.pairwise(idx):
            slope = (damage[b] - damage[a]) / (saved[b] - saved[a])
            out.append((slope, ratio[a], gi, ratio[a], ratio[b]))
    return [Segment(float(slope), gi, float(start), float(end)) for slope, _, gi, start, end in sorted(out)]


@dataclass(frozen=True)
class HullAllocator(Allocator):
    """Kept channels per group as a function of one knob: how many hull segments are taken, cheapest
    (least damage per FLOP saved) first; the knob's fraction takes that part of the next segment.

    Example:
        >>> ranked = [(Group(0, tuple(range(10)), (), ()), Ranking(np.arange(10.0)))]
        >>> a = HullAllocator.build(ranked, Limits(1.0), [Tradeoff((0.5,), (5.0,), (1.0,))])
        >>> a.span, a.kept(0.0).tolist(), a.kept(0.6).tolist(), a.kept(1.0).tolist()
        ((0.0, 1.0), [10], [7], [5])
    """

    segment_group: tuple[int, ...] = ()  # group index of each segment, in the order they are taken
    segment_start: tuple[float, ...] = ()  # ratio where each segment starts
    segment_end: tuple[float, ...] = ()  # and ends

    @classmethod
    def build(
        cls, ranked: Sequence[tuple[Group, Ranking]], limits: Limits, curves: Sequence[Tradeoff]
    ) -> HullAllocator:
        """The allocator over `ranked` groups whose curves (in the same order) are `curves`."""
        order = segments(curves)
        return cls(
            ranked,
            limits,
            False,
            tuple(s.group for s in order),
            tuple(s.start for s in order),
            tuple(s.end for s in order),
        )

    @property
    def span(self) -> tuple[float, float]:
        return 0.0, float(len(self.segment_end))

    def kept(self, knob: float) -> np.ndarray:
        n = min(int(knob), len(self.segment_end))
        ratios = np.zeros(len(self.sizes))
        np.maximum.at(ratios, np.asarray(self.segment_group[:n], dtype=int), self.segment_end[:n])
        if n < len(self.segment_end):
            g, lo, hi = self.segment_group[n], self.segment_start[n], self.segment_end[n]
            ratios[g] = max(ratios[g], lo + (knob - n) * (hi - lo))
        return self.limits.kept(self.sizes, self.sizes - fraction_of(self.sizes, ratios), self.widths)
