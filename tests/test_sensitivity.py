"""`yoloprune sensitivity`: each group pruned alone at several ratios, the curves' files, and per-group
ratios for a FLOPs target that `prune --plan-in` replays within 2%."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from yoloprune.cli import main
from yoloprune.errors import YoloPruneError
from yoloprune.pruning.count import count_flops
from yoloprune.reports.sensitivity import Curve, Sensitivity, removed_per_group
from yoloprune.workflows.data import make_digits
from yoloprune.workflows.sensitivity import plan_for_target, sensitivity
from yoloprune.yolo.api import analyze, excited_copy
from yoloprune.yolo.io import load_model, save_checkpoint


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_digits(tmp_path_factory.mktemp("data") / "digits", images=20, imgsz=64).yaml


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """yolov8n whose every channel carries signal (a raw init barely depends on its input, so pruning
    would change nothing measurable), saved as a checkpoint."""
    path = tmp_path_factory.mktemp("model") / "yolov8n.pt"
    return save_checkpoint(excited_copy(load_model("yolov8n.yaml").model), path)


@pytest.fixture(scope="module")
def block2(original, digits):
    return sensitivity(original, digits, blocks=[2], ratios=[0.75, 0.25, 0.5], imgsz=64, images=4, batch=2)


def test_each_group_of_the_block_gets_a_curve(block2):
    assert [c.producer for c in block2.curves] == [
        "model.2.cv1.conv",
        "model.2.m.0.cv1.conv",
        "model.2.cv2.conv",
    ]
    for c in block2.curves:
        assert c.block == 2 and c.ratios == (0.25, 0.5, 0.75)  # sorted
        assert list(c.kept) == [c.channels - int(c.channels * r) for r in c.ratios]
        assert block2.flops > c.flops[0] > c.flops[1] > c.flops[2]
    changed = [d for c in block2.curves for d in block2.damage(c)]
    assert any(abs(d) > 1e-6 for d in changed)  # pruning a signal-carrying group moves the loss
    c = block2.curves[0]
    assert block2.damage(c) == pytest.approx(np.array(c.values) - block2.baseline)  # loss: up is worse


def test_csv_and_text_hold_every_point(block2):
    rows = list(csv.DictReader(io.StringIO(block2.to_csv())))
    assert len(rows) == 9 and rows[0].keys() >= {
        "group",
        "producer",
        "ratio",
        "kept",
        "loss",
        "damage",
        "flops",
    }
    assert {float(r["ratio"]) for r in rows} == {0.25, 0.5, 0.75}
    assert "model.2.m.0.cv1.conv" in block2.to_text() and "baseline" in block2.to_text()


def _synthetic(a, damage_of) -> Sensitivity:
    """Curves for every prunable group of `a`: `damage_of(producer, ratio)`, FLOPs saved in proportion
    to the group's size and the ratio, channel scores 0, 1, 2, ..."""
    ratios, base, curves = (0.2, 0.4, 0.6, 0.8), 10**9, []
    for g in (g for g in a.graph.groups if g.prunable):
        producer = g.producers[0].module
        kept = tuple(g.size - int(g.size * r) for r in ratios)
        values = tuple(damage_of(producer, r) for r in ratios)
        flops = tuple(base - int(1e5 * g.size * r) for r in ratios)
        block = int(producer.split(".")[1])
        scores = tuple(map(float, range(g.size)))
        curves.append(Curve(g.id, block, producer, g.size, ratios, kept, values, flops, scores))
    return Sensitivity("yolov8n.yaml", "digits.yaml", "loss", 0.0, base, 640, 64, 4, "l1", tuple(curves))


def test_equal_curves_give_equal_ratios_and_a_sensitive_group_is_spared():
    a = analyze("yolov8n.yaml")
    s = _synthetic(a, lambda producer, r: 100.0 * r if producer == "model.9.cv1.conv" else 0.0)
    plan = plan_for_target(s, a, 0.6)
    assert plan.budget.reached == pytest.approx(0.6, rel=0.02)
    ratios = {c.producer: n / c.channels for c, n in removed_per_group(s, plan, a)}
    assert ratios.pop("model.9.cv1.conv") == 0.0  # the only group whose curve rises is pruned last
    spread = np.array(list(ratios.values()))
    assert spread.max() - spread.min() <= 0.2 + 1 / 16  # one ratio step apart, up to channel rounding


def test_cli_target_flops_plan_replays_and_meets_the_target(original, digits, tmp_path, capsys):
    plan, table, plot = tmp_path / "plan.json", tmp_path / "s.csv", tmp_path / "s.png"
    argv = ["sensitivity", str(original), "--data", str(digits), "--blocks", "22", "--ratios", "0.3", "0.6"]
    argv += ["--imgsz", "64", "--images", "4", "--batch", "2", "--target-flops", "0.8", "--round-to", "8"]
    assert main([*argv, "--plan", str(plan), "--csv", str(table), "--plot", str(plot)]) == 0
    out = capsys.readouterr()
    assert "model.22.cv3.0.0.conv" in out.out and "of the FLOPs kept (target 0.8" in out.out
    assert "sensitivity [1/25]" in out.err and "left)" in out.err  # progress: k of N and time left
    assert len(table.read_text().splitlines()) == 1 + 12 * 2 and plot.read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(plan.read_text())
    assert doc["options"]["target_flops"] == 0.8 and doc["sensitivity"]["metric"] == "loss"
    assert all(path.startswith("model.22.") for path in doc["convs"])
    assert all(len(c["keep_out"]) % 8 == 0 for c in doc["convs"].values())
    pruned = tmp_path / "pruned.pt"
    assert (
        main(["prune", str(original), "--plan-in", str(plan), "--out", str(pruned), "--no-onnx-check"]) == 0
    )
    size = (torch.zeros(1, 3, 640, 640),)
    kept = count_flops(load_model(pruned).model, size) / count_flops(load_model(original).model, size)
    assert kept == pytest.approx(0.8, rel=0.02)


def test_map_metric_uses_ultralytics_validation(original, digits):
    s = sensitivity(original, digits, blocks=[0], ratios=[0.5], metric="map", imgsz=64, batch=2)
    assert s.metric == "map" and 0.0 <= s.baseline <= 1.0 and 0.0 <= s.curves[0].values[0] <= 1.0
    assert s.damage(s.curves[0])[0] == pytest.approx(s.baseline - s.curves[0].values[0])


def test_unreachable_target_says_what_to_measure(block2, original):
    with pytest.raises(YoloPruneError, match="cannot be reached from these curves"):
        plan_for_target(block2, analyze(original), 0.5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ratios", "0", "0.5"], "give fractions in (0, 1)"),
        (["--metric", "loss", "--plan", "p.json"], "pass --target-flops as well"),
    ],
)
def test_cli_refuses_bad_options(original, digits, argv, message, capsys):
    assert main(["sensitivity", str(original), "--data", str(digits), "--blocks", "0", *argv]) == 2
    assert message in capsys.readouterr().err
