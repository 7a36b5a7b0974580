"""Deployment runtimes: the settings `bench --runtime` times (keys, titles, threads, precisions), the
checks and one-line errors before any work, `round_to="auto"` per runtime and precision, the table's
export columns, and the pieces of the TensorRT and OpenVINO paths that run without their device."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from yoloprune import channel_blocks
from yoloprune.cli import main
from yoloprune.errors import OptionError
from yoloprune.reports.measurements import LATENCIES, Bench, Export, Measurement
from yoloprune.runtimes import DEPLOY_EXTRA, Precision, Runtime, Setting, missing, precisions, settings
from yoloprune.timing import Timing, _engine_bytes
from yoloprune.yolo import deploy

AVX512 = frozenset(["avx2", "avx512f", "avx512bw", "avx512vl"])
AVX2 = frozenset(["avx2", "fma"])


@pytest.mark.parametrize("runtime", list(Runtime))
@pytest.mark.parametrize("int8", [False, True])
def test_every_runtime_names_each_column_once(runtime, int8):
    if int8 and runtime is Runtime.ORT:
        with pytest.raises(OptionError, match="int8"):
            settings(runtime, int8)
        return
    chosen = settings(runtime, int8)
    assert len({s.key for s in chosen}) == len({s.title for s in chosen}) == len(chosen)
    assert [s.precision for s in chosen if s.threads in (1, None)] == [
        p for p in precisions(runtime, int8) for _ in range(2 if runtime.on_cpu else 1)
    ]
    assert all(s.key.startswith(runtime.value) and runtime.title in s.title for s in chosen)
    if runtime.on_cpu:  # one thread and all, unless told
        assert {s.threads for s in chosen} == {1, None}
        assert {s.threads for s in settings(runtime, int8, threads=3)} == {3}
    else:
        assert {s.threads for s in chosen} == {None}


def test_the_keys_bench_always_wrote_stay_the_same():
    legacy = [*settings("ort"), Setting(Runtime.TENSORRT, Precision.FP16)]
    assert {s.key: s.title for s in legacy} == LATENCIES
    assert [s.key for s in settings("openvino", int8=True, threads=4)] == [
        "openvino_cpu_fp32_4_threads",
        "openvino_cpu_int8_4_threads",
    ]
    assert Setting(Runtime.OPENVINO, Precision.INT8, 1).export == "openvino_int8"


@pytest.mark.parametrize(
    ("runtime", "threads", "match"),
    [("ort", 0, "threads=0"), ("openvino", -2, "threads=-2"), ("ort", True, "threads=True")],
)
def test_threads_must_be_a_positive_count(runtime, threads, match):
    with pytest.raises(OptionError, match=match):
        settings(runtime, threads=threads)


def test_tensorrt_takes_no_thread_count_and_unknown_runtimes_are_named():
    with pytest.raises(OptionError, match="threads sets CPU threads"):
        settings("tensorrt", threads=2)
    with pytest.raises(OptionError, match="runtime='onnx' is not a runtime yoloprune knows; use ort"):
        settings("onnx")


@pytest.mark.parametrize(
    ("runtime", "int8", "flags", "multiple"),
    [
        ("ort", False, AVX512, 16),
        ("ort", False, AVX2, 8),
        ("openvino", False, AVX512, 16),  # oneDNN's nChw16c (measured: steps at 48, 64, 80 channels)
        ("openvino", True, AVX512, 16),
        ("openvino", True, AVX2, 8),
        ("tensorrt", False, AVX512, 8),  # FP16 tensor cores, whatever the CPU
        ("tensorrt", True, AVX2, 32),  # INT8 tensor cores
    ],
)
def test_round_to_auto_resolves_per_runtime_and_precision(runtime, int8, flags, multiple):
    assert channel_blocks.channel_multiple(runtime, int8, flags=flags) == multiple


def test_round_to_auto_keeps_its_meaning_for_callers_that_name_no_runtime(monkeypatch):
    monkeypatch.setattr(channel_blocks, "cpuinfo", lambda: {"flags": " ".join(AVX2)})
    assert channel_blocks.channel_multiple() == channel_blocks.channel_multiple("ort") == 8
    with pytest.raises(OptionError, match="int8"):
        channel_blocks.channel_multiple("ort", int8=True)


@pytest.fixture
def without(monkeypatch):
    """Pretend the named top-level packages are not installed."""
    real = importlib.util.find_spec

    def hide(*names: str) -> None:
        monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in names else real(n, *a))

    return hide


def test_a_missing_runtime_is_one_line_that_names_the_extra(without):
    without("openvino", "nncf")
    for int8, packages in ((False, "openvino, which is"), (True, "openvino and nncf, which are")):
        text = missing("openvino", int8)
        assert "\n" not in text and packages in text and text.endswith(DEPLOY_EXTRA)
    assert missing("ort") is None


def test_bench_refuses_a_missing_runtime_before_loading_any_model(without, capsys):
    without("openvino")
    assert main(["bench", "no-such-model.pt", "--runtime", "openvino"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "openvino" in err and "pip install 'yoloprune[deploy]'" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--int8"], ["--int8", "--runtime"]),
        (["--runtime", "openvino", "--int8"], ["--int8", "--data"]),
        (["--runtime", "ort", "--int8"], ["--int8", "--runtime openvino"]),
        (["--runtime", "ort", "--threads", "0"], ["--threads 0"]),
        (["--runtime", "tensorrt", "--threads", "2"], ["--threads", "--runtime tensorrt"]),
    ],
)
def test_bench_refuses_settings_that_do_not_go_together_in_its_own_flags(argv, words, capsys):
    assert main(["bench", "no-such-model.pt", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words), err


def test_tensorrt_without_a_gpu_is_one_line_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(deploy, "require", lambda runtime, int8: None)  # as if tensorrt were installed
    assert main(["bench", "no-such-model.pt", "--runtime", "tensorrt"]) == 2
    assert capsys.readouterr().err == "error: TensorRT cannot run here: no GPU.\n"


def test_an_ultralytics_engine_file_is_read_past_its_metadata_header(tmp_path):
    engine = b"\x00\x01serialized engine\xff"
    meta = json.dumps({"task": "detect", "imgsz": [64, 64]}).encode()
    with_header = tmp_path / "model.engine"
    with_header.write_bytes(len(meta).to_bytes(4, "little") + meta + engine)
    assert _engine_bytes(with_header) == engine
    plain = tmp_path / "plain.engine"
    plain.write_bytes(engine)  # no header: its first 4 bytes are no length of JSON
    assert _engine_bytes(plain) == engine


def test_the_table_shows_each_exported_file_once_with_its_accuracy():
    def row(name: str, scale: float) -> Measurement:
        t = Timing(10 * scale, 10 * scale, 10 * scale, 3)
        exports = {
            "openvino_fp32": Export(int(12e6 * scale), {"map50_95": 0.5, "map50": 0.7}),
            "openvino_int8": Export(int(4e6 * scale), {"map50_95": 0.49, "map50": 0.69}),
        }
        latency = {"openvino_cpu_fp32_1_thread": t, "openvino_cpu_int8_1_thread": t}
        return Measurement(name, 100, int(1e9 * scale), 10, None, latency, None, exports)

    chosen = settings("openvino", int8=True, threads=1)
    b = Bench((row("a.pt", 1.0), row("b.pt", 0.5)), titles={s.key: s.title for s in chosen})
    header, _, first, second = b.to_markdown().splitlines()[:4]
    assert "ONNX MB" not in header  # no ONNX file was exported
    for title in ("OpenVINO FP32 MB", "OpenVINO INT8 MB", "OpenVINO CPU INT8 1 thread ms"):
        assert title in header
    assert "OpenVINO INT8 mAP50-95" in header and "OpenVINO INT8 mAP50 |" in header
    assert "| 0.490 | 0.690 |" in first and "2.0 (0.50x)" in second  # INT8 MB of b, half of a's
    assert b.as_dict()["models"][1]["ratios"]["openvino_int8_bytes"] == 0.5


def test_openvino_is_validated_in_the_precision_it_is_timed_in():
    ov = pytest.importorskip("openvino")
    model = ov.convert_model(torch.nn.Conv2d(3, 8, 3).eval(), example_input=torch.zeros(1, 3, 16, 16))
    original = ov.Core
    with deploy.as_timed(Setting(Runtime.OPENVINO, Precision.INT8)):
        compiled = ov.Core().compile_model(model, "CPU")  # as Ultralytics' backend makes its own Core
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert ov.Core is original
