"""`yoloprune bench`: models side by side, ratios against the first, latency, accuracy, files; and the
pieces it is made of (round-robin timing, TensorRT fallback, progress, validation loss)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from yoloprune.cli import main
from yoloprune.progress import Progress
from yoloprune.pruning.options import PruneOptions
from yoloprune.reports.measurements import Bench, Measurement
from yoloprune.timing import Timing, round_robin, tensorrt_latency
from yoloprune.workflows.data import make_digits
from yoloprune.workflows.evaluate import ValLoss
from yoloprune.yolo.api import excited_copy, prune
from yoloprune.yolo.io import load_model, save_checkpoint

LATENCY_KEYS = {"ort_cpu_1_thread", "ort_cpu_all_threads", "tensorrt_fp16"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_digits(tmp_path_factory.mktemp("data") / "digits", images=10, imgsz=64).yaml


@pytest.fixture(scope="module")
def benched(tmp_path_factory, digits):
    """yolov8n and its 50%-FLOPs prune through `yoloprune bench --data`, tiny: 64x64, 3 timed runs."""
    d = tmp_path_factory.mktemp("bench")
    original = save_checkpoint(excited_copy(load_model("yolov8n.yaml").model), d / "yolov8n.pt")
    prune(original, PruneOptions(target_flops=0.5, allocation="global")).save(d / "half.pt")
    files = {"md": d / "bench.md", "json": d / "bench.json", "plot": d / "bench.png"}
    argv = ["bench", str(original), str(d / "half.pt"), "--imgsz", "64", "--runs", "3", "--warmup", "1"]
    argv += ["--data", str(digits), "--batch", "2"]
    code = main(
        [*argv, "--out", str(files["md"]), "--json", str(files["json"]), "--plot", str(files["plot"])]
    )
    assert code == 0
    return files


def test_bench_json_has_every_model_with_ratios_against_the_first(benched):
    doc = json.loads(benched["json"].read_text())
    assert {"imgsz", "runs", "warmup", "load_average", "onnxruntime", "data"} <= doc["settings"].keys()
    first, half = doc["models"]
    assert first["name"].endswith("yolov8n.pt") and half["name"].endswith("half.pt")
    for m in doc["models"]:
        assert {
            "params",
            "flops",
            "checkpoint_bytes",
            "onnx_bytes",
            "latency_ms",
            "accuracy",
            "ratios",
        } <= m.keys()
        for key in ("params", "flops", "checkpoint_bytes", "onnx_bytes"):
            assert m["ratios"][key] == pytest.approx(m[key] / first[key], abs=1e-4)
        one_thread = m["latency_ms"]["ort_cpu_1_thread"]["median_ms"]
        assert m["ratios"]["ort_cpu_1_thread"] == pytest.approx(
            one_thread / first["latency_ms"]["ort_cpu_1_thread"]["median_ms"], abs=1e-3
        )
    assert all(v == 1.0 for v in first["ratios"].values() if v is not None)
    assert half["ratios"]["flops"] == pytest.approx(0.5, abs=0.02 * 0.5 + 0.01)  # 640 target, 64 measured
    assert half["params"] < first["params"] and half["onnx_bytes"] < first["onnx_bytes"]


def test_bench_latency_has_both_thread_settings_and_tensorrt_says_why_not(benched):
    doc = json.loads(benched["json"].read_text())
    for m in doc["models"]:
        assert m["latency_ms"].keys() == LATENCY_KEYS
        for key in ("ort_cpu_1_thread", "ort_cpu_all_threads"):
            t = m["latency_ms"][key]
            assert t["runs"] == 3 and 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"]
        if not torch.cuda.is_available():
            assert m["latency_ms"]["tensorrt_fp16"] == "n/a (no GPU)"
            assert m["ratios"]["tensorrt_fp16"] is None


def test_bench_accuracy_from_ultralytics_validation(benched):
    doc = json.loads(benched["json"].read_text())
    for m in doc["models"]:
        assert m["accuracy"].keys() == {"map50_95", "map50", "precision", "recall"}
        assert all(0.0 <= v <= 1.0 for v in m["accuracy"].values())


def test_bench_markdown_and_plot(benched):
    md = benched["md"].read_text()
    header = md.splitlines()[0]
    for title in (
        "params",
        "GFLOPs",
        "ORT CPU 1 thread ms",
        "ORT CPU all threads ms",
        "TensorRT FP16 ms",
        "mAP50-95",
    ):
        assert title in header
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(rows) == 2 and "x)" not in rows[0] and "(0.5" in rows[1]  # FLOPs ratio ~0.50x
    assert "load average" in md
    assert benched["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_refuses_zero_timed_runs(capsys):
    assert main(["bench", "yolov8n.yaml", "--runs", "0"]) == 2
    assert "--runs 0" in capsys.readouterr().err


def _row(name: str, flops: int, ms: float | None) -> Measurement:
    latency = {"ort_cpu_1_thread": Timing(ms, ms, ms, 1) if ms else None, "ort_cpu_all_threads": None}
    return Measurement(name, 100, flops, 10, 10, latency, {"map50_95": 0.0, "map50": 0.5})


def test_ratios_are_against_the_first_row_and_missing_where_undefined():
    b = Bench((_row("a", 200, 10.0), _row("b", 50, 4.0), _row("c", 100, None)))
    assert b.ratios(b.rows[1])["flops"] == 0.25 and b.ratios(b.rows[1])["ort_cpu_1_thread"] == 0.4
    assert b.ratios(b.rows[2])["ort_cpu_1_thread"] is None  # not measured
    assert b.ratios(b.rows[1])["map50_95"] is None and b.ratios(b.rows[1])["map50"] == 1.0  # first is 0
    assert b.ratios(b.rows[0])["flops"] == 1.0


def test_round_robin_times_models_in_turn_after_warmup():
    calls = []
    timings = round_robin([lambda: calls.append("a"), lambda: calls.append("b")], runs=3, warmup=2)
    assert calls == ["a", "b"] * 5
    assert [t.runs for t in timings] == [3, 3] and all(t.median_ms >= 0 for t in timings)


def test_tensorrt_without_a_gpu_is_a_reason_not_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tensorrt_latency(["missing.onnx"]) == "n/a (no GPU)"


def test_progress_counts_steps_and_estimates_the_time_left(capsys):
    ticks = iter([0.0, 10.0, 30.0, 60.0])
    p = Progress(3, "bench", clock=lambda: next(ticks))
    p.start("export a")
    p.start("export b")
    p.start("time both")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "bench [1/3] export a (elapsed 0:10)"
    assert lines[2] == "bench [3/3] time both (elapsed 1:00, about 0:30 left)"  # 2 steps in 60 s, 1 to go


def test_val_loss_is_finite_and_leaves_the_model_as_it_was(digits):
    model = excited_copy(load_model("yolov8n.yaml").model).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = model.args
    score = ValLoss(digits, imgsz=64, images=4, batch=2)
    loss = score(model)
    assert math.isfinite(loss) and loss > 0 and score(model) == loss
    assert not any(m.training for m in model.modules()) and model.args is args
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
