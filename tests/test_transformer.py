"""Transformer ops are pruned where that is exact and pinned with the exactness reason where it is
not: LayerNorm over the channel axis, nn.MultiheadAttention's one width, RT-DETR's MSDeformAttn
(value dims, every head alike) and the FFNs between them, proved by the masked-original check."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from ultralytics.nn.modules.transformer import AIFI, DeformableTransformerDecoderLayer

from yoloprune.graph.groups import build_groups
from yoloprune.graph.ops import OpKind
from yoloprune.graph.rules import ATTENTION_REASON, GROUP_NORM_REASON, LAYER_NORM_REASON
from yoloprune.graph.trace import Member, trace
from yoloprune.pruning.choose import choose, select_groups
from yoloprune.pruning.options import PruneOptions
from yoloprune.pruning.verify import excite, prune_and_compare
from yoloprune.yolo.adapter import ULTRALYTICS
from yoloprune.yolo.api import analyze, prune
from yoloprune.yolo.deformable import POINTS_REASON

X = (torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)),)
TRACER_WORDS = ("not an op the tracer understands", "could not follow", "cannot follow", "cannot align")


class Body(nn.Module):
    """A conv, `body` on its (B, C, H, W) output, and a conv head."""

    def __init__(self, body, c: int = 8, **layers: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.a = nn.Conv2d(3, c, 3, padding=1)
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self, self.a(x)))


def graph_of(model: nn.Module, adapter=ULTRALYTICS):
    return build_groups(trace(model, X, adapter))


def group_of(graph, module: str, axis: str = "out"):
    (group,) = graph.groups_of(module, axis)
    return group


def pruned_and_checked(model, graph, groups, adapter=ULTRALYTICS):
    """Remove half of `groups`' channels at random; the masked-original check must pass."""
    plan = choose(graph, model, groups, PruneOptions(ratio=0.5, importance="random"))
    assert plan.removed
    pruned, widths, eq = prune_and_compare(model, graph, plan.removed, X, adapter)
    assert eq.ok, eq
    return pruned, widths


def channels_last(m: Body, x: torch.Tensor) -> torch.Tensor:
    return m.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_layer_norm_over_the_channel_axis_pins_them_with_the_exactness_reason():
    model = Body(channels_last, norm=nn.LayerNorm(8)).eval()
    graph = graph_of(model)
    group = group_of(graph, "a")
    assert not group.prunable
    assert [(p.member, p.reason) for p in group.pinned_by] == [("norm", LAYER_NORM_REASON)]
    assert Member("norm", "param:weight@0") in group.members  # the norm is named in the group
    assert not any(n.kind is OpKind.UNKNOWN for n in graph.trace.nodes)


def test_layer_norm_over_other_axes_passes_the_channels_through():
    model = excite(Body(lambda m, x: m.norm(x), norm=nn.LayerNorm([8, 8])).eval(), X)
    graph = graph_of(model)
    group = group_of(graph, "a")
    assert group.prunable, group.pinned_by
    _, widths = pruned_and_checked(model, graph, [group])
    assert widths["a.out"] == (8, 4)


def test_group_norm_pins_the_channels_it_normalises_together():
    graph = graph_of(Body(lambda m, x: m.norm(x), norm=nn.GroupNorm(2, 8)).eval())
    assert [p.reason for p in group_of(graph, "a").pinned_by] == [GROUP_NORM_REASON]


class Encoder(nn.Module):
    """An nn.MultiheadAttention and an FFN on an un-normalised residual stream of pixel tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.mha = nn.MultiheadAttention(8, 2)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        t = y.flatten(2).permute(2, 0, 1)  # (L, B, C)
        t = t + self.mha(t, t, t, need_weights=False)[0]
        t = t + self.fc2(self.fc1(t).relu())
        return self.head(t.permute(1, 2, 0).unflatten(2, y.shape[2:]))


def test_multihead_attention_pins_its_one_width_with_the_module_reason_and_its_ffn_prunes():
    model = excite(Encoder().eval(), X)
    graph = graph_of(model)
    stream = group_of(graph, "a")
    assert [(p.member, p.reason) for p in stream.pinned_by] == [("mha", ATTENTION_REASON)]
    assert {Member("mha.out_proj", "in"), Member("mha.out_proj", "out")} <= set(stream.members)
    assert not any(n.kind is OpKind.UNKNOWN for n in graph.trace.nodes)
    ffn = group_of(graph, "fc1")
    assert ffn.prunable and set(ffn.members) == {Member("fc1", "out"), Member("fc2", "in")}
    pruned, _ = pruned_and_checked(model, graph, [ffn])
    assert pruned.fc1.out_features == 8


class Picker(nn.Module):
    """Tokens picked by advanced indexing (`features[batch, topk]`, as RT-DETR picks its queries)."""

    def __init__(self, index) -> None:
        super().__init__()
        self.index = index
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.a(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        return self.fc(self.index(t))


def test_rows_picked_by_advanced_indexing_keep_their_channels():
    rows = torch.tensor([0, 1, 1]), torch.tensor([5, 3, 60])
    model = excite(Picker(lambda t: t[rows]).eval(), X)
    graph = graph_of(model)
    group = group_of(graph, "a")
    assert group.prunable, group.pinned_by
    pruned_and_checked(model, graph, [group])


def test_channels_picked_by_advanced_indexing_are_pinned():
    graph = graph_of(Picker(lambda t: t[..., torch.tensor([7, 6, 5, 4, 3, 2, 1, 0])]).eval())
    reasons = [p.reason for p in group_of(graph, "a").pinned_by]
    assert reasons == ["advanced indexing picks or reorders channels"]


class Decoder(nn.Module):
    """RT-DETR's decoder layer (self-attention, deformable cross-attention, FFN, three LayerNorms)
    on pixel features, with queries from a second conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, 2, 1)  # (B, 16, 4, 4): the values
        self.q = nn.Conv2d(3, 16, 4, 4)  # (B, 16, 2, 2): 4 queries
        self.layer = DeformableTransformerDecoderLayer(16, n_heads=4, d_ffn=24, n_levels=1, n_points=2)
        self.register_buffer("boxes", torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(1)))
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.a(x).flatten(2).transpose(1, 2)
        embed = self.q(x).flatten(2).transpose(1, 2)
        out = self.layer(embed, self.boxes.expand(len(x), -1, -1), feats, [[4, 4]])
        return self.head(out)


def randomised(model: nn.Module) -> nn.Module:
    """Non-zero offsets and attention logits (Ultralytics initialises them to zero and a grid)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model.eval()


def test_deformable_decoder_layer_prunes_value_dims_and_ffn_exactly():
    model = randomised(Decoder())
    graph = graph_of(model)
    cross = "layer.cross_attn"
    values = group_of(graph, f"{cross}.value_proj")
    assert values.prunable and values.size == 4  # head_dim 4: dim d goes from all 4 heads at once
    assert set(values.members) == {Member(f"{cross}.value_proj", "out"), Member(f"{cross}.output_proj", "in")}
    ffn = group_of(graph, "layer.linear1")
    assert ffn.prunable and ffn.size == 24
    for layer in ("sampling_offsets", "attention_weights"):
        assert [p.reason for p in group_of(graph, f"{cross}.{layer}").pinned_by] == [POINTS_REASON]
    stream = {p.reason for p in group_of(graph, "q").pinned_by}
    assert stream == {LAYER_NORM_REASON, ATTENTION_REASON}
    assert group_of(graph, "a").prunable  # the values' input: read only by value_proj
    pruned, widths = pruned_and_checked(model, graph, [values, ffn, group_of(graph, "a")])
    attn = pruned.layer.cross_attn
    assert attn.d_model == attn.value_proj.out_features == 8 and attn.n_heads == 4
    assert widths["layer.linear1.out"] == (24, 12)


def test_aifi_prunes_its_ffn_and_pins_its_normalised_stream():
    model = randomised(Body(lambda m, x: m.aifi(x), c=16, aifi=AIFI(16, cm=32, num_heads=4)))
    graph = graph_of(model)
    stream = group_of(graph, "a")
    reasons = {p.reason for p in stream.pinned_by}
    assert {LAYER_NORM_REASON, ATTENTION_REASON} <= reasons
    assert {p.member for p in stream.pinned_by} >= {"aifi.norm1", "aifi.norm2", "aifi.ma"}
    ffn = group_of(graph, "aifi.fc1")
    assert ffn.prunable and set(ffn.members) == {Member("aifi.fc1", "out"), Member("aifi.fc2", "in")}
    pruned, _ = pruned_and_checked(model, graph, [ffn])
    assert pruned.aifi.fc1.out_features == 16


def test_rtdetr_prunes_every_ffn_and_value_projection_and_pins_nothing_for_the_tracer():
    a = analyze("yolov8n-rtdetr.yaml")
    head = "model.22"
    layers = [f"{head}.decoder.layers.{i}" for i in range(6)]
    for layer in layers:
        assert a.graph.groups_of(f"{layer}.linear1", "out")[0].prunable
        assert a.graph.groups_of(f"{layer}.cross_attn.value_proj", "out")[0].prunable
    for g in a.pinned([head]):
        for reason in g.reasons:
            assert not any(words in reason for words in TRACER_WORDS), reason
    (stream,) = a.graph.groups_of(f"{layers[0]}.norm1")
    assert {LAYER_NORM_REASON, ATTENTION_REASON} <= {p.reason for p in stream.pinned_by}
    scope = [f"{layer}.{name}" for layer in layers for name in ("linear1", "cross_attn.value_proj")]
    groups = select_groups(a.graph, scope)
    assert len(groups) == 12
    model = excite(a.model, ULTRALYTICS.example_inputs(a.model, batch=2, seed=1))
    plan = choose(a.graph, model, groups, PruneOptions(ratio=0.5, importance="random"))
    inputs = ULTRALYTICS.example_inputs(model, batch=2, seed=2)
    pruned, widths, eq = prune_and_compare(model, a.graph, plan.removed, inputs, ULTRALYTICS)
    assert eq.ok, eq
    assert widths[f"{layers[0]}.linear1.out"] == (1024, 512)
    assert pruned.model[22].decoder.layers[0].cross_attn.d_model == 128


@pytest.mark.slow
@pytest.mark.parametrize("config", ["yolov8n-rtdetr.yaml", "rtdetr-l.yaml"])
def test_rtdetr_prunes_with_every_check_passing(config):
    r = prune(config, PruneOptions(0.5, importance="random"))
    assert r.ok, [c.detail for c in r.failed]
    widths = {n: m.out_features for n, m in r.model.named_modules() if n.endswith("linear1")}
    assert widths and all(w == 512 for w in widths.values())
