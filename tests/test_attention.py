"""Attention is pruned exactly: YOLO11's `Attention` by q/k pairs and value dims (every head alike),
YOLO12's `AAttn` by whole heads, each proved by the masked-original check like every other group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from plain_ultralytics import run_without_yoloprune
from torch import nn
from ultralytics.nn.modules import block as B

from yoloprune.graph.adapter import ModelAdapter
from yoloprune.graph.groups import build_groups
from yoloprune.graph.trace import trace
from yoloprune.pruning.options import PruneOptions
from yoloprune.pruning.verify import prune_and_compare
from yoloprune.yolo.api import analyze, prune
from yoloprune.yolo.attention import attention_parts, fix_attention, module_rule

torch.manual_seed(0)


class Wrapped(nn.Module):
    """A conv, an attention block with its residual, and a conv: the smallest model around one."""

    def __init__(self, block: nn.Module, c: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.block = block
        self.out = nn.Conv2d(c, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.out(x + self.block(x))


def fix(model: nn.Module) -> None:
    for m in model.modules():
        fix_attention(m)


RULED = ModelAdapter(fix_attributes=fix, module_rule=module_rule)
INPUT = (torch.rand(2, 3, 16, 16),)


def excited(model: nn.Module) -> nn.Module:
    """Random affine terms on every norm, so every channel carries signal into the check."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.1, 0.1)
    return model.eval()


def group_of(graph, module: str, axis: str = "out"):
    (group,) = [g for g in graph.groups_of(module, axis) if any(m.axis == "out" for m in g.members)][:1]
    return group


def test_without_the_rule_the_attention_is_pinned_by_the_tracer():
    model = excited(Wrapped(B.Attention(64, num_heads=2), 64))
    graph = build_groups(trace(model, INPUT))
    qkv = graph.groups_of("block.qkv.conv", "out")
    assert qkv and not any(g.prunable for g in qkv)


def test_a_query_key_pair_goes_from_every_head_and_the_result_is_exact():
    model = excited(Wrapped(B.Attention(64, num_heads=2), 64))
    graph = build_groups(trace(model, INPUT, RULED))
    pairs = [g for g in graph.groups_of("block.qkv.conv", "out") if g.prunable and len(g.members) == 2]
    assert len(pairs) == 1 and pairs[0].size == 16  # key_dim 16, two heads, q and k of each
    assert pairs[0].width == 4  # each class: q and k of one dim, in both heads
    group = pairs[0]
    removed = frozenset(group.classes[:3])
    pruned, widths, eq = prune_and_compare(model, graph, removed, INPUT, RULED)
    assert eq.ok and eq.max_rel_error < 1e-5
    attn = pruned.block
    assert (attn.key_dim, attn.head_dim, attn.num_heads) == (13, 32, 2)
    assert attn.scale == model.block.scale  # fixed at construction: this is why the prune is exact
    assert widths["block.qkv.conv.out"] == (128, 116)


def test_value_dims_go_with_the_blocks_channels_in_every_head():
    model = excited(Wrapped(B.Attention(64, num_heads=2), 64))
    graph = build_groups(trace(model, INPUT, RULED))
    (stream,) = [g for g in graph.groups_of("block.proj.conv", "in") if g.prunable]
    assert {"stem", "block.qkv.conv", "block.pe.conv", "block.proj.conv", "out"} <= {
        m.module for m in stream.members
    }
    assert stream.size == 32 and stream.width == 2  # value dim d of both heads, and two block channels
    removed = frozenset(stream.classes[::4])
    pruned, _, eq = prune_and_compare(model, graph, removed, INPUT, RULED)
    assert eq.ok
    assert (pruned.block.head_dim, pruned.block.key_dim) == (24, 16)
    assert pruned(*INPUT).shape == (2, 4, 16, 16)


@pytest.mark.parametrize("area", [1, 4])
def test_an_area_attention_head_goes_whole(area):
    model = excited(Wrapped(B.AAttn(96, num_heads=3, area=area), 96))
    graph = build_groups(trace(model, INPUT, RULED))
    (heads,) = [g for g in graph.groups_of("block.qkv.conv", "out") if g.prunable]
    assert heads.size == 3 and heads.width == 32  # a class is one head: 32 channels of pe and proj
    pruned, widths, eq = prune_and_compare(model, graph, frozenset(heads.classes[1:2]), INPUT, RULED)
    assert eq.ok and eq.max_rel_error < 1e-5
    assert (pruned.block.num_heads, pruned.block.head_dim, pruned.block.all_head_dim) == (2, 32, 64)
    assert widths["block.qkv.conv.out"] == (288, 192)


def test_a_rule_that_forgets_a_coupling_is_caught_by_the_check():
    """The proof does not trust the rule: a rule that lets q and k go separately fails it."""

    def careless(glue, m, x):  # reports value dims but not that q and k meet in their product
        qkv, out, v = attention_parts(glue, m, x)
        heads = glue.elems(qkv).reshape(m.num_heads, -1)
        qe, ke, ve = np.split(heads, [m.key_dim, 2 * m.key_dim], axis=1)
        for e in (qe, ke, ve):
            for head in e[1:]:
                glue.couple(e[0], head)
        glue.couple(ve, glue.elems(x))
        glue.label(out, ve, [qkv], "careless")
        glue.label(v, ve, [qkv], "careless")
        return m.proj(out + m.pe(v))

    model = excited(Wrapped(B.Attention(64, num_heads=2), 64))
    adapter = ModelAdapter(
        fix_attributes=fix, module_rule=lambda m: careless if type(m) is B.Attention else None
    )
    graph = build_groups(trace(model, INPUT, adapter))
    queries = [g for g in graph.groups_of("block.qkv.conv", "out") if g.prunable and len(g.members) == 2]
    assert queries[0].size == 32  # q and k dims, uncoupled: 2 x 16 classes over the same layers
    with pytest.raises(RuntimeError):  # q loses a dim, k keeps it: the product no longer fits
        prune_and_compare(model, graph, frozenset(queries[0].classes[:1]), INPUT, adapter)


@pytest.mark.parametrize("config", ["yolo11n.yaml", "yolo12n.yaml"])
def test_shipped_attention_models_prune_inside_attention_and_pass_every_check(config):
    a = analyze(config)
    attention = [n for n, m in a.model.named_modules() if type(m) in (B.Attention, B.AAttn)]
    assert attention
    pinned = {m.module for g in a.pinned() for m in g.members}
    assert not any(p.startswith(tuple(n + "." for n in attention)) for p in pinned)
    result = prune(config, PruneOptions(0.5, importance="random"), analysis=a)
    assert all(c.ok for c in result.checks), result.checks
    modules = dict(result.model.named_modules())
    for name in attention:
        before, after = dict(a.model.named_modules())[name], modules[name]
        assert after.qkv.conv.out_channels < before.qkv.conv.out_channels


def test_heads_survive_round_to():
    """`round_to` counts channels: a 32-channel head is a multiple of 8 on its own."""
    a = analyze("yolo12n.yaml", run_probe=False)
    result = prune(
        "yolo12n.yaml", PruneOptions(0.5, round_to=8, importance="random"), analysis=a, check_onnx=False
    )
    qkv = [m for m in result.model.modules() if type(m) is B.AAttn]
    assert any(m.num_heads < 2 or m.all_head_dim % 32 == 0 for m in qkv)
    assert sum(m.num_heads for m in qkv) < sum(m.num_heads for m in a.model.modules() if type(m) is B.AAttn)


def test_a_pruned_attention_model_loads_and_runs_in_plain_ultralytics(tmp_path: Path):
    result = prune("yolo11n.yaml", PruneOptions(0.5, importance="random"), check_onnx=False)
    path = tmp_path / "pruned-yolo11n.pt"
    result.save(path)
    out = run_without_yoloprune(
        """
        import sys, torch
        from ultralytics import YOLO
        from ultralytics.nn.modules.block import Attention
        model = YOLO(sys.argv[1]).model.eval()
        attn = next(m for m in model.modules() if type(m) is Attention)
        model(torch.zeros(1, 3, 64, 64))
        print(attn.key_dim, attn.head_dim, attn.num_heads)
        """,
        path,
    )
    key_dim, head_dim, heads = map(int, out.split())
    assert (key_dim, head_dim, heads) == (16, 32, 2)
