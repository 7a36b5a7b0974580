"""The channel tracer and grouping on small hand-built torch models (no Ultralytics involved)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from yoloprune.graph.groups import build_groups
from yoloprune.graph.ops import KNOWN_OPS, OpKind, op_kind
from yoloprune.graph.trace import Member, trace
from yoloprune.pruning.apply import apply_plan
from yoloprune.pruning.choose import choose, select_groups
from yoloprune.pruning.plan import PruneOptions
from yoloprune.pruning.verify import compare_outputs, excite, masked_copy

X = (torch.randn(2, 3, 16, 16),)


def cbr(c1: int, c2: int, k: int = 3, g: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c1, c2, k, padding=k // 2, groups=g, bias=False), nn.BatchNorm2d(c2), nn.SiLU()
    )


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.head = cbr(3, 8), cbr(8, 8), cbr(8, 8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        y = y + self.c(self.b(y))
        return self.head(y)


class Split(nn.Module):
    """C2f-like: chunk, a residual branch on one half, concat of all pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.cv1, self.m, self.cv2 = cbr(3, 16, 1), cbr(8, 8), nn.Conv2d(24, 4, 1)

    def forward(self, x):
        a, b = self.cv1(x).chunk(2, 1)
        return self.cv2(torch.cat([a, b, b + self.m(b)], 1))


class FixedSplit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cv1, self.cv2 = cbr(3, 12, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        a, b = self.cv1(x).split((8, 4), 1)
        return self.cv2(a) + b.mean(1, keepdim=True)


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw, self.dw, self.out = cbr(3, 8, 1), cbr(8, 8, 3, g=8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.out(self.dw(self.pw(x)))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw, self.gc, self.out = cbr(3, 8, 1), cbr(8, 8, 3, g=2), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.out(self.gc(self.pw(x)))


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.fc1, self.fc2 = cbr(3, 8), nn.Linear(8, 6), nn.Linear(6, 5)

    def forward(self, x):
        y = nn.functional.adaptive_avg_pool2d(self.body(x), 1).flatten(1)  # (B, 8)
        return self.fc2(torch.relu(self.fc1(y)))


class Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = cbr(3, 8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.b(torch.cummax(self.a(x), dim=2).values)


class ChannelSlice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = cbr(3, 8), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.b(self.a(x)[:, :4])


class Gate(nn.Module):
    """Broadcast multiply by a 1-channel attention map and a per-channel learned scale."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.att, self.b = cbr(3, 8), nn.Conv2d(8, 1, 1), nn.Conv2d(8, 4, 1)
        self.scale = nn.Parameter(torch.rand(1, 8, 1, 1) + 0.5)

    def forward(self, x):
        y = self.a(x)
        return self.b(y * torch.sigmoid(self.att(y)) * self.scale)


def graph_of(model: nn.Module):
    return build_groups(trace(model, X))


def group_with(graph, module: str, axis: str = "out"):
    (g,) = graph.groups_of(module, axis)
    return g


def prune_all(model: nn.Module, ratio: float = 0.5, importance: str = "l1"):
    model = excite(model.eval(), X)
    graph = graph_of(model)
    plan = choose(graph, model, select_groups(graph, None), PruneOptions(ratio=ratio, importance=importance))
    pruned = copy.deepcopy(model)
    apply_plan(pruned, graph, plan.removed)
    return graph, plan, pruned, compare_outputs(pruned, masked_copy(model, graph, plan.removed), X)


def test_conv_bn_and_consumer_form_one_group():
    g = graph_of(Residual())
    first = group_with(g, "a.0")
    assert Member("a.1", "out") in first.members and Member("b.0", "in") in first.members
    assert first.prunable and first.size == 8


def test_residual_add_couples_both_operands():
    g = graph_of(Residual())
    grp = group_with(g, "a.0")
    assert Member("c.0", "out") in grp.members and Member("head", "in") in grp.members
    assert group_with(g, "b.0").members == (Member("b.0", "out"), Member("b.1", "out"), Member("c.0", "in"))


def test_chunk_couples_equal_halves_index_wise():
    g = graph_of(Split())
    grp = group_with(g, "cv1.0")
    assert grp.size == 8  # 16 channels in two coupled halves
    assert len(g.positions(grp, Member("cv1.0", "out"))) == 16
    assert [(m.module, a, b) for m, a, b in g.ranges(grp) if m.module == "cv2"] == [("cv2", 0, 24)]


def test_fixed_size_split_pins_with_reason():
    g = graph_of(FixedSplit())
    groups = g.groups_of("cv1.0", "out")
    assert len(groups) == 2 and not any(grp.prunable for grp in groups)
    assert all(any("fixed sizes [8, 4]" in p.reason for p in grp.pinned_by) for grp in groups)


def test_depthwise_conv_passes_channels_through():
    g = graph_of(Depthwise())
    grp = group_with(g, "pw.0")
    assert Member("dw.0", "out") in grp.members and grp.prunable


def test_grouped_conv_pins():
    g = graph_of(Grouped())
    assert any("groups=2" in p.reason for p in group_with(g, "pw.0").pinned_by)


def test_unknown_op_pins_and_names_the_op():
    g = graph_of(Unknown())
    reasons = [p.reason for p in group_with(g, "a.0").pinned_by]
    assert any("torch.cummax" in r and "not an op the tracer understands" in r for r in reasons)


def test_channel_slice_pins():
    g = graph_of(ChannelSlice())
    groups = g.groups_of("a.0", "out")  # channels 0-3 reach `b`, 4-7 reach nothing: both pinned
    assert len(groups) == 2
    assert all(any("fixed offsets [None:4]" in p.reason for p in grp.pinned_by) for grp in groups)


def test_model_output_is_pinned_and_named():
    g = graph_of(Residual())
    (pin,) = group_with(g, "head").pinned_by
    assert pin.member == "head" and "prediction" in pin.reason


def test_input_channels_are_pinned():
    g = graph_of(Residual())
    assert g.groups[0].pinned_by[0].reason == "model input channels"


def test_linear_after_flatten_is_coupled():
    g = graph_of(Classifier())
    body = group_with(g, "body.0")
    assert Member("fc1", "in") in body.members and body.prunable
    assert group_with(g, "fc1").prunable and not group_with(g, "fc2").prunable


def test_broadcast_gate_and_learned_scale():
    g = graph_of(Gate())
    grp = group_with(g, "a.0")
    assert Member("scale", "param:scale@1") not in grp.members  # named by its owner module ("")
    assert Member("", "param:scale@1") in grp.members and Member("att", "in") in grp.members
    assert not group_with(g, "att").prunable  # a 1-channel map is broadcast over 8 channels


def test_exclude_pins_with_reason():
    g = build_groups(trace(Residual(), X), exclude=("b",))
    assert any("excluded by the user" in p.reason for p in group_with(g, "b.0").pinned_by)


@pytest.mark.parametrize("cls", [Residual, Split, Depthwise, Classifier, Gate, FixedSplit, Grouped])
@pytest.mark.parametrize("importance", ["l1", "l2", "random"])
def test_prune_equals_masked_original(cls, importance):
    graph, plan, pruned, eq = prune_all(cls(), importance=importance)
    assert eq.ok, eq
    prunable = [g for g in graph.groups if g.prunable]
    assert len(plan.removed) == sum(g.size - (g.size - g.size // 2) for g in prunable)
    pruned(*X)  # still runs


def test_masking_check_can_fail():
    model = excite(Residual().eval(), X)
    graph, plan, pruned, _ = prune_all(model)
    wrong = copy.deepcopy(pruned)
    with torch.no_grad():
        wrong.b[0].weight.mul_(-1)
    assert not compare_outputs(wrong, masked_copy(model, graph, plan.removed), X).ok


def test_trace_restores_training_mode_and_leaves_no_hooks():
    model = Residual().train()
    trace(model, X)
    assert model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_op_registry_is_closed_and_identity_based():
    assert op_kind(torch.cat) is OpKind.CAT and op_kind(torch.Tensor.chunk) is OpKind.SPLIT
    assert op_kind(torch.cummax) is OpKind.UNKNOWN
    assert all(isinstance(k, OpKind) for k in KNOWN_OPS.values())


def test_classes_follow_channel_order():
    g = graph_of(Residual())
    grp = group_with(g, "a.0")
    assert np.array_equal(g.layout[Member("a.0", "out")], np.array(grp.classes))
