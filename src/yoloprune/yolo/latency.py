"""Latency on a runtime for a latency target (`target_latency`): the one-layer timings the latency
model's table is made of, cached per machine, and the whole pruned model timed against its original.

Scope: the `LatencyTimer` that `pruning.latency.meet_latency` asks. A layer is timed as a one-node ONNX
model (a Conv, or a MatMul and Add for a linear layer; no Ultralytics, no tracing), built with `onnx`'s
helpers and run by the runtime itself at the layer's real input size, in FP32 (INT8 too: quantizing
each one-layer model would need a calibration per point, so an INT8 target's table is FP32 and the
measured checks correct its slope, see docs/decisions.md). The timings are cached in one JSON file
per CPU, runtime version, precision and thread count under `cache_dir()`, written atomically, so a
machine times each layer shape once. A whole model is exported as `bench` exports it
(`deploy.export`; INT8 calibrated on `data`) and timed in turn with the original (`timing.latency`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
from torch import nn

from yoloprune.atomic import atomic_write
from yoloprune.channel_blocks import cpuinfo
from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.graph.groups import ChannelGraph
from yoloprune.pruning.apply import pruned_copy
from yoloprune.pruning.latency import Layer
from yoloprune.pruning.options import PruneOptions
from yoloprune.runtimes import PACKAGES, Precision, Runtime, Setting, require
from yoloprune.timing import latency
from yoloprune.yolo.adapter import ULTRALYTICS
from yoloprune.yolo.deploy import export
from yoloprune.yolo.io import save_checkpoint

CACHE_ENV = "YOLOPRUNE_CACHE_DIR"
RUNS, WARMUP = 50, 10  # a whole model's timed and untimed runs per check, as `bench` times by default
LAYER_RUNS, LAYER_WARMUP = 20, 5  # per one-layer model
CHUNK = 64  # one-layer models timed in one round-robin loop
OPSET, IR_VERSION = 17, 8  # what every supported ONNX Runtime and OpenVINO read

TimeLayers = Callable[[Sequence[Layer]], list[float]]


def cache_dir() -> Path:
    """Where yoloprune keeps what it measured once per machine: `$YOLOPRUNE_CACHE_DIR`, else
    `$XDG_CACHE_HOME/yoloprune`, else `~/.cache/yoloprune`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "yoloprune"


def cache_file(setting: Setting) -> Path:
    """The layer-timing cache of `setting` on this machine: named by the setting and a hash of the
    CPU's model name and flags and the runtime's version, which any of them changing invalidates.

    Example:
        >>> cache_file(Setting(Runtime.ORT, Precision.FP32, 1)).name  # doctest: +ELLIPSIS
        'layers-ort_cpu_1_thread-....json'
    """
    info = cpuinfo()
    runtime = PACKAGES[setting.runtime][0][0]
    text = f"{info.get('model name', '')};{info.get('flags', '')};{runtime} {version(runtime)}"
    return (
        cache_dir()
        / "latency"
        / f"layers-{setting.key}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    )


def cached(time_layers: TimeLayers, path: Path) -> TimeLayers:
    """`time_layers` that reads the timings it has in the JSON file `path` (by `Layer.key`), times the
    rest and adds them to the file (written atomically; a file that is not such JSON is timed anew).

    Example:
        >>> time = cached(lambda layers: [1.0] * len(layers), Path("layers.json"))
        >>> time([Layer("linear", 8, 8, (1,))])
        [1.0]
    """

    def time(layers: Sequence[Layer]) -> list[float]:
        try:
            known = {k: float(v) for k, v in json.loads(path.read_text(encoding="utf-8"))["ms"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            known = {}
        missing = list({x.key: x for x in layers if x.key not in known}.values())
        if missing:
            known.update(zip((x.key for x in missing), time_layers(missing), strict=True))
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"version": 1, "ms": known}, indent=0, sort_keys=True)
            atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return [known[x.key] for x in layers]

    return time


def layer_onnx(layer: Layer) -> bytes:
    """A one-layer ONNX model of `layer` at batch 1 (random weights: the time does not depend on them):
    a Conv on a (1, cin, H, W) input, or a MatMul (+ Add) on a (rows, cin) input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if layer.kind == "linear":
        shape = [layer.size[0], layer.cin]
        weight = rng.standard_normal((layer.cin, layer.cout), dtype=np.float32)
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y" if not layer.bias else "m"])]
        out = [layer.size[0], layer.cout]
    else:
        shape = [1, layer.cin, *layer.size]
        groups = layer.cin if layer.depthwise else 1
        weight = rng.standard_normal((layer.cout, layer.cin // groups, *layer.kernel), dtype=np.float32)
        attrs = {
            "kernel_shape": list(layer.kernel),
            "strides": list(layer.stride),
            "pads": [*layer.padding, *layer.padding],
            "dilations": list(layer.dilation),
            "group": groups,
        }
        nodes = [helper.make_node("Conv", ["x", "w", *(["b"] if layer.bias else [])], ["y"], **attrs)]
        out = None
    inits = [numpy_helper.from_array(weight, "w")]
    if layer.bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(layer.cout, dtype=np.float32), "b"))
        if layer.kind == "linear":
            nodes.append(helper.make_node("Add", ["m", "b"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    return onnx.shape_inference.infer_shapes(model).SerializeToString()


def medians(setting: Setting, paths: list[Path], runs: int, warmup: int, what: str) -> list[float]:
    """Median milliseconds of each file in `paths`, timed in turn in `setting`; a runtime that cannot
    run here is an error naming `what` could not be timed."""
    timed = latency(setting, paths, runs, warmup)
    if isinstance(timed, str):
        raise YoloPruneError(f"{setting.title} cannot time {what} here: {timed}")
    return [t.median_ms for t in timed]


def time_layers(setting: Setting) -> TimeLayers:
    """A function timing one-layer models (`layer_onnx`) in `setting`, `CHUNK` at a time, each model's
    runs in turn with the others'; milliseconds, the median of `LAYER_RUNS`."""

    def time(layers: Sequence[Layer]) -> list[float]:
        ms: list[float] = []
        with tempfile.TemporaryDirectory(prefix="yoloprune-layers-") as work:
            for start in range(0, len(layers), CHUNK):
                paths = []
                for i, layer in enumerate(layers[start : start + CHUNK], start):
                    paths.append(Path(work) / f"layer{i}.onnx")
                    paths[-1].write_bytes(layer_onnx(layer))
                ms += medians(setting, paths, LAYER_RUNS, LAYER_WARMUP, "layers")
                for path in paths:
                    path.unlink()
        return ms

    return time


def _exported(
    model: nn.Module,
    path: Path,
    ckpt: dict | None,
    setting: Setting,
    imgsz: int,
    data: str | os.PathLike[str] | None,
) -> Path:
    """`model` saved to `path` (a .pt with `ckpt`'s metadata) and exported for `setting` at `imgsz`."""
    return export(save_checkpoint(model, path, source_ckpt=ckpt), setting, imgsz, data)


def _model_ms(setting: Setting, paths: list[Path]) -> list[float]:
    """Median milliseconds of each whole model in `paths`, timed in turn in `setting`."""
    return medians(setting, paths, RUNS, WARMUP, "the model")


class RuntimeTimer:
    """The `LatencyTimer` of one runtime setting: layers from the cached table timings (in FP32 on
    the setting's runtime and threads), whole models exported into `work` and timed with the original."""

    def __init__(
        self,
        original: nn.Module,
        graph: ChannelGraph,
        ckpt: dict | None,
        setting: Setting,
        imgsz: int,
        data: str | os.PathLike[str] | None,
        work: Path,
    ) -> None:
        self.setting = setting.title
        self._model_setting, self._imgsz, self._data, self._work = setting, imgsz, data, work
        self._original, self._graph, self._ckpt = original, graph, ckpt
        fp32 = Setting(setting.runtime, Precision.FP32, setting.threads)
        self.layers = cached(time_layers(fp32), cache_file(fp32))
        self._exported: Path | None = None
        self._count = 0

    def _export(self, model: nn.Module, name: str) -> Path:
        return _exported(
            model, self._work / f"{name}.pt", self._ckpt, self._model_setting, self._imgsz, self._data
        )

    def _time(self, paths: list[Path]) -> list[float]:
        return _model_ms(self._model_setting, paths)

    def model(self, removed: frozenset[int]) -> tuple[float, float]:
        if self._exported is None:
            self._exported = self._export(self._original, "original")
        if not removed:
            (ms,) = self._time([self._exported])
            return ms, ms
        pruned, _ = pruned_copy(self._original, self._graph, removed, ULTRALYTICS)
        self._count += 1
        pruned_ms, original_ms = self._time([self._export(pruned, f"check{self._count}"), self._exported])
        return pruned_ms, original_ms


def _setting(options: PruneOptions, data: str | os.PathLike[str] | None) -> Setting:
    """The runtime setting `options` time on; refuses a runtime that is not installed (naming what to
    install) and INT8 without `data` to calibrate on, before any work."""
    runtime = options.runtime or Runtime.ORT
    require(runtime, options.int8)
    if options.int8 and data is None:
        raise OptionError(
            "`int8` with `target_latency` times the INT8 model, which is calibrated on images of a dataset: "
            "give `data`."
        )
    return Setting(runtime, Precision.INT8 if options.int8 else Precision.FP32, options.threads)


@contextlib.contextmanager
def runtime_timer(
    original: nn.Module,
    graph: ChannelGraph,
    ckpt: dict | None,
    options: PruneOptions,
    imgsz: int,
    data: str | os.PathLike[str] | None = None,
) -> Iterator[RuntimeTimer]:
    """The `RuntimeTimer` of `options`' runtime (ONNX Runtime when none), precision and threads, at
    `imgsz`, its exports in a temporary folder removed afterwards (see `_setting` for what it refuses)."""
    setting = _setting(options, data)
    with tempfile.TemporaryDirectory(prefix="yoloprune-latency-") as work:
        yield RuntimeTimer(original, graph, ckpt, setting, imgsz, data, Path(work))


def latency_ratio(
    original: nn.Module,
    shallower: nn.Module,
    ckpt: dict | None,
    options: PruneOptions,
    imgsz: int,
    data: str | os.PathLike[str] | None = None,
) -> float:
    """`shallower`'s latency over `original`'s on `options`' runtime setting at `imgsz`, the two timed
    in turn (so a change in the machine's load cancels): how a depth step scales a latency target."""
    setting = _setting(options, data)
    with tempfile.TemporaryDirectory(prefix="yoloprune-latency-") as work:
        paths = [
            _exported(m, Path(work) / f"{name}.pt", ckpt, setting, imgsz, data)
            for name, m in (("original", original), ("shallower", shallower))
        ]
        before, after = _model_ms(setting, paths)
    return after / before
