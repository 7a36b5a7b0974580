"""Latency of exported models: ONNX Runtime on the CPU, and TensorRT FP16 where a GPU and TensorRT exist.

Scope: ONNX files in, milliseconds per image out (batch 1); the export is `yolo.check.export_onnx`.
Every model of a comparison is timed in one loop, one run of each in turn, so a change in the
machine's load while measuring slows all of them alike instead of whichever model ran then. Each
model first runs `warmup` times untimed; its latency is the median of `runs` timed runs.
TensorRT never fails a benchmark: where it cannot run, the reason is returned instead of timings.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort


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
    """Batch-1 FP16 latency of each ONNX file in TensorRT (engines built here, on the GPU), or the
    reason it cannot be measured: no GPU, no `tensorrt`, or the build failed. Never raises."""
    why = tensorrt_unavailable()
    if why is not None:
        return why
    try:
        return round_robin([_tensorrt_runner(Path(p)) for p in paths], runs, warmup)
    except Exception as e:
        lines = str(e).strip().splitlines()
        return f"n/a (TensorRT failed: {type(e).__name__}: {lines[0] if lines else ''})"


def _tensorrt_runner(path: Path) -> Callable[[], object]:
    """Build an FP16 engine from `path` (TensorRT 10 API) and return one inference on CUDA buffers."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.ERROR)
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
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
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
