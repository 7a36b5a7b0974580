"""The inventory and the analysis report: concrete yolov8n facts, the JSON contract, Markdown and DOT."""

from __future__ import annotations

import json
import re

import pytest

from yoloprune.errors import YoloPruneError
from yoloprune.reports import analysis as report
from yoloprune.reports import analysis_dot
from yoloprune.reports.inventory import render_json, render_markdown, render_text
from yoloprune.yolo.api import analyze
from yoloprune.yolo.inventory import describe, inventory


@pytest.fixture(scope="module")
def v8n():
    return analyze("yolov8n.yaml")


@pytest.fixture(scope="module")
def blocks_1_2_3(v8n):
    return report.analysis_report(v8n, blocks=[1, 2, 3])


def _producer_of(group) -> str:
    return (group.producers or group.members)[0].module


def breaks_of(rep: report.Report, conv: str) -> dict:
    finding = next(c for c in rep.convs if c.conv.name == conv)
    return {b.module: b for b in finding.breaks}


def test_inventory_yolov8n_block_2_is_a_c2f_with_four_convs(v8n):
    blocks = inventory(v8n)
    assert len(blocks) == 23
    c2f = blocks[2]
    assert (c2f.type, c2f.from_, c2f.in_channels, c2f.out_channels) == ("C2f", -1, (32,), (32,))
    convs = {c.name: c for c in c2f.convs}
    assert list(convs) == [
        "model.2.cv1.conv",
        "model.2.cv2.conv",
        "model.2.m.0.cv1.conv",
        "model.2.m.0.cv2.conv",
    ]
    assert (convs["model.2.cv1.conv"].out, convs["model.2.cv1.conv"].in_) == (32, 32)
    half = convs["model.2.m.0.cv1.conv"].out
    assert half == 16 and convs["model.2.cv2.conv"].in_ == 3 * half  # chunk(2) halves + bottleneck out
    assert convs["model.2.m.0.cv1.conv"].kernel == (3, 3) and convs["model.2.cv1.conv"].kernel == (1, 1)
    assert blocks[1].convs[0].stride == (2, 2)
    assert (blocks[14].type, blocks[14].from_, blocks[14].in_channels, blocks[14].out_channels) == (
        "Concat",
        (-1, 4),
        (128, 64),
        (192,),
    )
    assert blocks[22].type == "Detect" and blocks[22].from_ == (15, 18, 21)
    assert c2f.params == sum(p.numel() for p in v8n.model.model[2].parameters())


def test_inventory_renderers(v8n):
    blocks = inventory(v8n)
    doc = json.loads(render_json(blocks, "yolov8n.yaml", "detect"))
    assert doc["blocks"][2]["convs"][1] == {
        "name": "model.2.cv2.conv", "out": 32, "in": 48, "kernel": [1, 1], "stride": [1, 1], "groups": 1
    }  # fmt: skip
    text = render_text(blocks).splitlines()
    assert text[0].split() == ["block", "type", "from", "in", "out", "params"]
    assert any(line.split()[:5] == ["conv", "1", "model.2.cv2.conv", "out=32", "in=48"] for line in text)
    md = render_markdown(blocks, "yolov8n.yaml")
    assert "| 14 | Concat | -1, 4 | 128, 64 | 192 | 0 | 0 |" in md
    assert "| 2 | 1 | `model.2.cv2.conv` | 32 | 48 | 1x1 |" in md


def test_describe_labels_paths_by_block(v8n):
    label = describe(v8n.model)
    assert label("model.14") == "layer 14 (Concat)"
    assert label("model.2.m.0.cv1.conv") == "layer 2 (C2f)"
    assert label("") == "the model"


def test_seed_blocks_1_2_3_naive_breaks(blocks_1_2_3):
    alone = breaks_of(blocks_1_2_3, "model.1.conv")
    assert alone["model.2.cv1.conv"].reason == "direct consumer in layer 2 (C2f)"
    assert (alone["model.2.cv1.conv"].expected, alone["model.2.cv1.conv"].got) == (32, 16)
    inside = breaks_of(blocks_1_2_3, "model.2.cv1.conv")
    assert "chunk(2)" in inside["model.2.m.0.cv1.conv"].reason
    assert "residual add" in inside["model.2.m.0"].reason
    assert inside["model.2.cv2.conv"].reason == "concat slot 0 of layer 2 (C2f)"
    assert breaks_of(blocks_1_2_3, "model.3.conv").keys() == {"model.4.cv1.conv"}


def test_block_4_output_breaks_the_neck_concat(v8n):
    rep = report.analysis_report(v8n, layers=["model.4.cv2.conv"])
    neck = breaks_of(rep, "model.4.cv2.conv")["model.15.cv1.conv"]
    assert neck.reason == "concat slot 1 of layer 14 (Concat)"
    assert "model.14 (concat slot 1)" in neck.path and (neck.expected, neck.got) == (192, 160)
    assert [b.index for b in rep.blocks] == [4] and [c.conv.name for c in rep.convs] == ["model.4.cv2.conv"]


def test_json_contract(blocks_1_2_3):
    doc = json.loads(report.to_json(blocks_1_2_3))
    assert {"blocks", "groups", "naive"} <= doc.keys()
    assert [b["index"] for b in doc["blocks"]] == [1, 2, 3]
    for b in doc["blocks"]:
        assert {"index", "type", "from", "in_channels", "out_channels", "convs"} <= b.keys()
        for c in b["convs"]:
            assert {"name", "out", "in", "kernel"} <= c.keys()
    assert all(g["prunable"] and g["pinned_by"] == [] for g in doc["groups"])
    for g in doc["groups"]:
        assert {"id", "size", "prunable", "pinned_by", "members"} <= g.keys()
        assert all({"module", "axis", "start", "stop"} <= m.keys() for m in g["members"])
    c2f = next(
        g
        for g in doc["groups"]
        if {"module": "model.2.cv1.conv", "axis": "out"}
        in [{k: m[k] for k in ("module", "axis")} for m in g["members"]]
    )
    members = {(m["module"], m["axis"]): (m["start"], m["stop"]) for m in c2f["members"]}
    assert c2f["size"] == 16
    assert members[("model.2.cv1.conv", "out")] == (0, 32)  # both chunk halves are tied
    assert members[("model.2.cv2.conv", "in")] == (0, 48)  # three concat slots
    assert members[("model.2.m.0.cv2.conv", "out")] == (0, 16)  # residual add
    naive = {n["conv"]: n["breaks"] for n in doc["naive"]}
    assert len(naive) == 6
    first = naive["model.1.conv"][0]
    assert first.keys() >= {"module", "expected", "got", "reason", "path"}
    assert first["path"][0] == "model.1.conv" and first["path"][-1] == "model.2.cv1.conv"


def test_pinned_selection_is_explained(v8n):
    rep = report.analysis_report(v8n, layers=["model.22.cv2.0.2"])
    (group,) = rep.groups
    assert not group.prunable
    assert any("predictions" in p.reason for p in group.pinned_by)
    md = report.to_markdown(rep)
    assert "Nothing here can be pruned" in md and "**pinned: cannot be pruned**" in md
    dot = analysis_dot.to_dot(rep)
    assert '"#d62728"' in dot and "pinned" in dot


def test_markdown_answers_first_then_shows_evidence(blocks_1_2_3):
    md = report.to_markdown(blocks_1_2_3)
    head = md.split("## Summary")[0]
    assert "No channel mismatch if you prune by groups" in head
    assert "yoloprune prune yolov8n.yaml --ratio 0.5 --blocks 1 2 3 --out pruned.pt" in head
    assert "**Block 2 (C2f): prunable** — 3 groups, all prunable when pruned as groups:" in md
    assert "- pruning `model.2.cv1.conv` alone breaks `model.2.m.0.cv1.conv` (expects 16, gets 8)" in md
    assert "| `model.2.cv2.conv` | in | all 48 | ×3 |" in md
    assert "| `model.2.cv2.conv` | 48 | 40 | concat slot 0 of layer 2 (C2f) |" in md
    assert "Its output channels are in group" in md  # m.0.cv2 shares cv1's group: shown once


def test_default_selection_is_every_block(v8n):
    rep = report.analysis_report(v8n)
    assert len(rep.blocks) == 23 and rep.selection == "all blocks"
    pinned = {_producer_of(g): g.reasons for g in rep.groups if not g.prunable}
    assert pinned.keys() == {"model.0.conv", "model.22.cv2.0.2", "model.22.cv3.0.2"}  # input, Detect outputs
    assert pinned["model.0.conv"] == ("input: model input channels",)
    md = report.to_markdown(rep)
    assert "**Block 14 (Concat): nothing to prune** — it has no convolutions" in md
    assert "| 0 | Conv | input | 3 → 16 | 1 | 1/1 | prunable |" in md  # the input's group is not block 0's
    assert "| 0 | 3 | `model.0.conv` | input: model input channels |" in md.split("## Pinned groups")[1]


def test_dot_clusters_blocks_and_dashes_breaks(blocks_1_2_3):
    dot = analysis_dot.to_dot(blocks_1_2_3)
    assert dot.startswith("digraph yoloprune {") and dot.rstrip().endswith("}")
    assert 'subgraph "cluster_model.2" {' in dot and 'label="layer 2 (C2f)";' in dot
    assert '"model.1.conv" -> "model.2.cv1.conv" [style=dashed' in dot
    assert "BatchNorm" not in dot
    assert dot.count("{") == dot.count("}")


def test_svg_needs_graphviz(monkeypatch):
    monkeypatch.setattr(analysis_dot.shutil, "which", lambda name: None)
    with pytest.raises(YoloPruneError, match="Graphviz"):
        analysis_dot.to_svg("digraph {}")


def test_unknown_selection_is_refused(v8n):
    with pytest.raises(YoloPruneError, match="blocks 0 to 22"):
        report.analysis_report(v8n, blocks=[99])
    with pytest.raises(YoloPruneError, match=re.escape("Did you mean model.2.cv1.conv")):
        report.analysis_report(v8n, layers=["model.2.cv1.cnv"])


def test_excluded_layers_pin_their_groups_and_stay_in_the_suggested_command():
    rep = report.analysis_report(
        analyze("yolov8n.yaml", exclude=["model.2.cv2"]), [2], exclude=["model.2.cv2"]
    )
    assert [g.prunable for g in rep.groups] == [False, False, True]
    md = report.to_markdown(rep)
    assert "excluded by the user (exclude model.2.cv2)" in md
    assert "yoloprune prune yolov8n.yaml --ratio 0.5 --blocks 2 --exclude model.2.cv2 --out pruned.pt" in md
