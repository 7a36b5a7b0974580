"""`verify` says where a pruned model goes wrong: the first layer whose output differs (and by how
much), the first tensor whose shape or weights differ, in the API and in the CLI's FAIL rows."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from yoloprune.cli import main
from yoloprune.pruning.options import PruneOptions
from yoloprune.pruning.verify import compare_outputs, first_divergence, first_state_difference
from yoloprune.yolo.api import excited_copy, prune, verify
from yoloprune.yolo.io import load_model, save_checkpoint

DEEP = "model.6.m.0.cv1.conv"  # a conv deep in yolov8n whose output the prune narrows


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verify")
    original = excited_copy(load_model("yolov8n.yaml").model)  # outputs that depend on the input
    source = save_checkpoint(original, folder / "original.pt")
    r = prune(source, PruneOptions(0.5))
    plan = folder / "plan.json"
    plan.write_text(r.plan_json())
    conv = r.model.get_submodule(DEEP)
    assert conv.out_channels < r.original.get_submodule(DEEP).out_channels
    with torch.no_grad():
        conv.weight[conv.out_channels // 2, 0, 0, 0] += 0.5  # one weight, deep in the model
    return source, r.save(folder / "corrupted.pt"), plan


def test_verify_names_the_first_layer_that_differs(files):
    source, corrupted, plan = files
    v = verify(source, corrupted, plan.read_text(), check_onnx=False)
    assert not v.equivalence.ok and v.structural.ok and v.same_shapes and not v.same_weights
    layer, error = v.equivalence.first_divergence
    assert layer == DEEP and error > v.equivalence.tolerance
    assert v.first_difference[0] == f"{DEEP}.weight" and "max rel difference" in v.first_difference[1]
    assert v.structural.first_divergence is None  # the plan itself is fine


def test_verify_fail_rows_name_the_layer(files, capsys):
    source, corrupted, plan = files
    assert main(["verify", str(source), str(corrupted), "--plan", str(plan), "--no-onnx-check"]) == 1
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines if line.split()[1:2] == ["FAIL"]}
    assert rows.keys() == {"weights", "equivalence"}
    assert f"first differs at {DEEP} (rel error " in rows["equivalence"]
    assert f"first differs at {DEEP}.weight: max rel difference " in rows["weights"]


def test_shapes_row_names_the_first_tensor_of_another_width(files, capsys):
    source, corrupted, plan = files
    doc = json.loads(plan.read_text())
    entry = doc["convs"]["model.1.conv"]
    entry["keep_out"] = entry["keep_out"][:-1]  # the plan keeps one channel fewer than the file has
    other = plan.with_name("narrower.json")
    other.write_text(json.dumps(doc))
    assert main(["verify", str(source), str(corrupted), "--plan", str(other), "--no-onnx-check"]) == 1
    shapes = next(line for line in capsys.readouterr().out.splitlines() if line.split()[0] == "shapes")
    assert "FAIL" in shapes
    n = len(entry["keep_out"])
    assert (
        f"first differs at model.1.conv.weight: shape ({n + 1}, 8, 3, 3), the plan gives ({n}, 8, 3, 3)"
        in shapes
    )


def test_first_divergence_compares_narrowed_outputs_on_the_kept_channels():
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Conv2d(2, 2, 1))
    narrow = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))
    keep = torch.tensor([0, 2, 3])
    with torch.no_grad():
        wide[2].weight[:, 1] = 0  # the masked original: channel 1 is read with zero weights
        sliced = {"0.weight": wide[0].weight[keep], "0.bias": wide[0].bias[keep]}
        narrow.load_state_dict(wide.state_dict() | sliced | {"2.weight": wide[2].weight[:, keep]})
        x = (torch.rand(1, 3, 4, 4),)
        assert first_divergence(narrow, wide, x, {"0": keep}) is None
        narrow[3].weight[1, 1] += 1
        assert first_divergence(narrow, wide, x, {"0": keep})[0] == "3"
        narrow[0].bias[2] += 1  # earlier: output channel 3 of the original, kept as 2
        assert first_divergence(narrow, wide, x, {"0": keep})[0] == "0"
        eq = compare_outputs(narrow, wide, x, kept={"0": keep})
    assert not eq.ok and eq.first_divergence[0] == "0" and eq.first_divergence[1] > eq.tolerance


def test_first_state_difference_order_and_kinds():
    a = {"x": torch.zeros(2), "y": torch.ones(3)}
    missing, doubled = {"x": torch.zeros(2)}, a | {"y": torch.ones(3) * 2}
    assert first_state_difference(a, dict(a), values=True) is None
    assert first_state_difference(a, missing, values=False) == ("y", "missing from the pruned model")
    assert first_state_difference(a, doubled, values=True) == ("y", "max rel difference 1")
    assert first_state_difference(a, doubled, values=False) is None  # shapes only
    assert first_state_difference(a, a | {"z": torch.ones(1)}, values=False)[0] == "z"
