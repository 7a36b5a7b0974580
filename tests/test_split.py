"""`depth="auto"`: one search over blocks and channels, with the prediction distortion as the common
currency; the search itself, the distortion, and prune's use of both (proof, plan, replay, errors)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from yoloprune.cli.commands import _prune_summary
from yoloprune.errors import OptionError
from yoloprune.pruning.depth import identity_masked
from yoloprune.pruning.options import PruneOptions
from yoloprune.pruning.split import Measured, distortion, grid, search_split
from yoloprune.workflows.steps import step_depth
from yoloprune.yolo.adapter import ULTRALYTICS
from yoloprune.yolo.api import excited_copy, prune
from yoloprune.yolo.depth import repeated_blocks
from yoloprune.yolo.io import load_model
from yoloprune.yolo.request import prediction_distortion, predictions

REPEATS = str(Path(__file__).parent / "data" / "repeats.yaml")


@pytest.mark.parametrize("best", range(11))
def test_the_search_finds_the_least_of_a_valley_in_few_evaluations(best):
    calls = []

    def evaluate(k: int) -> Measured:
        calls.append(k)
        return Measured(abs(k - best) + 0.01 * k)

    found, tried = search_split(10, evaluate)
    assert found == best
    assert len(calls) == len(set(calls)) <= 9  # 5 on the grid, then at most 4 around the best
    assert [s.blocks for s in tried] == sorted(calls)
    assert min(s.distortion for s in tried) == evaluate(best).mean


def test_fewer_blocks_within_one_standard_error_of_the_least_are_chosen():
    """A difference the images cannot tell apart does not justify removing more blocks."""
    means = {0: 0.31, 2: 0.30, 5: 0.29, 8: 0.35, 10: 0.40, 3: 0.30, 4: 0.295, 6: 0.30, 7: 0.32, 1: 0.33}
    for error, chosen in ((0.0, 5), (0.006, 4), (0.011, 2), (0.03, 0)):
        found, tried = search_split(10, lambda k, e=error: Measured(means[k], e))
        assert found == chosen, error
        assert min(tried, key=lambda s: s.distortion).blocks == 5  # the least is still found


def test_measured_is_a_mean_with_its_standard_error():
    m = Measured.of([0.1, 0.2, 0.3, 0.4])
    assert m.mean == pytest.approx(0.25) and m.error == pytest.approx(0.0645497, rel=1e-5)
    assert Measured.of([0.3]) == Measured(0.3, 0.0)


def test_infeasible_splits_are_kept_with_their_reason_and_never_chosen():
    def evaluate(k: int) -> Measured:
        if k < 3:
            raise OptionError(f"channels alone cannot reach it with {k} blocks")
        return Measured(-k if k <= 8 else 100.0)

    found, tried = search_split(10, evaluate)
    assert found == 8
    cannot = {s.blocks: s.reason for s in tried if s.distortion is None}
    assert cannot[0] == "channels alone cannot reach it with 0 blocks" and set(cannot) == {0, 2}


def test_no_feasible_split_quotes_the_channel_only_error():
    def evaluate(k: int) -> Measured:
        raise OptionError(f"too far with {k}")

    message = "tried removing 0 to 4 whole blocks before the channels, and no split meets the target. "
    with pytest.raises(OptionError, match=re.escape(message + "Without blocks: too far with 0")):
        search_split(4, evaluate)


def test_grid_spans_every_count_without_repeats():
    assert grid(10) == [0, 2, 5, 8, 10] and grid(2) == [0, 1, 2] and grid(0) == [0]
    assert all(g[0] == 0 and g[-1] == n for n in range(20) for g in [grid(n)])


def test_distortion_weighs_every_channel_alike():
    y = torch.tensor([[[1.0, -1.0], [100.0, 300.0]]])  # (B, C, N): a score beside a box
    assert distortion([y], [y]) == 0.0
    assert distortion([y * 1.1], [y]) == pytest.approx(0.1)
    off = y.clone()
    off[0, 0] += 1.0  # the small channel wrong by its own size, the large one right
    assert distortion([off], [y]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shapes"):
        distortion([y[:, :1]], [y])


def test_auto_needs_a_target_to_split():
    for kwargs in ({"ratio": 0.5}, {}):
        with pytest.raises(OptionError, match="depth='auto' chooses how many blocks"):
            PruneOptions(depth="auto", **kwargs)
    assert PruneOptions(target_latency="0.5x", depth="auto").depth == "auto"
    assert step_depth("auto", 2, 3) == "auto"


@pytest.fixture(scope="module")
def signal_model() -> torch.nn.Module:
    """The repeats topology with every channel carrying signal, so each split distorts differently."""
    return excited_copy(load_model(REPEATS).model)


def test_auto_chooses_the_least_distorting_split_proves_it_and_replays(signal_model, tmp_path):
    options = PruneOptions(target_flops=0.3, depth="auto")
    r = prune(signal_model, options, check_onnx=False)
    assert r.ok and r.options == options and abs(r.plan.budget.reached - 0.3) <= 0.3 * 0.02
    feasible = [s for s in r.splits if s.distortion is not None]
    least = min(feasible, key=lambda s: (s.distortion, s.blocks))
    chosen = min(s.blocks for s in feasible if s.distortion <= least.distortion + least.error)
    assert len({s.distortion for s in feasible}) > 1  # the currency tells the splits apart
    assert all(s.error > 0 for s in feasible)  # two images: a mean and its standard error
    assert (len(r.depth.removed) if r.depth else 0) == chosen
    images = [ULTRALYTICS.example_inputs(signal_model, batch=2, seed=0)]  # what the search measures on
    reference = predictions(signal_model, images)
    alone = {  # the distortion of removing each block alone: the search removes the least first
        b.path: prediction_distortion(identity_masked(signal_model, b.blocks), images, reference).mean
        for b in repeated_blocks(signal_model)
        if b.removable
    }
    removed = set(r.depth.paths if r.depth else ())
    assert all(alone[p] <= alone[q] for p in removed for q in set(alone) - removed)
    doc = json.loads(r.plan_json())
    assert doc["depth_search"] == [s.as_json() for s in r.splits]
    assert doc.get("removed_blocks", []) == list(r.depth.paths if r.depth else ())
    again = prune(signal_model, plan=r.plan_json(), check_onnx=False)  # replays the blocks, no search
    assert again.ok and not again.splits
    mine, theirs = r.model.state_dict(), again.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert "split       auto: " in _prune_summary(r)


def test_auto_reaches_a_target_channels_alone_cannot(signal_model):
    tight = PruneOptions(target_flops=0.5, max_ratio=0.3)
    with pytest.raises(OptionError, match="cannot be reached"):
        prune(signal_model, tight, check_onnx=False)
    r = prune(signal_model, PruneOptions(target_flops=0.5, max_ratio=0.3, depth="auto"), check_onnx=False)
    assert r.ok and r.depth is not None and abs(r.plan.budget.reached - 0.5) <= 0.5 * 0.02
    assert r.splits[0].blocks == 0 and "cannot be reached" in r.splits[0].reason
