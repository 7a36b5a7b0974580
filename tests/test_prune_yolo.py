"""Pruning real Ultralytics models: the seed's blocks 1-3, custom topologies, plans, every task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from plain_ultralytics import run_without_yoloprune

from yoloprune.errors import YoloPruneError
from yoloprune.graph.explain import naive_breaks
from yoloprune.pruning.options import PruneOptions
from yoloprune.yolo.adapter import ULTRALYTICS
from yoloprune.yolo.api import analyze, excited_copy, prune, verify
from yoloprune.yolo.io import load_model, save_checkpoint

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def v8n():
    return analyze("yolov8n.yaml")


def widths(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    return {
        n: (m.out_channels, m.in_channels) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)
    }


def test_seed_blocks_1_2_3_each_break_something_alone(v8n):
    trace = v8n.graph.trace
    by_conv = {c: {b.module: b for b in naive_breaks(trace, c)} for c in ("model.1.conv", "model.2.cv1.conv")}
    assert by_conv["model.1.conv"]["model.2.cv1.conv"].expected == 32  # yolov8n: block 1 makes 32
    inside = by_conv["model.2.cv1.conv"]
    assert "chunk(2)" in inside["model.2.m.0.cv1.conv"].reason
    assert "residual add" in inside["model.2.m.0"].reason
    assert "concat slot" in inside["model.2.cv2.conv"].reason
    neck = {b.module: b for b in naive_breaks(trace, "model.4.cv2.conv")}
    assert "concat slot 1" in neck["model.15.cv1.conv"].reason and neck["model.15.cv1.conv"].expected == 192


def test_seed_blocks_1_2_3_prune_together_without_mismatch(v8n):
    r = prune("yolov8n.yaml", PruneOptions(0.5, blocks=[1, 2, 3]), analysis=v8n)
    assert r.equivalence.ok and r.structural.ok
    before, after = widths(r.original), widths(r.model)
    for conv in (
        "model.1.conv",
        "model.2.cv1.conv",
        "model.2.m.0.cv1.conv",
        "model.2.cv2.conv",
        "model.3.conv",
    ):
        assert after[conv][0] == before[conv][0] // 2, conv
    assert after["model.4.cv1.conv"] == (before["model.4.cv1.conv"][0], before["model.4.cv1.conv"][1] // 2)
    assert after["model.5.conv"] == before["model.5.conv"]  # outside the selection
    assert r.model.model[2].c == r.original.model[2].c // 2  # C2f's split size follows its cv1
    r.model.train()(torch.zeros(2, 3, 64, 64))


def test_every_prunable_group_at_half_with_rounding(v8n):
    r = prune("yolov8n.yaml", PruneOptions(0.5, round_to=8), analysis=v8n)
    assert r.equivalence.ok and r.structural.ok
    assert r.params[1] < 0.4 * r.params[0] and r.flops[1] < 0.4 * r.flops[0]
    for name, (out, _) in widths(r.model).items():
        if f"{name}.out" in r.widths:
            assert out % 8 == 0 and out > 0, name


@pytest.mark.parametrize("yaml", ["multi_consumer.yaml", "csp_mix.yaml"])
def test_custom_topologies(yaml, tmp_path):
    a = analyze(DATA / yaml)
    r = prune(None, PruneOptions(0.5, importance="random"), analysis=a)
    assert r.equivalence.ok and r.structural.ok
    assert r.params[1] < r.params[0]
    r.model.train()(torch.zeros(2, 3, 64, 64))


def test_attention_in_a_custom_yaml_is_pruned_exactly():
    """C2PSA's attention reads its width from its input (a coupling no op trace sees): the module
    rule couples it, so the block prunes, attention included, and passes the checks (the probe's
    own pin of such a coupling is tested in tests/test_pins_agree.py)."""
    a = analyze(DATA / "csp_mix.yaml")
    (grp,) = a.graph.groups_of("model.8.cv1.conv", "out")
    assert grp.prunable and any(m.module == "model.8.m.0.attn.proj.conv" for m in grp.members)
    r = prune(DATA / "csp_mix.yaml", PruneOptions(0.5, blocks=[8]), analysis=a, check_onnx=False)
    assert all(c.ok for c in r.checks)
    assert r.widths["model.8.m.0.attn.qkv.conv.out"][1] < r.widths["model.8.m.0.attn.qkv.conv.out"][0]


def test_plan_replay_gives_identical_model(v8n, tmp_path):
    r = prune("yolov8n.yaml", PruneOptions(0.3, importance="l2", round_to=4), analysis=v8n)
    doc = json.loads(r.plan_json())
    entry = doc["convs"]["model.2.cv1.conv"]
    assert entry["out_before"] == 32 and entry["keep_out"] == sorted(entry["keep_out"])
    again = prune("yolov8n.yaml", plan=r.plan_json(), analysis=v8n)
    assert again.options == r.options  # the plan records the options and the replay restores them
    assert widths(again.model) == widths(r.model)
    assert all(
        torch.equal(a, b)
        for a, b in zip(again.model.state_dict().values(), r.model.state_dict().values(), strict=True)
    )


def test_tampered_plan_is_refused(v8n):
    doc = json.loads(prune("yolov8n.yaml", PruneOptions(0.5, blocks=[2]), analysis=v8n).plan_json())
    keep = doc["convs"]["model.2.cv1.conv"]["keep_out"]
    doc["convs"]["model.2.cv1.conv"]["keep_out"] = keep[:-1]  # breaks the coupled halves
    with pytest.raises(YoloPruneError, match="coupled"):
        prune("yolov8n.yaml", plan=json.dumps(doc), analysis=v8n)
    doc["convs"]["model.2.cv1.conv"]["keep_out"] = [0, 0, 99]
    with pytest.raises(YoloPruneError, match="distinct channel indices"):
        prune("yolov8n.yaml", plan=json.dumps(doc), analysis=v8n)


def test_plan_for_another_model_is_refused(v8n):
    other = prune("yolov8s.yaml", PruneOptions(0.5, blocks=[1])).plan_json()
    with pytest.raises(YoloPruneError, match="different model"):
        prune("yolov8n.yaml", plan=other, analysis=v8n)


def test_bad_selections(v8n):
    with pytest.raises(YoloPruneError, match="blocks 0 to 22"):
        prune("yolov8n.yaml", PruneOptions(0.5, blocks=[99]), analysis=v8n)
    with pytest.raises(YoloPruneError, match=r"Did you mean model\.2\.cv1\.conv"):
        prune("yolov8n.yaml", PruneOptions(0.5, layers=["model.2.cv1.con"]), analysis=v8n)
    with pytest.raises(YoloPruneError, match="outside"):
        prune("yolov8n.yaml", PruneOptions(1.5), analysis=v8n)
    with pytest.raises(YoloPruneError, match="head output"):
        prune("yolov8n.yaml", PruneOptions(0.5, layers=["model.22.cv3.0.2"]), analysis=v8n)


def test_exclusion_keeps_a_block_intact():
    r = prune("yolov8n.yaml", PruneOptions(0.5, exclude=["model.2"]))
    assert widths(r.model)["model.2.m.0.cv1.conv"] == widths(r.original)["model.2.m.0.cv1.conv"]
    assert widths(r.model)["model.1.conv"][0] == widths(r.original)["model.1.conv"][0]  # feeds model.2


def test_ratio_zero_changes_nothing(v8n):
    r = prune("yolov8n.yaml", PruneOptions(0.0), analysis=v8n)
    assert r.params[0] == r.params[1] and not r.plan.convs


@pytest.mark.parametrize(
    "yaml", ["yolov8n-seg.yaml", "yolo11n-pose.yaml", "yolov8n-obb.yaml", "yolov8n-cls.yaml", "yolo26n.yaml"]
)
def test_every_task_prunes_and_verifies(yaml):
    r = prune(yaml, PruneOptions(0.5, importance="random"))
    assert r.equivalence.ok and r.structural.ok and r.params[1] < r.params[0]


def test_saved_checkpoint_loads_in_plain_ultralytics(v8n, tmp_path):
    r = prune("yolov8n.yaml", PruneOptions(0.5), analysis=v8n)
    path = r.save(tmp_path / "pruned.pt")
    plan = tmp_path / "plan.json"
    plan.write_text(r.plan_json())
    assert verify("yolov8n.yaml", path, plan.read_text()).ok
    out = run_without_yoloprune(
        """
        import torch
        from ultralytics import YOLO
        m = YOLO(sys.argv[1])
        print(sum(p.numel() for p in m.model.parameters()))
        m.model.eval()(torch.zeros(1, 3, 64, 64))
        """,
        path,
    )
    assert int(out.strip().splitlines()[-1]) == r.params[1]


def test_verify_rejects_a_model_that_does_not_match_its_plan(tmp_path):
    original = excited_copy(load_model("yolov8n.yaml").model)  # outputs that depend on the input
    source = save_checkpoint(original, tmp_path / "original.pt")
    r = prune(source, PruneOptions(0.5))
    path = r.save(tmp_path / "pruned.pt")
    good = verify(source, path, r.plan_json())
    assert good.ok and good.equivalence.informative
    with torch.no_grad():
        r.model.model[2].cv2.conv.weight.mul_(-1)
    bad = verify(source, r.save(tmp_path / "tampered.pt"), r.plan_json())
    assert not bad.ok and not bad.same_weights and not bad.equivalence.ok and bad.same_shapes


def test_verify_catches_other_channels_even_on_untrained_weights(v8n, tmp_path):
    r = prune("yolov8n.yaml", PruneOptions(0.5, blocks=[1]), analysis=v8n)
    path = r.save(tmp_path / "pruned.pt")
    good = verify("yolov8n.yaml", path, r.plan_json())  # YAML builds are seeded: same weights
    assert good.ok and not good.equivalence.informative  # untrained: outputs ignore the input
    doc = json.loads(r.plan_json())
    entry = doc["convs"]["model.1.conv"]
    entry["keep_out"] = sorted(set(range(entry["out_before"])) - set(entry["keep_out"]))  # the others
    wrong = verify("yolov8n.yaml", path, json.dumps(doc))
    assert wrong.same_shapes and not wrong.same_weights and not wrong.ok


def test_example_input_matches_stride():
    model = analyze("yolov8n.yaml", run_probe=False).model
    assert ULTRALYTICS.example_inputs(model)[0].shape[-1] == 64
