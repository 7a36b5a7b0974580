"""Latency of exported models: ONNX Runtime and OpenVINO on the CPU, and TensorRT where a GPU and
TensorRT exist.

Scope: exported files in (ONNX, OpenVINO IR, TensorRT engines), milliseconds per image out (batch 1);
the exports are `yolo.check.export_onnx` and `yolo.deploy.export`.
Every model of a comparison is timed in one loop, one run of each in turn, so a change in the
machine's load while measuring slows all of them alike instead of whichever model ran then. Each
model first runs `warmup` times untimed; its latency is the median of `runs` timed runs.
TensorRT never fails a benchmark: where it cannot run, the reason is returned instead of timings.
OpenVINO runs every model in FP32 arithmetic where it is not quantized (`INFERENCE_PRECISION_HINT`
f32): by default its CPU plugin runs bfloat16 on CPUs with AVX512_BF16 or AMX, which is a third
precision, not the FP32 a column says.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from yoloprune.runtimes import Runtime, Setting


@dataclass(frozen=True)
class Timing:
    """Milliseconds per image of one model in one setting."""

    median_ms: float
    min_ms: float
    max_ms: float
    runs: int

    @staticmethod
    def of(seconds: Sequence[float]) -> Timing:
        ms = [1e3 * s for s in seconds]
        return Timing(statistics.median(ms), min(ms), max(ms), len(ms))

    def as_json(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def round_robin(runners: Sequence[Callable[[], object]], runs: int, warmup: int) -> list[Timing]:
    """Time each of `runners` `runs` times, one call of each in turn, after `warmup` untimed rounds.

    Example:
        >>> [t.runs for t in round_robin([lambda: None, lambda: None], runs=5, warmup=1)]
        [5, 5]
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        for run in runners:
            run()
    seconds: list[list[float]] = [[] for _ in runners]
    for _ in range(runs):
        for run, samples in zip(runners, seconds, strict=True):
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
    return [Timing.of(s) for s in seconds]


def ort_session(path: str | os.PathLike[str], threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with every graph optimisation, on `threads` intra-op threads
    (None: ONNX Runtime's default, one per physical core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_latency(
    paths: Sequence[str | os.PathLike[str]], threads: int | None = None, runs: int = 50, warmup: int = 10
) -> list[Timing]:
    """Batch-1 latency of each ONNX file in ONNX Runtime on the CPU, timed round-robin.

    Example:
        >>> ort_latency(["a.onnx", "b.onnx"], threads=1, runs=20)[0].median_ms  # doctest: +SKIP
        41.7
    """
    runners = []
    for path in paths:
        session = ort_session(path, threads)
        image = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in image.shape]  # (1, 3, H, W)
        feed = {image.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
        runners.append(lambda session=session, feed=feed: session.run(None, feed))
    return round_robin(runners, runs, warmup)


def fp32_cpu(core: Any) -> Any:
    """The OpenVINO Core `core`, its CPU set to run FP32 arithmetic wherever a model is not quantized."""
    import openvino as ov

    core.set_property("CPU", {"INFERENCE_PRECISION_HINT": ov.Type.f32})
    return core


def openvino_latency(
    paths: Sequence[str | os.PathLike[str]], threads: int | None = None, runs: int = 50, warmup: int = 10
) -> list[Timing]:
    """Batch-1 latency of each OpenVINO model (a .xml file, or the folder Ultralytics exports it to) on
    the CPU in LATENCY mode, on `threads` inference threads (None: OpenVINO's default, one per
    physical core), timed round-robin.

    Example:
        >>> openvino_latency(["a_openvino_model", "a_int8_openvino_model"], 1)[1].median_ms  # doctest: +SKIP
        12.9
    """
    import openvino as ov

    core = fp32_cpu(ov.Core())
    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    runners = []
    for path in paths:
        path = Path(path)
        xml = next(path.glob("*.xml")) if path.is_dir() else path
        compiled = core.compile_model(str(xml), "CPU", config)
        request = compiled.create_infer_request()
        shape = [d.get_length() if d.is_static else 1 for d in compiled.input(0).get_partial_shape()]
        image = np.random.default_rng(0).random(shape, dtype=np.float32)  # (1, 3, H, W)
        runners.append(lambda request=request, image=image: request.infer({0: image}))
    return round_robin(runners, runs, warmup)


def latency(
    setting: Setting, paths: Sequence[str | os.PathLike[str]], runs: int = 50, warmup: int = 10
) -> list[Timing] | str:
    """Batch-1 latency of each exported file of `setting`'s runtime, timed round-robin in `setting`;
    for TensorRT, the reason it cannot run instead when it cannot (`tensorrt_latency`)."""
    if setting.runtime is Runtime.ORT:
        return ort_latency(paths, setting.threads, runs, warmup)
    if setting.runtime is Runtime.OPENVINO:
        return openvino_latency(paths, setting.threads, runs, warmup)
    return tensorrt_latency(paths, runs, warmup)


def tensorrt_unavailable() -> str | None:
    """Why TensorRT cannot be timed here ("n/a (no GPU)", ...), or None when it can."""
    import torch

    if not torch.cuda.is_available():
        return "n/a (no GPU)"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "n/a (TensorRT not installed)"
    return None


def tensorrt_latency(
    paths: Sequence[str | os.PathLike[str]], runs: int = 50, warmup: int = 10
) -> list[Timing] | str:
    """Batch-1 latency of each TensorRT engine (an Ultralytics .engine file, in the precision it was
    built in) or ONNX file (an FP16 engine is built from it here, on the GPU), or the reason it cannot
    be measured: no GPU, no `tensorrt`, or the build failed. Never raises."""
    why = tensorrt_unavailable()
    if why is not None:
        return why
    try:
        return round_robin([_tensorrt_runner(Path(p)) for p in paths], runs, warmup)
    except Exception as e:
        lines = str(e).strip().splitlines()
        return f"n/a (TensorRT failed: {type(e).__name__}: {lines[0] if lines else ''})"


def _tensorrt_runner(path: Path) -> Callable[[], object]:
    """Load the engine in `path` (or build an FP16 one from an ONNX file; TensorRT 10 API) and return
    one inference on CUDA buffers."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.ERROR)
    serialized = _engine_bytes(path) if path.suffix == ".engine" else _fp16_engine(path, logger)
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None:
        raise RuntimeError(f"TensorRT cannot load the engine in {path}")
    context = engine.create_execution_context()
    buffers = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = torch.from_numpy(np.zeros(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
        buffer = torch.rand(tuple(engine.get_tensor_shape(name)), device="cuda").to(dtype)
        context.set_tensor_address(name, buffer.data_ptr())
        buffers.append(buffer)
    stream = torch.cuda.Stream()

    def run(buffers: list[torch.Tensor] = buffers) -> None:  # the engine reads and writes `buffers`
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()

    return run


def _engine_bytes(path: Path) -> bytes:
    """The serialized engine in an Ultralytics .engine file: after its header (a 4-byte little-endian
    length, then that many bytes of JSON metadata) where it has one."""
    data = path.read_bytes()
    n = int.from_bytes(data[:4], byteorder="little")
    if 0 < n <= len(data) - 4:
        try:
            json.loads(data[4 : 4 + n])
            return data[4 + n :]
        except ValueError:  # engine bytes are not JSON: no header
            pass
    return data


def _fp16_engine(path: Path, logger: Any) -> bytes:
    """An FP16 engine built from the ONNX file `path`, serialized."""
    import tensorrt as trt

    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(path.read_bytes()):
        raise RuntimeError(f"cannot parse {path}: {parser.get_error(0)}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"no engine could be built from {path}")
    return bytes(serialized)
