"""The hull allocator (pruning/hull.py), framework-free: lower hulls, the order segments are taken in,
and kept channels per group as the knob grows."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from yoloprune.graph.groups import Group
from yoloprune.importance import Ranking
from yoloprune.pruning.allocate import Limits
from yoloprune.pruning.hull import HullAllocator, Tradeoff, lower_hull, segments


def ranked(*sizes: int) -> list[tuple[Group, Ranking]]:
    out, first = [], 0
    for i, n in enumerate(sizes):
        out.append((Group(i, tuple(range(first, first + n)), (), ()), Ranking(np.arange(float(n)))))
        first += n
    return out


@given(st.lists(st.floats(-100, 100), min_size=1, max_size=12))
def test_every_point_lies_on_or_above_the_lower_hull(damage):
    saved, damage = np.arange(len(damage), dtype=float), np.array(damage)
    hull = lower_hull(saved, damage)
    assert hull[0] == 0 and hull[-1] == len(saved) - 1 and hull == sorted(hull)
    assert np.all(damage >= np.interp(saved, saved[hull], damage[hull]) - 1e-9)


def test_segments_go_cheapest_first_and_a_point_above_the_hull_is_skipped():
    bumpy = Tradeoff((0.25, 0.5, 0.75), (10.0, 20.0, 30.0), (9.0, 2.0, 3.0))  # 0.25 lies above the hull
    steep = Tradeoff((0.5,), (10.0,), (5.0,))
    order = [(s.group, s.start, s.end) for s in segments([steep, bumpy])]
    assert order == [(1, 0.0, 0.5), (1, 0.5, 0.75), (0, 0.0, 0.5)]


def test_nan_damage_is_the_worst_and_a_ratio_that_saves_nothing_more_is_skipped():
    broken = Tradeoff((0.5,), (10.0,), (float("nan"),))
    flat = Tradeoff((0.5, 0.75), (10.0, 10.0), (1.0, 0.5))  # 0.75 saves no more than 0.5
    order = [(s.group, s.end) for s in segments([broken, flat])]
    assert order == [(1, 0.5), (0, 0.5)]


def test_equal_curves_are_taken_one_ratio_step_at_a_time():
    curve = Tradeoff((0.25, 0.5), (10.0, 20.0), (1.0, 2.0))
    a = HullAllocator.build(ranked(8, 8), Limits(1.0), [curve, curve])
    assert a.span == (0.0, 4.0)
    assert [a.kept(k).tolist() for k in (0, 1, 2, 3, 4)] == [[8, 8], [6, 8], [6, 6], [4, 6], [4, 4]]
    assert a.kept(2.5).tolist() == [5, 6]  # half of the next segment: ratio 0.375 of 8 channels


def test_the_limits_hold_at_every_knob():
    a = HullAllocator.build(
        ranked(16, 10), Limits(max_ratio=0.5, round_to=4), [Tradeoff((0.9,), (5.0,), (1.0,))] * 2
    )
    for knob in np.linspace(*a.span, 9):
        kept = a.kept(knob)
        assert all(k == n or (k % 4 == 0 and n - k <= n // 2) for k, n in zip(kept, a.sizes, strict=True))
