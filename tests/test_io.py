"""Loading models from every kind of source, saving checkpoints Ultralytics reads, and the errors of both."""

import errno
import os
from copy import deepcopy
from pathlib import Path

import pytest
import torch
from plain_ultralytics import run_without_yoloprune
from torch import nn
from ultralytics import YOLO
from ultralytics.utils.patches import torch_load

from yoloprune.atomic import atomic_write
from yoloprune.errors import YoloPruneError
from yoloprune.yolo.api import PruneOptions, prune
from yoloprune.yolo.io import load_model, save_checkpoint

TINY_YAML = """\
nc: 3
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, C2f, [32, True]]
  - [-1, 1, Conv, [64, 3, 2]]
head:
  - [[2, 3], 1, Detect, [nc]]
"""
TRAINER_KEYS = {
    "epoch",
    "best_fitness",
    "model",
    "ema",
    "updates",
    "optimizer",
    "train_args",
    "train_metrics",
    "train_results",
    "date",
    "version",
    "license",
    "docs",
}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def yolov8n():
    return load_model("yolov8n.yaml")


@pytest.mark.parametrize(
    ("name", "task", "cls"),
    [
        ("yolov8n.yaml", "detect", "DetectionModel"),
        ("yolo11n-seg.yaml", "segment", "SegmentationModel"),
        ("yolo26n-pose.yaml", "pose", "PoseModel"),
        ("yolov8n-cls.yaml", "classify", "ClassificationModel"),
    ],
)
def test_shipped_yaml_names_build_float32_cpu_models(name, task, cls):
    loaded = load_model(name)
    assert (type(loaded.model).__name__, loaded.task, loaded.source, loaded.ckpt) == (cls, task, name, None)
    assert {(p.dtype, p.device.type) for p in loaded.model.parameters()} == {(torch.float32, "cpu")}


def test_scale_letter_in_a_yaml_name_selects_the_scale():
    assert _n_params(load_model("yolov8s.yaml").model) > 2 * _n_params(load_model("yolov8n.yaml").model)


def test_classification_yaml_prints_no_model_summary(capfd, caplog):
    load_model("yolov8n-cls.yaml")
    assert "summary" not in capfd.readouterr().out + caplog.text


def test_custom_yaml_file_builds(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML)
    loaded = load_model(path)
    assert loaded.source == str(path)
    assert loaded.task == "detect"
    assert loaded.model.model[-1].nc == 3


def test_yolo_object_gives_its_own_model():
    yolo = YOLO("yolov8n.yaml")
    loaded = load_model(yolo)
    assert loaded.model is yolo.model
    assert (loaded.task, loaded.ckpt) == ("detect", None)


def test_plain_module_is_used_in_place_as_float32():
    module = nn.Sequential(nn.Conv2d(3, 4, 1)).half()
    loaded = load_model(module)
    assert loaded.model is module
    assert module[0].weight.dtype == torch.float32
    assert loaded.task == "unknown"


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n-seg.yaml"])
def test_save_then_load_round_trips_exactly(tmp_path, name):
    original = load_model(name)
    path = save_checkpoint(original.model, tmp_path / "m.pt", meta={"ratio": 0.5, "blocks": (1, 2)})
    loaded = load_model(path)
    _assert_same_state(original.model, loaded.model)
    assert (loaded.task, loaded.source) == (original.task, str(path))
    assert loaded.ckpt.keys() >= TRAINER_KEYS
    assert loaded.ckpt["ema"] is None
    assert loaded.ckpt["yoloprune"] == {"ratio": 0.5, "blocks": [1, 2]}  # the JSON round trip
    assert os.listdir(tmp_path) == ["m.pt"]  # no temporary file left


def test_trainer_style_checkpoint_loads_its_half_ema_as_float32(tmp_path):
    ema = load_model("yolov8n.yaml").model
    path = tmp_path / "last.pt"
    torch.save({"epoch": 5, "model": None, "ema": deepcopy(ema).half(), "train_args": {"imgsz": 320}}, path)
    loaded = load_model(path)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    assert loaded.ckpt["train_args"] == {"imgsz": 320}
    assert loaded.task == "detect"
    torch.testing.assert_close(loaded.model.state_dict(), ema.half().float().state_dict(), rtol=0, atol=0)


def test_yolo_object_loaded_from_a_checkpoint_passes_its_ckpt_on(tmp_path, yolov8n):
    path = save_checkpoint(yolov8n.model, tmp_path / "m.pt", meta={"ratio": 0.25})
    loaded = load_model(YOLO(path))
    assert loaded.source == str(path)
    assert loaded.ckpt["yoloprune"] == {"ratio": 0.25}
    _assert_same_state(yolov8n.model, loaded.model)


def test_saved_checkpoint_keeps_source_train_args(tmp_path, yolov8n):
    source_ckpt = {"train_args": {"task": "detect", "data": "coco8.yaml", "imgsz": 320}}
    path = save_checkpoint(yolov8n.model, tmp_path / "m.pt", source_ckpt=source_ckpt)
    assert load_model(path).ckpt["train_args"] == source_ckpt["train_args"]


def test_saved_checkpoint_loads_and_predicts_without_yoloprune(tmp_path, yolov8n):
    path = save_checkpoint(yolov8n.model, tmp_path / "m.pt", meta={"note": "pruned"})
    out = run_without_yoloprune(
        """
        import numpy as np
        from ultralytics import YOLO
        try:
            import yoloprune
        except ImportError:
            pass
        else:
            raise SystemExit("yoloprune is importable; the test would prove nothing")
        model = YOLO(sys.argv[1])
        results = model.predict(np.zeros((64, 64, 3), dtype=np.uint8), imgsz=64, verbose=False)
        print("OK", model.task, type(model.model).__name__, len(results), model.ckpt["yoloprune"]["note"])
        """,
        path,
        cwd=tmp_path,
    )
    assert out.split() == ["OK", "detect", "DetectionModel", "1", "pruned"]


def test_save_strips_hooks_from_the_copy_only(tmp_path):
    model = load_model("yolov8n.yaml").model
    model.model[0].register_forward_hook(lambda module, args, out: None)
    model.model[1].register_forward_pre_hook(lambda module, args: None)
    loaded = load_model(save_checkpoint(model, tmp_path / "m.pt")).model
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in loaded.modules())
    assert model.model[0]._forward_hooks and model.model[1]._forward_pre_hooks  # the live model keeps them


TORCHVISION_YAML = """\
nc: 3
backbone:
  - [-1, 1, TorchVision, [512, resnet18, null, True, 2]]
head:
  - [-1, 1, Classify, [nc]]
"""


def _torchvision_yaml(folder: Path) -> Path:
    path = folder / "resnet18-cls.yaml"
    path.write_text(TORCHVISION_YAML)
    return path


def test_pruned_torchvision_backbone_saves_and_loads_without_yoloprune(tmp_path):
    # Ultralytics requires torchvision and pickles its modules itself (yolo11-cls-resnet18.yaml).
    result = prune(str(_torchvision_yaml(tmp_path)), PruneOptions(0.5), check_onnx=False)
    path = result.save(tmp_path / "r18.pt")
    out = run_without_yoloprune(
        """
        import numpy as np
        from ultralytics import YOLO
        model = YOLO(sys.argv[1])
        results = model.predict(np.zeros((64, 64, 3), dtype=np.uint8), imgsz=64, verbose=False)
        block = model.model.model[0].m[4][0]  # a torchvision.models.resnet.BasicBlock
        print("OK", model.task, type(block).__module__, sum(p.numel() for p in model.parameters()))
        """,
        path,
        cwd=tmp_path,
    )
    assert out.split() == ["OK", "classify", "torchvision.models.resnet", str(result.params[1])]


def test_restricted_loading_names_the_torchvision_layer_it_refuses(tmp_path, monkeypatch):
    path = save_checkpoint(load_model(_torchvision_yaml(tmp_path)).model, tmp_path / "r18.pt")
    monkeypatch.setattr("ultralytics.nn.tasks.SAFE_LOAD", True)  # as ULTRALYTICS_SAFE_LOAD=1 does
    with pytest.raises(
        YoloPruneError, match=r"pickles torchvision\.models\.resnet\.\w+, which restricted"
    ) as e:
        load_model(path)
    assert "safe format cannot hold" in str(e.value)


class _ForeignLayer(nn.Identity):
    """A layer class from outside torch/ultralytics (this test module)."""


def test_save_refuses_objects_a_plain_ultralytics_process_cannot_unpickle(tmp_path):
    model = load_model("yolov8n.yaml").model
    model.model[2] = _ForeignLayer()
    with pytest.raises(YoloPruneError, match=r"layer 'model\.2'.*_ForeignLayer"):
        save_checkpoint(model, tmp_path / "m.pt")
    assert os.listdir(tmp_path) == []


def test_save_stores_compact_tensors_not_views_of_larger_storage(tmp_path):
    big = torch.randn(64, 3, 1, 1)
    model = nn.Sequential(nn.Conv2d(3, 8, 1))
    model[0].weight = nn.Parameter(big[:8])  # shares big's storage, as a naive slice would
    save_checkpoint(model, tmp_path / "m.pt")
    weight = torch_load(tmp_path / "m.pt")["model"][0].weight
    assert weight.untyped_storage().nbytes() == weight.nbytes
    assert torch.equal(weight, big[:8])


def test_missing_checkpoint_is_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(YoloPruneError, match="never downloads") as info:
        load_model("yolov8n.pt")
    assert "yolov8n.yaml" in str(info.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"this is a text file, not a checkpoint\n", "not a readable PyTorch checkpoint"),
        (b"", "not a readable PyTorch checkpoint"),
    ],
)
def test_non_checkpoint_files_are_explained(tmp_path, content, expected):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(YoloPruneError, match=expected) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_truncated_checkpoint_is_explained(tmp_path, yolov8n):
    path = save_checkpoint(yolov8n.model, tmp_path / "model.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(YoloPruneError, match="truncated") as info:
        load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda m: {"epoch": 3, "weights": None}, "holds no Ultralytics model.*'weights'"),
        (lambda m: m.state_dict(), "state_dict"),
        (lambda m: {"model": m.state_dict()}, "'model' is a collections.OrderedDict"),
        (lambda m: m, r"torch\.save\(model\)"),
    ],
)
def test_checkpoints_without_a_model_are_explained(tmp_path, yolov8n, make, expected):
    path = tmp_path / "model.pt"
    torch.save(make(yolov8n.model), path)
    with pytest.raises(YoloPruneError, match=expected):
        load_model(path)


def test_yaml_with_unknown_module_names_file_and_module(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY_YAML.replace("C2f", "NoSuchBlock"))
    with pytest.raises(YoloPruneError, match=r"does not build.*NoSuchBlock") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_yaml_syntax_error_is_explained(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("nc: 3\nbackbone: [[-1, 1, Conv\n  x: : y\n")
    with pytest.raises(YoloPruneError, match="does not build"):
        load_model(path)


def test_misspelled_yaml_name_suggests_shipped_names():
    with pytest.raises(YoloPruneError, match="did you mean") as info:
        load_model("yolov8q.yaml")
    assert "yolov8n.yaml" in str(info.value) and "yolov8s.yaml" in str(info.value)


def test_missing_yaml_path_is_reported(tmp_path):
    with pytest.raises(YoloPruneError, match="not found"):
        load_model(tmp_path / "nowhere" / "yolov8n.yaml")


@pytest.mark.parametrize("source", ["model.onnx", "yolov8n", 42, None])
def test_unsupported_sources_are_rejected(source):
    with pytest.raises(YoloPruneError, match="Cannot load"):
        load_model(source)


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, yolov8n, monkeypatch):
    target = tmp_path / "m.pt"
    target.write_bytes(b"previous")

    def disk_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.serialization, "save", disk_full)
    with pytest.raises(YoloPruneError, match="No space left on device") as info:
        save_checkpoint(yolov8n.model, target)
    assert str(target) in str(info.value)
    assert os.listdir(tmp_path) == ["m.pt"]
    assert target.read_bytes() == b"previous"


def test_read_only_directory_is_reported(tmp_path, yolov8n):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user (e.g. root) whom chmod does not stop from writing")
        with pytest.raises(YoloPruneError, match="Could not write"):
            save_checkpoint(yolov8n.model, folder / "m.pt")
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize(
    ("path", "kwargs", "expected"),
    [
        ("nodir/m.pt", {}, "does not exist"),
        ("m.onnx", {}, r"\*\.pt"),
        ("m.pt", {"meta": {"tensor": torch.zeros(1)}}, "JSON"),
    ],
)
def test_bad_save_arguments_are_reported(tmp_path, yolov8n, path, kwargs, expected):
    with pytest.raises(YoloPruneError, match=expected):
        save_checkpoint(yolov8n.model, tmp_path / path, **kwargs)
    assert os.listdir(tmp_path) == []


def test_atomic_write_renames_on_success(tmp_path):
    path = atomic_write(tmp_path / "plan.json", lambda tmp: tmp.write_text("{}"))
    assert path.read_text() == "{}"
    assert os.listdir(tmp_path) == ["plan.json"]


def test_atomic_write_cleans_up_and_wraps_errors(tmp_path):
    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise ValueError("boom")

    with pytest.raises(YoloPruneError, match=r"plan\.json.*ValueError: boom"):
        atomic_write(tmp_path / "plan.json", fail)
    assert os.listdir(tmp_path) == []


def test_a_yaml_that_tries_to_download_gets_an_offline_hint():
    from urllib.error import URLError

    from yoloprune.yolo.io import _yaml_build_error

    message = _yaml_build_error("resnet.yaml", URLError("Name or service not known"))
    assert "never downloads" in message and "weights: null" in message
    assert "Ultralytics module" in _yaml_build_error("bad.yaml", KeyError("Foo"))
