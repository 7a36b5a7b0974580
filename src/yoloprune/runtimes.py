"""The runtimes a model is deployed to, and the settings `bench` times them in; importable without torch.

Scope: names and checks only. A `Setting` is one column of latency: a runtime, a precision and, on the
CPU, a thread count. ONNX Runtime runs FP32 on the CPU; OpenVINO runs FP32 and INT8 on the CPU (INT8
by NNCF's post-training quantization, calibrated on a dataset); TensorRT runs FP16 and INT8 on an
NVIDIA GPU. OpenVINO and NNCF come with the `deploy` extra; TensorRT comes with NVIDIA's own install.

Example:
    >>> [s.key for s in settings("openvino", int8=True, threads=1)]
    ['openvino_cpu_fp32_1_thread', 'openvino_cpu_int8_1_thread']
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from enum import Enum

from yoloprune.errors import OptionError, YoloPruneError

DEPLOY_EXTRA = "pip install 'yoloprune[deploy]'"


class Runtime(str, Enum):
    """Where a model runs (`--runtime`)."""

    ORT = "ort"  # ONNX Runtime, CPU
    OPENVINO = "openvino"  # OpenVINO, CPU
    TENSORRT = "tensorrt"  # TensorRT, NVIDIA GPU

    @property
    def title(self) -> str:
        return {"ort": "ORT", "openvino": "OpenVINO", "tensorrt": "TensorRT"}[self.value]

    @property
    def on_cpu(self) -> bool:
        return self is not Runtime.TENSORRT


class Precision(str, Enum):
    """The number format a model runs in."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


# The packages each runtime needs (then those INT8 needs too), and how to install them.
PACKAGES = {
    Runtime.ORT: (("onnxruntime",), (), "pip install onnxruntime"),
    Runtime.OPENVINO: (("openvino",), ("nncf",), DEPLOY_EXTRA),
    Runtime.TENSORRT: (("tensorrt",), (), "NVIDIA's TensorRT for your CUDA version (pip install tensorrt)"),
}


@dataclass(frozen=True)
class Setting:
    """One latency column: `runtime` in `precision`, on `threads` CPU threads (None: all; TensorRT: None)."""

    runtime: Runtime
    precision: Precision
    threads: int | None = None

    @property
    def export(self) -> str:
        """The model file this setting runs, by runtime and precision ("openvino_int8"): settings that
        differ only in threads run one file, and its accuracy is measured once."""
        return f"{self.runtime.value}_{self.precision.value}"

    @property
    def key(self) -> str:
        """The JSON key: "ort_cpu_1_thread", "openvino_cpu_int8_all_threads", "tensorrt_fp16"."""
        parts = [self.runtime.value]
        if self.runtime.on_cpu:
            parts.append("cpu")
        if self.runtime is not Runtime.ORT:  # ONNX Runtime runs FP32 only
            parts.append(self.precision.value)
        if self.runtime.on_cpu:
            parts.append(_threads(self.threads).replace(" ", "_"))
        return "_".join(parts)

    @property
    def title(self) -> str:
        """The column title: "ORT CPU 1 thread", "OpenVINO CPU INT8 all threads", "TensorRT FP16"."""
        parts = [self.runtime.title]
        if self.runtime.on_cpu:
            parts.append("CPU")
        if self.runtime is not Runtime.ORT:
            parts.append(self.precision.name)
        if self.runtime.on_cpu:
            parts.append(_threads(self.threads))
        return " ".join(parts)


def _threads(threads: int | None) -> str:
    return "all threads" if threads is None else "1 thread" if threads == 1 else f"{threads} threads"


def export_title(export: str) -> str:
    """The title of a `Setting.export` key: "openvino_int8" -> "OpenVINO INT8"."""
    runtime, _, precision = export.partition("_")
    return f"{Runtime(runtime).title} {Precision(precision).name}"


def runtime_of(value: Runtime | str) -> Runtime:
    """`value` as a Runtime; an OptionError naming the choices otherwise."""
    try:
        return Runtime(value)
    except ValueError:
        names = ", ".join(r.value for r in Runtime)
        raise OptionError(f"`runtime={value!r}` is not a runtime yoloprune knows; use {names}.") from None


def precisions(runtime: Runtime | str, int8: bool = False) -> tuple[Precision, ...]:
    """The precisions `runtime` is measured in: its float precision, then INT8 when `int8`.

    Example:
        >>> [p.value for p in precisions("tensorrt", int8=True)]
        ['fp16', 'int8']
    """
    runtime = runtime_of(runtime)
    if int8 and runtime is Runtime.ORT:
        raise OptionError(
            "`int8` is measured with OpenVINO on the CPU or TensorRT on a GPU; ONNX Runtime runs FP32 "
            "here. Use `runtime='openvino'` for CPU INT8."
        )
    first = Precision.FP16 if runtime is Runtime.TENSORRT else Precision.FP32
    return (first, Precision.INT8) if int8 else (first,)


def settings(runtime: Runtime | str, int8: bool = False, threads: int | None = None) -> tuple[Setting, ...]:
    """The latency columns of `runtime`: each precision (`precisions`), on the CPU with `threads`
    threads, or with 1 thread and with all when `threads` is None.

    Example:
        >>> [s.title for s in settings("ort")]
        ['ORT CPU 1 thread', 'ORT CPU all threads']
    """
    runtime = runtime_of(runtime)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise OptionError(f"`threads={threads!r}` must be a whole number of CPU threads, 1 or more.")
    if threads is not None and not runtime.on_cpu:
        raise OptionError(f"`threads` sets CPU threads; `runtime={runtime.value!r}` runs on the GPU.")
    counts = (threads,) if threads is not None or not runtime.on_cpu else (1, None)
    return tuple(Setting(runtime, p, n) for p in precisions(runtime, int8) for n in counts)


def missing(runtime: Runtime | str, int8: bool = False) -> str | None:
    """What `runtime` (with INT8 quantization when `int8`) lacks here, in one line that says how to
    install it; None when nothing is missing.

    Example:
        >>> missing("ort") is None
        True
    """
    runtime = runtime_of(runtime)
    names, quantizers, install = PACKAGES[runtime]
    absent = [n for n in names + (quantizers if int8 else ()) if importlib.util.find_spec(n) is None]
    if not absent:
        return None
    what = f"{' and '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} not installed here"
    return f"{runtime.title} needs {what}; install: {install}"


def require(runtime: Runtime | str, int8: bool = False) -> None:
    """Raise the one-line `missing` message as a YoloPruneError when something is missing."""
    why = missing(runtime, int8)
    if why is not None:
        raise YoloPruneError(why)
