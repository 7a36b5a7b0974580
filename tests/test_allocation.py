"""Allocation and budgets: local and global spreading, per-group limits, params/FLOPs targets on
real YOLO models, the dry run, and the CLI flags end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from yoloprune.cli import main
from yoloprune.errors import YoloPruneError
from yoloprune.graph.groups import Group
from yoloprune.importance import Ranking
from yoloprune.pruning.allocate import Allocator, Limits, measurer
from yoloprune.pruning.choose import choose, select_groups
from yoloprune.pruning.count import count_flops
from yoloprune.pruning.options import PruneOptions
from yoloprune.pruning.plan import plan_options
from yoloprune.yolo.adapter import ULTRALYTICS
from yoloprune.yolo.api import analyze, prune
from yoloprune.yolo.io import load_model


@given(
    size=st.integers(1, 300),
    want=st.integers(0, 300),
    max_ratio=st.floats(0.05, 1.0),
    min_channels=st.integers(1, 40),
    round_to=st.integers(1, 16),
)
def test_limits_always_hold(size, want, max_ratio, min_channels, round_to):
    (kept,) = Limits(max_ratio, min_channels, round_to).kept(np.array([size]), np.array([min(want, size)]))
    assert kept == size or (kept % round_to == 0 and 0 < kept < size)
    assert size - kept <= int(size * max_ratio + 1e-9)  # never more than max_ratio removed
    assert kept >= min(size, min_channels)


def ranked(*scores: list[float]) -> list[tuple[Group, Ranking]]:
    out, first = [], 0
    for i, s in enumerate(scores):
        out.append((Group(i, tuple(range(first, first + len(s))), (), ()), Ranking(np.array(s))))
        first += len(s)
    return out


def test_global_ranks_normalised_scores_across_groups_and_local_does_not():
    flat, spiky = [1.0, 1.0, 1.0, 1.0], [0.1, 1.9, 1.0, 1.0]  # same mean, one outlier in `spiky`
    limits = Limits(max_ratio=1.0)
    glob, local = Allocator(ranked(flat, spiky), limits, True), Allocator(ranked(flat, spiky), limits, False)
    assert glob.kept(1).tolist() == [4, 3] and glob.removed(glob.kept(1)) == {4}  # the 0.1 goes first
    assert local.kept(0.25).tolist() == [3, 3]
    # equal scores go from every group in turn, in proportion to its size
    even = Allocator(ranked([1.0] * 8, [5.0] * 4), limits, True)
    assert even.kept(6).tolist() == [4, 2]


def test_global_ratio_removes_that_fraction_of_all_channels():
    alloc = Allocator(ranked([1.0, 2.0, 3.0, 4.0], [1.0] * 8, [0.5, 1.5] * 6), Limits(), True)
    kept = alloc.search(lambda k: float(k.sum()), 0.5 * alloc.sizes.sum())
    assert kept.sum() == 12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"ratio": 0.5, "target_flops": 0.5},
            "give one of ratio, target_flops, target_params and target_latency, not ratio",
        ),
        ({"target_flops": 0.5, "target_params": 0.5}, "not target_flops and target_params"),
        ({"target_flops": 1.5}, "target_flops=1.5 is outside (0, 1]"),
        ({"ratio": 0.95}, "pass max_ratio=0.95 as well"),
        ({"max_ratio": 0.0}, "max_ratio=0.0 is outside (0, 1]"),
        ({"min_channels": 0}, "min_channels=0 must be 1 or more"),
        ({"allocation": "globl"}, "unknown allocation='globl'; choose one of local, global"),
        ({"aggregation": "max"}, "unknown aggregation='max'; choose one of mean, sum"),
        ({"ratio": "auto", "allocation": "global"}, "cannot be combined with allocation='global'"),
    ],
)
def test_options_refuse_bad_values(kwargs, message):
    with pytest.raises(YoloPruneError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PruneOptions(**kwargs)


def test_old_plans_record_no_new_options():
    old = json.dumps({"version": 1, "options": {"ratio": 0.5, "importance": "l2", "round_to": 1, "seed": 0}})
    assert plan_options(old) == PruneOptions(0.5, importance="l2")


@pytest.fixture(scope="module")
def v8n():
    return analyze("yolov8n.yaml")


def kept_per_group(result) -> list[tuple[int, int]]:
    """(size, kept) of every prunable group."""
    removed = result.plan.removed
    return [(g.size, g.size - len(removed.intersection(g.classes))) for g in result.analysis.graph.groups]


def assert_flops_target(r, target: float) -> None:
    reached = r.flops[1] / r.flops[0]
    assert abs(reached - target) <= 0.02 * target, reached
    assert r.plan.budget.reached == pytest.approx(reached) and r.plan.budget.target == target


@pytest.mark.parametrize("allocation", ["global", "local"])
def test_flops_target_on_yolov8n(v8n, allocation):
    r = prune(None, PruneOptions(target_flops=0.5, allocation=allocation), analysis=v8n)
    assert_flops_target(r, 0.5)
    assert r.equivalence.ok and r.structural.ok


@pytest.mark.parametrize(
    ("target", "allocation", "round_to"),
    [
        (0.5, "global", 1),
        # One ratio for every group, multiples of 8: the groups of each width cross a multiple at the
        # same ratio, so the closest one knob reaches is 0.553; groups step one at a time between.
        (0.533313, "local", 8),
    ],
)
def test_flops_target_on_yolov8s(target, allocation, round_to):
    r = prune("yolov8s.yaml", PruneOptions(target_flops=target, allocation=allocation, round_to=round_to))
    assert_flops_target(r, target)
    assert all(kept % round_to == 0 or kept == size for size, kept in kept_per_group(r))


def test_params_target_with_limits_and_rounding(v8n):
    r = prune(
        None,
        PruneOptions(
            target_params=0.4,
            allocation="global",
            importance="fpgm",
            max_ratio=0.7,
            min_channels=12,
            round_to=8,
        ),
        analysis=v8n,
    )
    reached = r.params[1] / r.params[0]
    assert abs(reached - 0.4) <= 0.02 * 0.4 and r.plan.budget.reached == pytest.approx(reached)
    pruned = [(size, kept) for size, kept in kept_per_group(r) if kept < size]
    assert pruned
    for size, kept in pruned:
        assert kept % 8 == 0 and kept >= 12 and size - kept <= int(size * 0.7), (size, kept)


def test_target_corrects_for_costs_the_estimate_cannot_scale(v8n):
    """If the real count differs from the cost model (an op it does not scale), the aim shifts."""
    x = (torch.zeros(1, 3, 640, 640),)
    real = measurer(v8n.model, v8n.graph, x, ULTRALYTICS)
    extra = 0.1 * count_flops(v8n.model, x)

    def measure(removed: frozenset[int]) -> tuple[int, int]:
        params, flops = real(removed)
        return params, int(flops + extra)

    options = PruneOptions(target_flops=0.5, allocation="global")
    plan = choose(v8n.graph, v8n.model, select_groups(v8n.graph, None), options, inputs=x, measure=measure)
    assert abs(plan.budget.reached - 0.5) <= 0.01 and plan.budget.estimate == pytest.approx(0.4, abs=0.01)


def test_unreachable_target_says_the_lowest_reachable(v8n):
    with pytest.raises(YoloPruneError, match=r"cannot be reached.*leaves 0\.\d+ of the original flops"):
        prune(None, PruneOptions(target_flops=0.2, allocation="global", max_ratio=0.3), analysis=v8n)


def test_dry_run_prints_every_block_and_writes_nothing(tmp_path, capsys):
    argv = ["prune", "yolov8n.yaml", "--target-flops", "0.5", "--global", "--dry-run"]
    assert main([*argv, "--out", str(tmp_path / "p.pt"), "--plan", str(tmp_path / "plan.json")]) == 0
    assert list(tmp_path.iterdir()) == []
    out = capsys.readouterr().out
    assert "Dry run: would prune yolov8n.yaml (every block; flops target 0.5, global allocation" in out
    assert "0.50x" in out and "met within 2%" in out and "dry run: nothing written" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:5].strip().isdigit()}
    assert set(rows) == {str(i) for i in range(23)}
    assert rows["2"][1] == "C2f" and "->" in rows["2"]  # channels, params and FLOPs before -> after
    assert rows["10"][1:] == ["Upsample", "0", "0", "0.00", "G"]


def test_cli_budget_flags_end_to_end_and_replay(tmp_path, capsys):
    out, plan = tmp_path / "p.pt", tmp_path / "plan.json"
    flags = ["--global", "--max-ratio", "0.8", "--min-channels", "4", "--round-to", "4"]
    flags += ["--importance", "l2", "--aggregation", "sum", "--no-onnx-check"]
    argv = ["prune", "yolov8n.yaml", "--target-params", "0.6", *flags]
    assert main([*argv, "--out", str(out), "--plan", str(plan)]) == 0
    doc = json.loads(plan.read_text())
    assert doc["options"]["allocation"] == "global" and doc["options"]["aggregation"] == "sum"
    assert doc["options"]["target_params"] == 0.6 and doc["options"]["ratio"] is None
    assert doc["budget"]["metric"] == "params" and abs(doc["budget"]["reached"] - 0.6) <= 0.012
    assert "params target 0.6, global allocation, importance l2" in capsys.readouterr().out
    assert load_model(str(out)).ckpt["yoloprune"]["options"]["allocation"] == "global"
    again = tmp_path / "again.pt"
    replay = ["prune", "yolov8n.yaml", "--plan-in", str(plan), "--no-onnx-check"]
    assert main([*replay, "--out", str(again)]) == 0
    assert load_model(str(again)).ckpt["yoloprune"]["plan"] == load_model(str(out)).ckpt["yoloprune"]["plan"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ratio", "0.5", "--target-flops", "0.5"], "not allowed with argument"),
        (["--target-flops", "0", "--dry-run"], "--target-flops 0.0 is outside (0, 1]"),
        (["--ratio", "0.5", "--max-ratio", "1.5", "--dry-run"], "--max-ratio 1.5 is outside (0, 1]"),
        (["--ratio", "0.5"], "--out PRUNED.pt is required, or --dry-run"),
    ],
)
def test_cli_refuses_bad_budgets(argv, message, capsys):
    assert main(["prune", "yolov8n.yaml", *argv]) == 2
    assert message in capsys.readouterr().err
