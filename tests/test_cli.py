"""The `yoloprune` command line: each command's output, files and exit codes, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from yoloprune.cli import main
from yoloprune.yolo.api import excited_copy
from yoloprune.yolo.io import load_model, save_checkpoint


def conv_widths(path: Path) -> dict[str, tuple[int, int]]:
    model = load_model(str(path)).model
    return {n: (m.out_channels, m.in_channels) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """yolov8n saved as a checkpoint, then blocks 1-3 pruned at 50% through the CLI with every check,
    the ONNX export included. YAML builds are randomly initialised, so the original is saved once;
    `excited_copy` gives it BatchNorm statistics under which every channel reaches the outputs, as in a
    trained model (at a raw init most channels fade out and no plan could be told from another)."""
    d = tmp_path_factory.mktemp("cli")
    original = save_checkpoint(excited_copy(load_model("yolov8n.yaml").model), d / "yolov8n.pt")
    argv = ["prune", str(original), "--blocks", "1", "2", "3", "--ratio", "0.5"]
    assert main([*argv, "--out", str(d / "pruned.pt"), "--plan", str(d / "plan.json")]) == 0
    return original, d / "pruned.pt", d / "plan.json"


@pytest.mark.parametrize("fmt", ["text", "md", "json"])
def test_inspect_formats(fmt, tmp_path, capsys):
    out = tmp_path / f"blocks.{fmt}"
    assert main(["inspect", "yolov8n.yaml", "--format", fmt, "--out", str(out)]) == 0
    text = out.read_text()
    assert "model.2.m.0.cv2.conv" in text and "Detect" in text
    if fmt == "json":
        c2f = json.loads(text)["blocks"][2]
        assert c2f["type"] == "C2f" and len(c2f["convs"]) == 4
        cv1, cv2, m0cv1, _ = c2f["convs"]
        assert (cv1["out"], cv1["in"], m0cv1["out"], cv2["in"]) == (32, 32, 16, 3 * 16)
    assert f"wrote {out}" in capsys.readouterr().err


def test_inspect_prints_an_aligned_table(capsys):
    assert main(["inspect", "yolov8n.yaml"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["block", "type", "from", "in", "out", "params"]
    row = next(line for line in lines if line.split()[:2] == ["14", "Concat"])
    assert row.split()[2:] == ["-1,", "4", "128,", "64", "192", "0"]


def test_analyze_json_contract(capsys):
    assert main(["analyze", "yolov8n.yaml", "--blocks", "1", "2", "3", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"blocks", "groups", "naive"} <= doc.keys()
    assert [b["type"] for b in doc["blocks"]] == ["Conv", "C2f", "Conv"]
    naive = {n["conv"]: {b["module"]: b for b in n["breaks"]} for n in doc["naive"]}
    assert naive["model.1.conv"]["model.2.cv1.conv"]["expected"] == 32
    assert {"model.2.m.0.cv1.conv", "model.2.m.0", "model.2.cv2.conv"} <= naive["model.2.cv1.conv"].keys()
    assert all(g["prunable"] for g in doc["groups"])


@pytest.mark.parametrize(
    ("fmt", "start"), [("md", "# Pruning analysis: yolov8n.yaml, block 2"), ("dot", "digraph")]
)
def test_analyze_writes_md_and_dot(fmt, start, tmp_path):
    out = tmp_path / f"analysis.{fmt}"
    assert main(["analyze", "yolov8n.yaml", "--blocks", "2", "--format", fmt, "--out", str(out)]) == 0
    assert out.read_text().startswith(start)


def test_analyze_svg_without_graphviz_fails_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("shutil.which", lambda name: None)
    out = tmp_path / "a.svg"
    assert main(["analyze", "yolov8n.yaml", "--blocks", "1", "--format", "svg", "--out", str(out)]) == 2
    assert "Graphviz" in capsys.readouterr().err and not out.exists()


def test_prune_writes_checkpoint_and_plan(pruned, capsys):
    original, out, plan = pruned
    doc = json.loads(plan.read_text())
    assert (
        doc["convs"]["model.1.conv"]["out_before"] == 32
        and len(doc["convs"]["model.1.conv"]["keep_out"]) == 16
    )
    convs = ["model.1.conv", "model.2.cv1.conv", "model.2.m.0.cv1.conv", "model.2.m.0.cv2.conv"]
    assert set(doc["convs"]) == {*convs, "model.2.cv2.conv", "model.3.conv"}
    before, after = conv_widths(original), conv_widths(out)
    assert after["model.2.cv1.conv"] == (16, 16) and after["model.2.cv2.conv"] == (16, 24)
    assert after["model.4.cv1.conv"] == (before["model.4.cv1.conv"][0], 32)
    load_model(str(out)).model(torch.zeros(1, 3, 64, 64))


def test_prune_replays_a_plan_to_identical_widths(pruned, tmp_path, capsys):
    original, out, plan = pruned
    again = tmp_path / "again.pt"
    argv = ["prune", str(original), "--plan-in", str(plan), "--out", str(again), "--no-onnx-check"]
    assert main([*argv, "--plan", str(tmp_path / "again.json")]) == 0
    assert f"replaying {plan}" in capsys.readouterr().out
    assert conv_widths(again) == conv_widths(out)
    assert json.loads((tmp_path / "again.json").read_text())["convs"] == json.loads(plan.read_text())["convs"]


def test_verify_passes_on_the_written_files(pruned, capsys):
    original, out, plan = pruned
    assert main(["verify", str(original), str(out), "--plan", str(plan), "--no-onnx-check"]) == 0
    assert "all checks passed" in capsys.readouterr().out


def test_verify_fails_on_a_tampered_plan(pruned, tmp_path, capsys):
    original, out, plan = pruned
    doc = json.loads(plan.read_text())
    entry = doc["convs"]["model.1.conv"]  # a group with one conv: other channels, same count
    entry["keep_out"] = sorted(set(range(entry["out_before"])) - set(entry["keep_out"]))
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    assert main(["verify", str(original), str(out), "--plan", str(tampered), "--no-onnx-check"]) == 1
    assert "FAILED: weights, equivalence" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.pt", "--ratio", "0.5"], "missing.pt"),
        (["yolov8n.yaml", "--ratio", "0.5", "--blocks", "99"], "--blocks 99: this model has blocks 0 to 22"),
        (["yolov8n.yaml", "--ratio", "0.5", "--layers", "model.2.cv1.cnv"], "Did you mean model.2.cv1.conv"),
        (["yolov8n.yaml", "--ratio", "1.5"], "--ratio 1.5 is outside [0, 1)"),
        (
            ["yolov8n.yaml", "--ratio", "0.5", "--layers", "model.22.cv2.0.2"],
            "every group in the selection is pinned",
        ),
    ],
)
def test_prune_refuses_bad_input_and_writes_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "pruned.pt"
    assert main(["prune", *argv, "--out", str(out), "--plan", str(tmp_path / "plan.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_prune_refuses_a_plan_made_for_another_model(pruned, tmp_path, capsys):
    _, _, plan = pruned
    out = tmp_path / "pruned.pt"
    assert main(["prune", "yolov8n-cls.yaml", "--plan-in", str(plan), "--out", str(out)]) == 2
    assert "made for a different model" in capsys.readouterr().err
    assert not out.exists()


def test_usage_errors_exit_2(capsys):
    assert main(["prune", "yolov8n.yaml", "--out", "x.pt"]) == 2  # no --ratio, target or --plan-in
    amounts = "--ratio --target-flops --target-params --target-latency --plan-in"
    assert f"one of the arguments {amounts} is required" in capsys.readouterr().err
    assert main(["inspect", "yolov8n.yaml", "--format", "pdf"]) == 2
