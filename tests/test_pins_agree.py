"""One source of truth for pins: the groups `analyze` reports as pinned are exactly the groups a
prune leaves untouched, on every shipped config, and each says why (tracer, probe or --exclude)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from coverage import offline_copy, shipped_configs
from test_attention import INPUT, Wrapped
from ultralytics.nn.modules import block as B

from yoloprune.graph.adapter import ModelAdapter
from yoloprune.graph.groups import build_groups
from yoloprune.graph.trace import trace
from yoloprune.pruning.choose import choose, select_groups
from yoloprune.pruning.plan import Plan, PruneOptions
from yoloprune.pruning.probe import probe
from yoloprune.reports import analysis as report
from yoloprune.yolo.api import Analysis, analyze, prune
from yoloprune.yolo.attention import fix_attention

FAST = ("yolo26n.yaml", "yolo12n.yaml", "rtdetr-l.yaml")  # head constants; attention; linear layers


_analyses: dict[str, Analysis] = {}


def analysis(config: str, folder: Path) -> Analysis:
    """`config` traced and probed once per test session."""
    if config not in _analyses:
        torch.manual_seed(0)
        _analyses[config] = analyze(str(offline_copy(config, folder) or config))
    return _analyses[config]


def untouched(a: Analysis, plan: Plan) -> set[int]:
    return {g.id for g in a.graph.groups if not plan.removed.intersection(g.classes)}


def check_pins_agree(config: str, folder: Path) -> None:
    a = analysis(config, folder)
    doc = json.loads(report.to_json(report.analysis_report(a)))  # what `yoloprune analyze` prints
    options = PruneOptions(0.5, importance="random")  # prune's own choice, without its (slow) verification
    plan = choose(a.graph, a.model, select_groups(a.graph, None), options)
    assert {g["id"] for g in doc["groups"] if not g["prunable"]} == untouched(a, plan)
    assert {g["id"] for g in doc["groups"]} == {g.id for g in a.graph.groups}
    reasons = {p["id"]: p["reasons"] for p in doc["pinned"]}
    assert reasons.keys() == untouched(a, plan) == {g.id for g in a.pinned()}
    assert all(why and all(why) for why in reasons.values()), reasons


@pytest.mark.parametrize("config", FAST)
def test_analyze_reports_exactly_the_groups_prune_leaves(config, tmp_path):
    check_pins_agree(config, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("config", [c for c in shipped_configs() if c not in FAST])
def test_every_shipped_config_reports_the_groups_prune_leaves(config, tmp_path):
    check_pins_agree(config, tmp_path)


def test_prune_leaves_exactly_the_pinned_groups(tmp_path):
    a = analysis("yolo26n.yaml", tmp_path)
    r = prune(a.source, PruneOptions(0.5), analysis=a)
    assert untouched(a, r.plan) == {g.id for g in a.pinned()} and len(a.pinned()) >= 3
    scope = ("model.23",)
    r = prune(a.source, PruneOptions(0.5, blocks=[23]), analysis=a)
    in_block = {g.id for g in select_groups(a.graph, scope)}
    assert a.pinned(scope) and untouched(a, r.plan) & in_block == {g.id for g in a.pinned(scope)}
    assert {g["id"] for g in json.loads(report.to_json(report.analysis_report(a, [23])))["pinned"]} == {
        g.id for g in a.pinned(scope)
    }


def test_probe_pins_name_the_layer_that_fails():
    """Without its module rule, an attention block views its values to its input's width: the tracer
    sees no coupling, and the probe pins the input's group, naming the layer and the failing module."""
    model = Wrapped(B.Attention(64, num_heads=2), 64).eval()
    plain = ModelAdapter(fix_attributes=lambda m: [fix_attention(x) for x in m.modules()] and None)
    graph = probe(model, build_groups(trace(model, INPUT, plain)), INPUT, plain)
    (group,) = graph.groups_of("stem", "out")
    (reason,) = group.reasons
    assert reason.startswith("stem: removing any of its channels breaks the pruned model")
    assert "fails in block (Attention): RuntimeError" in reason


def test_markdown_lists_every_pinned_group_with_its_reasons(tmp_path):
    a = analysis("yolo26n.yaml", tmp_path)
    md = report.to_markdown(report.analysis_report(a))
    pinned = md.split("## Pinned groups")[1].split("\n## ")[0]
    rows = [line for line in pinned.splitlines() if line.startswith("| ") and not line.startswith("| Group")]
    assert len(rows) == len(a.pinned()) >= 3
    assert "model.23 (Tensor.sub): combined element-wise with a constant tensor of 2 channels" in pinned
    assert f"Prune leaves the {len(a.pinned())} pinned groups as they are" in md
