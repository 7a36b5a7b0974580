"""The pickle-free safe format: exact round trips, no unpickling, and refusals of tampered folders."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from yoloprune.cli import main
from yoloprune.errors import YoloPruneError
from yoloprune.graph.trace import flat_tensors
from yoloprune.pruning.options import PruneOptions
from yoloprune.yolo.adapter import ULTRALYTICS
from yoloprune.yolo.api import prune
from yoloprune.yolo.io import load_model
from yoloprune.yolo.safe import ARCHITECTURE, WEIGHTS, load_safe, save_safe

TINY = Path(__file__).parent / "data" / "tiny.yaml"


@pytest.fixture(scope="module")
def pruned():
    return prune(TINY, PruneOptions(0.5, importance="random", seed=3))


def assert_same_model(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)
    x = ULTRALYTICS.example_inputs(a, seed=1)
    with torch.no_grad():
        outs = [list(flat_tensors(ULTRALYTICS.select_outputs(m.eval()(*x)))) for m in (a, b)]
    assert all(torch.equal(p, q) for p, q in zip(*outs, strict=True))


def test_rebuilt_model_equals_the_pruned_one(pruned, tmp_path):
    folder = pruned.save(tmp_path / "pruned.safe", format="safe")
    assert sorted(os.listdir(folder)) == [ARCHITECTURE, WEIGHTS] and os.listdir(tmp_path) == ["pruned.safe"]
    loaded = load_model(folder)
    assert_same_model(pruned.model, loaded.model)
    assert loaded.model.model[2].c == pruned.model.model[2].c < pruned.original.model[2].c
    assert loaded.model.names == pruned.model.names and loaded.task == "detect"
    assert loaded.ckpt["yoloprune"]["plan"] == json.loads(pruned.plan_json())["convs"]


def test_loading_never_unpickles(pruned, tmp_path, monkeypatch):
    folder = pruned.save(tmp_path / "pruned.safe", format="safe")

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for owner, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(owner, name, refuse)
    assert_same_model(pruned.model, load_safe(folder))


@pytest.mark.parametrize(
    "name", ["yolov8n-cls.yaml", "yolo11n-seg.yaml", "yolov8n-pose.yaml", "yolo26n-obb.yaml", "yolov6n.yaml"]
)
def test_every_task_round_trips(name, tmp_path):
    model = load_model(name).model  # yolov6n.yaml sets `activation: torch.nn.ReLU()`
    assert_same_model(model, load_safe(save_safe(model, tmp_path / "m.safe")))


def _edit_architecture(folder: Path, edit) -> None:
    doc = yaml.safe_load((folder / ARCHITECTURE).read_text())
    edit(doc)
    (folder / ARCHITECTURE).write_text(yaml.safe_dump(doc))


def test_tampered_weights_with_a_wrong_shape_are_refused(pruned, tmp_path):
    folder = pruned.save(tmp_path / "pruned.safe", format="safe")
    tensors = load_file(str(folder / WEIGHTS))
    tensors["model.1.conv.weight"] = torch.zeros(5, 1, 3, 3)
    save_file(tensors, str(folder / WEIGHTS))
    with pytest.raises(
        YoloPruneError, match=r"tensor 'model\.1\.conv\.weight' is .*\[5, 1, 3, 3\].*says"
    ) as e:
        load_model(folder)
    assert str(folder / WEIGHTS) in str(e.value)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:100]), "Cannot read the weights"),
        (lambda f: (f / WEIGHTS).unlink(), "Cannot read the weights"),
        (lambda f: (f / ARCHITECTURE).write_text("format: [unclosed"), "cannot be read as YAML"),
        (lambda f: (f / ARCHITECTURE).write_text("just text"), "format: yoloprune-safe"),
        (lambda f: _edit_architecture(f, lambda d: d.update(version=99)), "version 99"),
        (
            lambda f: _edit_architecture(f, lambda d: d.update(model_class="Ensemble")),
            "model class 'Ensemble'",
        ),
        (
            lambda f: _edit_architecture(f, lambda d: d["tensors"].pop("model.0.bn.bias")),
            "tensors do not match",
        ),
        (
            lambda f: _edit_architecture(f, lambda d: d["layers"]["model.3.conv"].update(out_channels=7)),
            r"layer 'model\.3\.conv' has widths .*'out_channels': 7.*tensors imply",
        ),
    ],
)
def test_damaged_folders_are_refused_clearly(pruned, tmp_path, damage, message):
    folder = pruned.save(tmp_path / "pruned.safe", format="safe")
    damage(folder)
    with pytest.raises(YoloPruneError, match=message):
        load_safe(folder)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["model_yaml"].update(activation="__import__('os').system('touch pwned')"), "activation"),
        (lambda d: d["model_yaml"]["backbone"][0].__setitem__(2, "torch_safe_load"), "'torch_safe_load'"),
        (lambda d: d["model_yaml"]["backbone"][0].__setitem__(2, "TorchVision"), "'TorchVision'"),
        (lambda d: d["model_yaml"]["backbone"][0].__setitem__(2, "DetectionModel"), "'DetectionModel'"),
    ],
)
def test_architecture_cannot_make_the_loader_run_code(pruned, tmp_path, monkeypatch, edit, message):
    folder = pruned.save(tmp_path / "pruned.safe", format="safe")
    _edit_architecture(folder, edit)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(YoloPruneError, match=message):
        load_safe(folder)
    assert not (tmp_path / "pwned").exists()


def test_save_replaces_an_older_safe_folder_and_refuses_other_paths(pruned, tmp_path):
    folder = pruned.save(tmp_path / "pruned.safe", format="safe")
    assert pruned.save(folder, format="safe") == folder and os.listdir(tmp_path) == ["pruned.safe"]
    mine = tmp_path / "runs"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(YoloPruneError, match="already exists and is not a yoloprune safe folder"):
        pruned.save(mine, format="safe")
    assert os.listdir(mine) == ["keep.txt"]


def test_failed_write_leaves_nothing_and_keeps_the_old_folder(pruned, tmp_path, monkeypatch):
    folder = pruned.save(tmp_path / "pruned.safe", format="safe")
    before = (folder / WEIGHTS).read_bytes()

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("yoloprune.yolo.safe.save_file", disk_full)
    with pytest.raises(YoloPruneError, match="No space left on device"):
        pruned.save(folder, format="safe")
    assert os.listdir(tmp_path) == ["pruned.safe"] and (folder / WEIGHTS).read_bytes() == before


def test_models_without_an_ultralytics_yaml_are_refused(tmp_path):
    with pytest.raises(YoloPruneError, match=r"Save it as a \.pt checkpoint"):
        save_safe(nn.Sequential(nn.Conv2d(3, 4, 1)), tmp_path / "m.safe")
    assert os.listdir(tmp_path) == []


def test_a_torchvision_backbone_is_refused_when_saving_not_left_for_loading(tmp_path):
    # The loader never builds a TorchVision layer (it fetches weights by a name from the file), so a safe
    # folder holding one could not be loaded: saving one is refused instead of writing a dead folder.
    yaml_path = tmp_path / "resnet18-cls.yaml"
    yaml_path.write_text(
        "nc: 3\nbackbone:\n  - [-1, 1, TorchVision, [512, resnet18, null, True, 2]]\n"
        "head:\n  - [-1, 1, Classify, [nc]]\n"
    )
    with pytest.raises(
        YoloPruneError, match=r"layer 'model\.0' is a TorchVision.*Save it as a \.pt checkpoint"
    ):
        save_safe(load_model(yaml_path).model, tmp_path / "m.safe")
    assert sorted(os.listdir(tmp_path)) == ["resnet18-cls.yaml"]


def test_cli_writes_verifies_and_inspects_a_safe_folder(tmp_path, capsys):
    model = TINY
    out, plan = tmp_path / "pruned.safe", tmp_path / "plan.json"
    argv = ["prune", str(model), "--ratio", "0.5", "--no-onnx-check", "--save-format", "safe"]
    assert main([*argv, "--out", str(out), "--plan", str(plan)]) == 0
    assert sorted(os.listdir(out)) == [ARCHITECTURE, WEIGHTS]
    assert main(["verify", str(model), str(out), "--plan", str(plan), "--no-onnx-check"]) == 0
    assert "all checks passed" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    assert main([*argv, "--out", str(tmp_path / "pruned.pt")]) == 2
    assert "writes a folder, not a .pt file" in capsys.readouterr().err


def test_edits_consistent_within_a_layer_but_not_across_layers_are_refused(pruned, tmp_path):
    folder = pruned.save(tmp_path / "pruned.safe", format="safe")
    tensors = load_file(str(folder / WEIGHTS))
    c_in = tensors["model.1.conv.weight"].shape[1]
    tensors["model.1.conv.weight"] = torch.zeros(5, c_in, 3, 3)
    save_file(tensors, str(folder / WEIGHTS))

    def edit(doc: dict) -> None:
        doc["tensors"]["model.1.conv.weight"] = [5, c_in, 3, 3]
        doc["layers"]["model.1.conv"]["out_channels"] = 5

    _edit_architecture(folder, edit)
    with pytest.raises(YoloPruneError, match="the rebuilt model does not run"):
        load_safe(folder)
