"""YOLO-World's and YOLOE's text-guided modules are pruned exactly where they can be and pinned with
the exactness reason where they cannot: `MaxSigmoidAttnBlock` by image/text embedding pairs (every
head alike, the logit scale folded into `gl`) and `proj_conv` dims per head, `ImagePoolingAttn` by
whole heads; the contrastive class heads pin the channels that meet the text embeddings."""

from __future__ import annotations

from pathlib import Path

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
from yoloprune.yolo.attention import fix_attention, module_rule
from yoloprune.yolo.world import TEXT_REASON

torch.manual_seed(0)
TEXT = torch.rand(2, 5, 24)  # (bs, classes, text width): held by the model, not a traced input
INPUT = (torch.rand(2, 3, 16, 16),)


def fix(model: nn.Module) -> None:
    for m in model.modules():
        fix_attention(m)


RULED = ModelAdapter(fix_attributes=fix, module_rule=module_rule)


class Guided(nn.Module):
    """A conv, a max-sigmoid attention guided by text the model holds, and a conv. Its embedding is
    the block's input itself when that is 32 wide (as in C2fAttn), else a conv's (`ec`)."""

    def __init__(self, c1: int = 32, heads: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c1, 3, padding=1)
        self.attn = B.MaxSigmoidAttnBlock(c1, 32, nh=heads, ec=32, gc=TEXT.shape[-1])
        self.out = nn.Conv2d(32, 4, 1)
        with torch.no_grad():
            self.attn.bias.uniform_(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(self.stem(x), TEXT.to(x.dtype)))


class Pooled(nn.Module):
    """Two feature levels updating the text through image-pooling attention, read by a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stems = nn.ModuleList(nn.Conv2d(3, c, 3, padding=1) for c in (8, 16))
        self.attn = B.ImagePoolingAttn(ec=32, ch=(8, 16), ct=TEXT.shape[-1], nh=4, k=2)
        self.out = nn.Linear(TEXT.shape[-1], 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn([s(x) for s in self.stems], TEXT.to(x.dtype)))


def prunable(graph, module: str, axis: str = "out"):
    return [g for g in graph.groups_of(module, axis) if g.prunable]


@pytest.mark.parametrize("c1", [32, 24])
def test_embedding_pairs_go_from_every_head_and_the_scale_is_folded_exactly(c1):
    model = Guided(c1).eval()
    assert (model.attn.ec is None) == (c1 == 32)
    graph = build_groups(trace(model, INPUT, RULED))
    (pairs,) = prunable(graph, "attn.gl")
    assert {m.module for m in pairs.members} >= {"attn.gl"} and pairs.width == 2  # one dim, both heads
    removed = frozenset(pairs.classes[:3])
    pruned, _, eq = prune_and_compare(model, graph, removed, INPUT, RULED)
    assert eq.ok and eq.max_rel_error < 1e-5
    assert (pruned.attn.hc, pruned.attn.gl.out_features) == (13, 26)
    order = [c for c in pairs.classes[:3]]  # the removed dims, the same in both heads
    kept = [
        i
        for i in range(32)
        if graph.layout[next(m for m in pairs.members if m.module == "attn.gl")][i] not in order
    ]
    factor = (13 / 16) ** 0.5  # the logits' scale, folded into gl
    assert torch.allclose(pruned.attn.gl.weight, model.attn.gl.weight[kept] * factor)


def test_without_the_fold_the_scale_changes_and_the_check_fails():
    model = Guided().eval()
    graph = build_groups(trace(model, INPUT, RULED))
    (pairs,) = prunable(graph, "attn.gl")

    def unscaled(m: nn.Module) -> None:
        for a in m.modules():
            if type(a) is B.MaxSigmoidAttnBlock:
                a.hc = a.gl.out_features // a.nh  # the new width, gl left as it is

    _, _, eq = prune_and_compare(
        model,
        graph,
        frozenset(pairs.classes[:3]),
        INPUT,
        ModelAdapter(fix_attributes=unscaled, module_rule=module_rule),
    )
    assert not eq.ok


def test_proj_conv_dims_go_per_head_and_the_block_stays_exact():
    model = Guided().eval()
    graph = build_groups(trace(model, INPUT, RULED))
    (dims,) = prunable(graph, "attn.proj_conv.conv")
    assert dims.width == 2 and dims.size == 16  # dim d of both heads' 16
    pruned, _, eq = prune_and_compare(model, graph, frozenset(dims.classes[::2]), INPUT, RULED)
    assert eq.ok and pruned.attn.proj_conv.conv.out_channels == 16


def test_an_image_pooling_head_goes_whole():
    model = Pooled().eval()
    graph = build_groups(trace(model, INPUT, RULED))
    (heads,) = prunable(graph, "attn.query.1")
    assert heads.size == 4 and heads.width == 8  # a class is one head: 8 dims of q, k and v
    pruned, _, eq = prune_and_compare(model, graph, frozenset(heads.classes[1:3]), INPUT, RULED)
    assert eq.ok and eq.max_rel_error < 1e-5
    assert (pruned.attn.nh, pruned.attn.hc, pruned.attn.ec) == (2, 8, 16)
    pinned = [g for g in graph.groups_of("attn.projections.0", "out") if not g.prunable]  # the key LayerNorm
    assert pinned and any("LayerNorm" in r for g in pinned for r in g.reasons)


@pytest.mark.parametrize("config", ["yolov8n-worldv2.yaml", "yolov8n-world.yaml", "yoloe-11n.yaml"])
def test_text_guided_models_pin_only_with_exactness_reasons_and_pass_every_check(config):
    a = analyze(config)
    reasons = [r for g in a.pinned() for r in g.reasons]
    assert not any("not an op the tracer understands" in r for r in reasons), reasons
    assert any(TEXT_REASON in r for r in reasons)
    result = prune(config, PruneOptions(0.5, importance="random"), analysis=a, check_onnx=False)
    assert result.ok, result.failed
    guided = [(n, m) for n, m in a.model.named_modules() if type(m) is B.MaxSigmoidAttnBlock]
    after = dict(result.model.named_modules())
    assert all(
        after[n].hc < m.hc and after[n].proj_conv.conv.out_channels < m.proj_conv.conv.out_channels
        for n, m in guided
    )


def test_a_pruned_world_model_loads_and_runs_in_plain_ultralytics(tmp_path: Path):
    result = prune("yolov8n-worldv2.yaml", PruneOptions(0.5, importance="random"), check_onnx=False)
    path = result.save(tmp_path / "pruned-world.pt")
    out = run_without_yoloprune(
        """
        import sys, torch
        from ultralytics import YOLO
        from ultralytics.nn.modules.block import MaxSigmoidAttnBlock
        model = YOLO(sys.argv[1]).model.eval()
        model(torch.zeros(1, 3, 64, 64))
        print(*[m.hc for m in model.modules() if type(m) is MaxSigmoidAttnBlock])
        """,
        path,
    )
    expected = [m.hc for m in result.model.modules() if type(m) is B.MaxSigmoidAttnBlock]
    assert list(map(int, out.split())) == expected
