"""`yoloprune bench --runtime openvino` for real: Ultralytics' OpenVINO export of a tiny yolov8n and of
its 50%-FLOPs prune at 64x64, timed round-robin, and validated as exported on generated digits; INT8
(NNCF, calibrated on the train split) beside FP32. Skipped where OpenVINO is not installed (it comes
with the `deploy` extra, which `dev` includes)."""

from __future__ import annotations

import json

import pytest

from yoloprune.cli import main
from yoloprune.workflows.data import make_digits
from yoloprune.yolo import deploy
from yoloprune.yolo.api import PruneOptions, excited_copy, prune
from yoloprune.yolo.io import load_model, save_checkpoint

pytest.importorskip("openvino")

METRICS = {"map50_95", "map50", "precision", "recall"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(original.pt, half.pt, data.yaml): yolov8n (untrained, excited), its 50%-FLOPs prune, digits."""
    d = tmp_path_factory.mktemp("deploy")
    data = make_digits(d / "digits", images=10, imgsz=64).yaml
    original = save_checkpoint(excited_copy(load_model("yolov8n.yaml").model), d / "original.pt")
    prune(original, PruneOptions(target_flops=0.5, allocation="global")).save(d / "half.pt")
    return original, d / "half.pt", data


def _bench(models, tmp_path, *flags: str) -> dict:
    original, half, data = models
    out = tmp_path / "bench.json"
    argv = ["bench", str(original), str(half), "--imgsz", "64", "--runs", "3", "--warmup", "1"]
    assert main([*argv, "--data", str(data), "--batch", "2", "--json", str(out), *flags]) == 0
    return json.loads(out.read_text())


def test_openvino_fp32_latency_and_accuracy_of_the_exported_files(models, tmp_path, capsys):
    doc = _bench(models, tmp_path, "--runtime", "openvino", "--threads", "1")
    assert doc["settings"]["runtime"] == "openvino" and "openvino" in doc["settings"]
    _, half = doc["models"]
    for m in doc["models"]:
        assert list(m["latency_ms"]) == ["openvino_cpu_fp32_1_thread"]
        t = m["latency_ms"]["openvino_cpu_fp32_1_thread"]
        assert t["runs"] == 3 and 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"]
        assert list(m["exports"]) == ["openvino_fp32"] and m["onnx_bytes"] is None
        assert m["exports"]["openvino_fp32"]["accuracy"].keys() == METRICS
        assert all(0 <= v <= 1 for v in m["exports"]["openvino_fp32"]["accuracy"].values())
    # the pruned model's IR holds its float32 weights: about half the original's, as its params are
    assert half["ratios"]["openvino_fp32_bytes"] == pytest.approx(half["ratios"]["params"], abs=0.05)
    table = capsys.readouterr().out
    assert "OpenVINO CPU FP32 1 thread ms" in table and "OpenVINO FP32 mAP50-95" in table


def test_int8_calibrates_on_the_train_split_of_the_dataset(models):
    _, _, data = models
    assert deploy.calibration(data, "detect", 64) == {"data": str(data), "split": "train", "fraction": 1.0}


@pytest.mark.slow  # two NNCF quantizations (~15 s each on 2 shared cores) besides the FP32 exports
def test_openvino_int8_beside_fp32_for_both_models(models, tmp_path):
    doc = _bench(models, tmp_path, "--runtime", "openvino", "--int8")
    assert doc["settings"]["int8"] is True and "nncf" in doc["settings"]
    for m in doc["models"]:
        assert set(m["latency_ms"]) == {
            "openvino_cpu_fp32_1_thread",
            "openvino_cpu_fp32_all_threads",
            "openvino_cpu_int8_1_thread",
            "openvino_cpu_int8_all_threads",
        }
        assert all(isinstance(t, dict) and t["median_ms"] > 0 for t in m["latency_ms"].values())
        fp32, int8 = m["exports"]["openvino_fp32"], m["exports"]["openvino_int8"]
        assert int8["bytes"] < 0.5 * fp32["bytes"]  # int8 weights (the head stays float)
        assert fp32["accuracy"].keys() == int8["accuracy"].keys() == METRICS
