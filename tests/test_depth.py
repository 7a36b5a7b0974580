"""Depth: whole repeated blocks removed exactly (the shallower model against the original with those
blocks as identity), the YAML counts that rebuild it, plans that replay it, and the errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from plain_ultralytics import run_without_yoloprune
from torch import nn
from ultralytics.nn.tasks import DetectionModel

from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.pruning.depth import Block, Concat, identity_masked, remove_blocks, renamed
from yoloprune.pruning.options import PruneOptions
from yoloprune.pruning.verify import compare_outputs, excite
from yoloprune.reports.analysis import analysis_report, to_json, to_markdown
from yoloprune.workflows.data import make_digits
from yoloprune.yolo.api import analyze, prune, verify
from yoloprune.yolo.dataset import calibration_batches
from yoloprune.yolo.depth import blocks_named, repeated_blocks
from yoloprune.yolo.depth_step import depth_request, take_out, width_options, yaml_repeats
from yoloprune.yolo.io import load_model, save_checkpoint

REPEATS = str(Path(__file__).parent / "data" / "repeats.yaml")


class Chain(nn.Module):
    """A C2f-like chain in plain torch: every block's output, and the chain's input, read by one conv."""

    def __init__(self, c: int = 4, n: int = 3) -> None:
        super().__init__()
        self.cv1 = nn.Conv2d(3, c, 1)
        self.m = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.Tanh()) for _ in range(n))
        self.cv2 = nn.Conv2d((n + 1) * c, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def chain_blocks(c: int, ks: list[int]) -> list[Block]:
    return [Block(f"m.{k}", Concat("cv2", ((k + 1) * c, (k + 2) * c), (k * c, (k + 1) * c))) for k in ks]


@pytest.mark.parametrize("ks", [[0], [1], [2], [0, 1], [1, 2], [0, 2], [0, 1, 2]])
def test_a_concat_chain_folds_its_removed_slices_exactly(ks):
    torch.manual_seed(0)
    model, x = Chain(), (torch.randn(2, 3, 8, 8),)
    blocks = chain_blocks(4, ks)
    masked = identity_masked(model, blocks)
    shallower = Chain()
    shallower.load_state_dict(model.state_dict())
    remove_blocks(shallower, blocks)
    assert len(shallower.m) == 3 - len(ks) and shallower.cv2.in_channels == 4 * (4 - len(ks))
    assert compare_outputs(shallower, masked, x).max_rel_error < 1e-6
    assert len(model.m) == 3 and model.cv2.weight.shape[1] == 16  # the original is untouched
    cut = Chain()
    cut.load_state_dict(model.state_dict())
    cut.cv2.weight.data[:, 4 * (ks[0] + 1) : 4 * (ks[0] + 2)] = 0  # dropping a slice unfolded is wrong
    remove_blocks(cut, [Block(f"m.{ks[0]}")])
    cut.cv2.weight.data = cut.cv2.weight.data[:, :12]
    cut.cv2.in_channels = 12
    assert compare_outputs(cut, identity_masked(model, blocks[:1]), x).max_rel_error > 1e-3


def test_renamed_paths_move_up_past_removed_blocks():
    blocks = [Block("model.4.m.0"), Block("model.4.m.2"), Block("model.6.m.0")]
    paths = ["model.4.m.1.cv1", "model.4.m.3", "model.4.m.2.cv2", "model.6.m.1", "model.4.cv2"]
    assert renamed(paths, blocks) == ("model.4.m.0.cv1", "model.4.m.1", "model.6.m.0", "model.4.cv2")


def test_yaml_repeats_rebuild_the_count():
    for depth in (0.33, 0.5, 0.67, 1.0, 1.33):
        for count in range(5):
            n = yaml_repeats(count, depth)
            assert (max(round(n * depth), 1) if n > 1 else n) == count


# (YAML, blocks removed together: the first, middle and last of their lists, as the model has them)
CASES = {
    "C2f": ("yolov8n.yaml", ["model.2.m.0", "model.4.m.1", "model.6.m.0", "model.6.m.1"]),
    "C3": ("yolov5n.yaml", ["model.4.m.0", "model.6.m.2", "model.8.m.0"]),
    "C3k2 (Bottleneck, C3k) and C2PSA": ("yolo11n.yaml", ["model.2.m.0", "model.6.m.0", "model.10.m.0"]),
    "A2C2f": ("yolo12n.yaml", ["model.6.m.1", "model.8.m.0", "model.11.m.0"]),
    "RepNCSPELAN4": (
        "yolov9t.yaml",
        ["model.4.cv2.0.m.0", "model.4.cv3.0.m.0", "model.6.cv2.0.m.1", "model.6.cv3.0.m.1"],
    ),
    "C3k2 with attention (yolo26)": ("yolo26n.yaml", ["model.22.m.0", "model.4.m.0"]),
}


@pytest.mark.parametrize("case", CASES)
def test_removing_blocks_of_shipped_models_is_exact_and_the_yaml_rebuilds_it(case):
    name, paths = CASES[case]
    model = load_model(name).model
    found = repeated_blocks(model)
    removed = blocks_named(found, paths)
    before = {r.owner: len(model.get_submodule(r.blocks[0].container)) for r in removed}
    step = take_out(model, removed)
    assert step.check.ok and step.structural.ok and step.structural.informative, step.check
    for r in removed:
        gone = sum(q.owner == r.owner for q in removed)
        assert len(step.model.get_submodule(r.blocks[0].container)) == before[r.owner] - gone
    assert step.model.yaml != model.yaml
    rebuilt, mine = DetectionModel(step.model.yaml, verbose=False).state_dict(), step.model.state_dict()
    assert mine.keys() == rebuilt.keys() and all(mine[k].shape == rebuilt[k].shape for k in mine)


def test_blocks_the_yaml_cannot_count_are_listed_with_the_reason():
    found = {r.path: r for r in repeated_blocks(load_model("yolo11n.yaml").model)}
    inner = found["model.6.m.0.m.0"]  # a bottleneck of the C3k inside C3k2
    assert not inner.removable and "fixed number of blocks" in inner.reason
    assert found["model.6.m.0"].removable and found["model.6.m.0"].kind == "C3k in C3k2"
    with pytest.raises(
        YoloPruneError, match=re.escape("cannot be removed: Ultralytics' code builds the C3k model.6.m.0")
    ):
        blocks_named(found.values(), ["model.6.m.0.m.0"])
    with pytest.raises(YoloPruneError, match="not a repeated block of this model"):
        blocks_named(found.values(), ["model.6.cv1"])


def test_blocks_that_change_the_shape_or_that_ultralytics_repeats_itself_stay():
    found = {r.path: r for r in repeated_blocks(load_model(REPEATS).model)}
    assert found["model.4.1"].reason == (
        "Ultralytics repeats Bottleneck 2 times as block 4 itself (an nn.Sequential); yoloprune removes "
        "blocks from a module's own list only"
    )
    assert found["model.3.m.0"].reason == (
        "it changes the shape ((32, 16, 16) -> (16, 16, 16)), so no identity can stand in for it"
    )
    removable = [p for p, r in found.items() if r.removable]
    assert removable == [
        "model.1.m.0", "model.1.m.1", "model.3.m.1", "model.6.m.0", "model.6.m.1", "model.6.m.2",
        "model.7.m.0", "model.7.m.1",
    ]  # fmt: skip
    assert found["model.3.m.1"].kind == "Conv in HGBlock" and found["model.6.m.0"].kind == "Bottleneck in C3"


def test_half_of_a_shared_count_is_refused():
    found = repeated_blocks(load_model("yolov9t.yaml").model)
    with pytest.raises(YoloPruneError, match=re.escape("without model.4.cv3.0.m.0, which shares its count")):
        blocks_named(found, ["model.4.cv2.0.m.0"])


@pytest.mark.slow
def test_rtdetr_blocks_that_change_the_shape_stay():
    found = {r.path: r for r in repeated_blocks(load_model("rtdetr-l.yaml").model)}
    assert found["model.3.m.0"].reason == (
        "it changes the shape ((128, 8, 8) -> (96, 8, 8)), so no identity can stand in for it"
    )
    assert found["model.1.m.0"].removable  # an HGBlock's first block where its input is as wide
    assert found["model.5.m.1"].removable and found["model.5.m.1"].kind == "LightConv in HGBlock"
    assert found["model.16.m.0"].removable and found["model.16.m.0"].kind == "RepConv in RepC3"


def test_depth_with_nothing_removable_in_the_selection_is_refused():
    a = analyze("yolov8n.yaml", run_probe=False)
    with pytest.raises(OptionError, match="no repeated block in the selection can be removed"):
        prune(None, PruneOptions(0.2, depth=0.5, blocks=[0, 1]), analysis=a)


def test_blocks_then_channels_to_a_target_prove_save_verify_and_replay(tmp_path):
    options = PruneOptions(target_flops=0.6, depth=1.0, exclude=("model.6.m.2.cv1.conv",))
    r = prune(REPEATS, options, check_onnx=False)
    assert r.ok and [c.name for c in r.checks][:2] == ["depth", "equivalence"]
    assert "model.6.m.2" not in r.depth.paths and {"model.6.m.0", "model.6.m.1"} <= set(r.depth.paths)
    assert r.options == options and r.analysis.exclude == ("model.6.m.0.cv1.conv",)  # renamed
    assert r.model.model[6].m[0].cv1.conv.out_channels == 16  # and still whole
    assert [len(r.model.model[i].m) for i in (1, 3, 6, 7)] == [0, 1, 1, 0]
    assert abs(r.plan.budget.reached - 0.6) <= 0.6 * 0.02 and r.plan.budget.target == pytest.approx(0.6)
    assert r.plan.budget.original == r.flops[0] and r.flops[1] / r.flops[0] == pytest.approx(
        r.plan.budget.reached
    )
    path, plan = r.save(tmp_path / "pruned.pt"), r.plan_json()
    assert json.loads(plan)["removed_blocks"] == list(r.depth.paths)
    v = verify(REPEATS, path, plan, check_onnx=False)
    assert v.ok and v.same_weights and [c.name for c in v.checks][:2] == ["depth", "shapes"]
    again = prune(REPEATS, plan=plan, check_onnx=False)
    mine, theirs = r.model.state_dict(), again.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    doc = json.loads(plan)
    doc["removed_blocks"] = ["model.6.m.7"]
    with pytest.raises(YoloPruneError, match=re.escape("'model.6.m.7', which is not a repeated block")):
        prune(REPEATS, plan=json.dumps(doc))


@pytest.mark.slow
def test_depth_then_channels_prove_save_verify_and_replay(tmp_path):
    options = PruneOptions(0.25, depth=1.0, blocks=[4, 6], exclude=("model.4.m.1.cv1.conv",))
    r = prune("yolov8n.yaml", options, check_onnx=False)
    assert r.ok and [c.name for c in r.checks][:2] == ["depth", "equivalence"]
    assert r.depth.paths == ("model.6.m.0", "model.6.m.1", "model.4.m.0")  # the least changing first
    assert r.options == options and r.analysis.exclude == ("model.4.m.0.cv1.conv",)
    assert r.model.model[4].m[0].cv1.conv.out_channels == 32  # the excluded layer, renamed, is whole
    assert r.model.model[4].cv2.conv.in_channels == 96  # one slice of 32 folded away; the rest pinned
    assert len(r.model.model[6].m) == 0 and r.model.model[6].cv2.conv.in_channels < 128
    path, plan = r.save(tmp_path / "pruned.pt"), r.plan_json()
    assert json.loads(plan)["removed_blocks"] == list(r.depth.paths)
    v = verify("yolov8n.yaml", path, plan, check_onnx=False)
    assert v.ok and v.same_weights and [c.name for c in v.checks][:2] == ["depth", "shapes"]
    again = prune("yolov8n.yaml", plan=plan, check_onnx=False)
    mine, theirs = r.model.state_dict(), again.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    doc = json.loads(plan)
    doc["removed_blocks"] = ["model.4.m.7"]
    with pytest.raises(YoloPruneError, match=re.escape("'model.4.m.7', which is not a repeated block")):
        prune("yolov8n.yaml", plan=json.dumps(doc))


def test_depth_alone_below_the_target_is_refused():
    model = load_model("yolov8n.yaml").model
    step = take_out(model, [r for r in repeated_blocks(model) if r.removable])
    options = PruneOptions(target_params=0.99, depth=1.0)
    message = "alone keeps 66.7% of the params, less than target_params=0.99; lower depth"
    with pytest.raises(OptionError, match=re.escape(message)):
        width_options(options, step, (torch.zeros(1, 3, 640, 640),))
    kept = sum(p.numel() for p in step.model.parameters()) / sum(p.numel() for p in model.parameters())
    assert width_options(PruneOptions(target_params=0.5, depth=1.0), step, ()).target_params == pytest.approx(
        0.5 / kept, rel=1e-12
    )


@pytest.mark.slow
def test_a_target_counts_both_steps_against_the_original():
    r = prune("yolov8n.yaml", PruneOptions(target_flops=0.6, depth=0.5), check_onnx=False)
    assert r.ok and len(r.depth.removed) == 5
    assert abs(r.plan.budget.reached - 0.6) <= 0.6 * 0.02 and r.plan.budget.target == 0.6
    assert r.plan.budget.original == r.flops[0]
    assert abs(r.flops[1] / r.flops[0] - r.plan.budget.reached) < 1e-9


def test_depth_pruned_checkpoint_loads_and_runs_in_plain_ultralytics(tmp_path):
    model = load_model("yolo12n.yaml").model
    step = take_out(model, [r for r in repeated_blocks(model) if r.removable])
    assert step.check.ok and len(step.model.model[6].m) == 0
    path = save_checkpoint(step.model, tmp_path / "pruned.pt")
    out = run_without_yoloprune(
        """
        import torch
        from ultralytics import YOLO
        m = YOLO(sys.argv[1])
        print([len(m.model.model[i].m) for i in (6, 8)], m.model.yaml["backbone"][6][1])
        print(sum(p.numel() for p in m.model.parameters()))
        m.model.eval()(torch.zeros(1, 3, 64, 64))
        """,
        path,
    )
    lines = out.strip().splitlines()
    assert lines[-2] == "[0, 0] 0" and int(lines[-1]) == sum(p.numel() for p in step.model.parameters())


@pytest.mark.slow
def test_depth_pruned_checkpoint_predicts_and_exports_onnx_in_plain_ultralytics(tmp_path):
    r = prune("yolov8n.yaml", PruneOptions(0.25, depth=1.0))
    assert r.ok and "ONNX" in [c.name for c in r.checks]
    path = r.save(tmp_path / "pruned.pt")
    out = run_without_yoloprune(
        """
        import numpy as np
        from ultralytics import YOLO
        m = YOLO(sys.argv[1])
        m.predict(np.zeros((64, 64, 3), dtype=np.uint8), imgsz=64, verbose=False)
        print(m.export(format="onnx", imgsz=64))
        """,
        path,
        cwd=tmp_path,
    )
    assert out.strip().splitlines()[-1].endswith(".onnx")


def test_excited_models_keep_the_proof_sharp():
    """On signal-carrying weights a removal done wrong is caught: the masked original must be the
    identity-replaced model, not the model with the block's branch merely dropped."""
    model = excite(load_model("yolov8n.yaml").model, (torch.rand(4, 3, 64, 64),))
    removed = blocks_named(repeated_blocks(model), ["model.4.m.1"])
    step = take_out(model, removed)
    assert step.check.ok
    wrong = identity_masked(model, [Block("model.4.m.0")])
    x = (torch.rand(1, 3, 64, 64),)
    assert compare_outputs(step.model, wrong, x).max_rel_error > 1e-3


def test_analyze_lists_repeated_blocks_and_why_the_others_stay():
    r = analysis_report(analyze("yolo11n.yaml", run_probe=False), blocks=[6, 10])
    doc = json.loads(to_json(r))["repeated_blocks"]
    assert [(d["path"], d["removable"]) for d in doc] == [
        ("model.6.m.0", True),
        ("model.6.m.0.m.0", False),
        ("model.6.m.0.m.1", False),
        ("model.10.m.0", True),
    ]
    assert doc[0]["kind"] == "C3k in C3k2" and 0 < doc[0]["flops_share"] < 0.1
    text = to_markdown(r)
    assert "## Repeated blocks (depth)" in text and "2 of 4 repeated blocks can be removed whole" in text
    assert "| `model.6.m.0.m.1` | Bottleneck in C3k | 0.9% |  | no: Ultralytics' code builds" in text


def test_block_importance_is_measured_on_calibration_images_when_given(tmp_path):
    data = make_digits(tmp_path / "digits", images=8, imgsz=64).yaml
    model = load_model("yolov8n.yaml").model
    options = PruneOptions(0.2, depth=0.5, importance="taylor", calib_images=8, calib_imgsz=64)
    chosen = depth_request(model, options, None, data=data)
    assert len(chosen) == 5 and all(r.removable for r in chosen)
    images = [(b["img"],) for b in calibration_batches(data, "detect", 64, 8)]
    on_images = {r.path: r.change for r in repeated_blocks(model, batches=images)}
    assert [r.change for r in chosen] == [on_images[r.path] for r in chosen]
    assert sorted(on_images.values())[:5] == [r.change for r in chosen]
    assert on_images != {r.path: r.change for r in repeated_blocks(model)}  # not the example input's


def test_a_selection_of_layers_follows_the_blocks_that_move_up():
    options = PruneOptions(0.5, depth=1.0, layers=("model.6.m.0", "model.6.m.2.cv2.conv"))
    r = prune(REPEATS, options, check_onnx=False)
    assert r.ok and r.depth.paths == ("model.6.m.0",)
    assert r.scope == ("model.6.m.1.cv2.conv",)  # what was model.6.m.2 before model.6.m.0 went
    assert r.model.model[6].m[1].cv2.conv.out_channels < 16
