"""The benchmarks' own helpers that decide what a comparison measures (no torch-pruning needed)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from _torch_pruning import SplitFreeC2f, merge_back, split_free
from accuracy import attention_widths
from ultralytics.nn.modules.block import Attention

from yoloprune.yolo.io import load_model


@pytest.fixture(scope="module")
def yolov8n():
    return load_model("yolov8n.yaml").model.eval()


def test_split_free_rewrite_and_merge_back_keep_the_outputs_and_the_modules(yolov8n):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = yolov8n(x)[0]
        rewritten = split_free(copy.deepcopy(yolov8n))
        assert sum(isinstance(b, SplitFreeC2f) for b in rewritten.model) == 8
        assert torch.allclose(rewritten(x)[0], expected, atol=1e-5)
        merged = merge_back(rewritten)
        assert [type(b) for b in merged.model] == [type(b) for b in yolov8n.model]
        assert torch.allclose(merged(x)[0], expected, atol=1e-5)
    original = dict(yolov8n.state_dict())
    assert {k: v.shape for k, v in merged.state_dict().items()} == {k: v.shape for k, v in original.items()}


def test_merge_back_refuses_halves_of_different_widths(yolov8n):
    rewritten = split_free(copy.deepcopy(yolov8n))
    block = next(b for b in rewritten.model if isinstance(b, SplitFreeC2f))
    block.cv0.conv.out_channels -= 1  # as if a tool had pruned one half alone
    with pytest.raises(RuntimeError, match="halves of cv1"):
        merge_back(rewritten)
    assert rewritten.model[block.i] is block  # left as it was, not half merged


def test_attention_widths_reads_each_attention_module_before_and_after(yolov8n):
    parent = load_model("yolo11n.yaml").model
    narrower = copy.deepcopy(parent)
    block = narrower.model[10].m[0]  # C2PSA's PSABlock, 128 channels
    block.attn = Attention(64, num_heads=2, attn_ratio=0.25)  # as if half its channels were pruned
    widths = attention_widths(parent, narrower)
    assert widths == {
        "model.10.m.0.attn": {"qkv": [256, 96], "heads": [2, 2], "key_dim": [32, 8], "head_dim": [64, 32]}
    }
    assert attention_widths(yolov8n, yolov8n) == {}  # no attention: nothing reported


def test_reach_sets_each_attention_model_against_yolov8n_on_both_axes():
    from coverage import reach

    def record(config: str, left: float, deep: float | None, status: str = "pass") -> dict:
        both = {"flops": [100, round(100 * deep)], "ok": True} if deep is not None else None
        return {
            "config": config,
            "status": status,
            "flops": [100, round(100 * left)],
            "depth": {"both": both},
        }

    records = [
        record("yolov8n.yaml", 0.25, 0.20),
        record("yolo12n.yaml", 0.30, 0.18),
        record("yolo11n.yaml", 0.26, None),
        record("yolo26n.yaml", 0.5, 0.5, status="fail"),  # a failed config is left out
    ]
    rows = reach(records)
    assert rows[0] == "| config | channels 50% (yolov8n 25.0%) | + depth 0.5 (yolov8n 20.0%) |"
    assert rows[2:] == [
        "| yolo11n.yaml | 26.0% (1.04x) | - |",
        "| yolo12n.yaml | 30.0% (1.20x) | 18.0% (0.90x) |",
    ]
    assert reach(records[1:]) == []  # no yolov8n, nothing to compare with
