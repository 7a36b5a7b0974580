"""Models as deployed: the file Ultralytics' exporter writes for a runtime and precision (ONNX, OpenVINO
IR in FP32 or INT8, TensorRT engines in FP16 or INT8), and how Ultralytics' validator runs that file.

Scope: checkpoint in, exported file out; the settings `bench` measures, checked first (`columns`);
the device and precision the validator runs a file in (`device`, `as_timed`; the metrics are
`evaluate.accuracy`'s); timing is `bench.latency`. INT8 is Ultralytics' post-training quantization
(`quantize=8`; NNCF for OpenVINO, TensorRT's calibrator for engines), calibrated on up to
`CALIBRATION_IMAGES` images of the dataset's train split (its val split where it has no train split):
the val split that scores the model is not the one its ranges were fitted on, where the dataset allows.
OpenVINO is validated as it is timed: FP32 arithmetic wherever the model is not quantized.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ultralytics import YOLO

from yoloprune.errors import OptionError, YoloPruneError, first_line
from yoloprune.runtimes import PACKAGES, Precision, Runtime, Setting, require, runtime_of, settings
from yoloprune.timing import fp32_cpu, tensorrt_unavailable
from yoloprune.yolo.adapter import model_task
from yoloprune.yolo.check import export_onnx
from yoloprune.yolo.dataset import yolo_dataset
from yoloprune.yolo.quiet import quiet

CALIBRATION_IMAGES = 300  # NNCF's default subset size; Ultralytics recommends at least this many


def columns(
    runtime: Runtime | str | None,
    int8: bool = False,
    threads: int | None = None,
    data: str | os.PathLike[str] | None = None,
    tensorrt: bool = True,
) -> tuple[Setting, ...]:
    """The latency settings `bench` measures, checked before any work: `runtime`'s (`runtimes.settings`),
    or without one ONNX Runtime's and TensorRT FP16 (when `tensorrt`; "n/a" where it cannot run).
    Refuses INT8 without a runtime or without `data` to calibrate on, and a runtime that is not
    installed or cannot run here, each in one line that says what to do.

    Example:
        >>> [s.key for s in columns("openvino", threads=4)]
        ['openvino_cpu_fp32_4_threads']
    """
    if runtime is None:
        if int8:
            raise OptionError(
                "`int8` needs a runtime that runs INT8: `runtime='openvino'` (CPU) or `runtime='tensorrt'` "
                "(GPU)."
            )
        trt = (Setting(Runtime.TENSORRT, Precision.FP16),) if tensorrt else ()
        return settings(Runtime.ORT, threads=threads) + trt
    runtime = runtime_of(runtime)
    chosen = settings(runtime, int8, threads)
    if int8 and data is None:
        raise OptionError(
            "`int8` calibrates the quantized model on images of a dataset: give `data` (its train split "
            "calibrates, its val split measures the accuracy)."
        )
    require(runtime, int8)
    if runtime is Runtime.TENSORRT and (why := tensorrt_unavailable()) is not None:
        raise YoloPruneError(f"TensorRT cannot run here: {why.removeprefix('n/a (').rstrip(')')}.")
    return chosen


def versions(runtimes: Iterable[Runtime], int8: bool = False) -> dict[str, str]:
    """The installed version of each package `runtimes` run on (and quantize with, when `int8`).

    Example:
        >>> list(versions([Runtime.ORT]))
        ['onnxruntime']
    """
    found = {}
    for runtime in sorted(set(runtimes)):
        names, quantizers, _ = PACKAGES[runtime]
        for name in names + (quantizers if int8 else ()):
            with contextlib.suppress(PackageNotFoundError):
                found[name] = version(name)
    return found


def export(
    checkpoint: Path,
    setting: Setting,
    imgsz: int,
    data: str | os.PathLike[str] | None = None,
    simplify: bool = False,
) -> Path:
    """The file (or OpenVINO folder) Ultralytics' exporter writes beside `checkpoint` for `setting`'s
    runtime and precision at batch 1, `imgsz` square; INT8 is calibrated on `data` (`calibration`).

    Example:
        >>> export(Path("best.pt"), Setting(Runtime.ORT, Precision.FP32), 64).name
        'best.onnx'
    """
    if setting.runtime is Runtime.ORT:
        return export_onnx(checkpoint, imgsz, simplify)[0]
    int8 = setting.precision is Precision.INT8
    kwargs: dict[str, object] = {"quantize": 8 if int8 else None, "batch": 1, "verbose": False}
    if setting.runtime is Runtime.OPENVINO:
        kwargs.update(format="openvino", device="cpu")
    else:
        kwargs.update(format="engine", device=0, quantize=8 if int8 else 16, simplify=simplify)
    with quiet():
        model = YOLO(str(checkpoint))
    if int8:
        kwargs.update(calibration(data, model_task(model.model), imgsz))
    what = f"{setting.runtime.title} {setting.precision.name} export of {checkpoint.name}"
    try:
        # NNCF's progress bars go where yoloprune's progress goes: stderr
        with quiet(), _quiet_nncf(int8), contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"`torch\.jit\.trace", FutureWarning)  # OpenVINO's converter
            return Path(model.export(imgsz=imgsz, **kwargs))
    except YoloPruneError:
        raise
    except Exception as e:
        raise YoloPruneError(
            f"Ultralytics' {what} failed ({first_line(e)}). Ultralytics' own log of the same export shows "
            f"more: YOLO(MODEL).export(imgsz={imgsz}, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())})."
        ) from e


def calibration(data: str | os.PathLike[str] | None, task: str, imgsz: int) -> dict[str, object]:
    """The exporter's INT8 calibration arguments for a `task` model: `data`, its train split (val where
    it has none) and the `fraction` of it that gives `CALIBRATION_IMAGES` images (all of a smaller one).

    Example:
        >>> calibration("digits/data.yaml", "detect", 64)  # a split of fewer than 300 images: all of it
        {'data': 'digits/data.yaml', 'split': 'train', 'fraction': 1.0}
    """
    if data is None:
        raise OptionError("`int8` calibrates on images of a dataset: give `data`.")
    try:
        dataset, split = yolo_dataset(data, task, imgsz, 1, "train"), "train"
    except YoloPruneError:
        dataset, split = yolo_dataset(data, task, imgsz, 1, "val"), "val"
    return {"data": str(data), "split": split, "fraction": min(1.0, CALIBRATION_IMAGES / len(dataset))}


def device(setting: Setting) -> str | int:
    """The device Ultralytics runs `setting`'s file on: the first GPU for TensorRT, else the CPU."""
    return 0 if setting.runtime is Runtime.TENSORRT else "cpu"


def as_timed(setting: Setting) -> contextlib.AbstractContextManager:
    """A block in which Ultralytics runs `setting`'s file as `bench.latency` times it: OpenVINO in FP32
    arithmetic wherever the model is not quantized; the other runtimes as they are.

    Example:
        >>> from yoloprune.workflows.evaluate import accuracy
        >>> setting = Setting(Runtime.OPENVINO, Precision.INT8)
        >>> folder = export(Path("best.pt"), setting, 64, "digits/data.yaml")
        >>> with as_timed(setting):
        ...     0 <= accuracy(folder, "digits/data.yaml", 64, device=device(setting)).map50 <= 1
        True
    """
    return _openvino_fp32() if setting.runtime is Runtime.OPENVINO else contextlib.nullcontext()


@contextlib.contextmanager
def _openvino_fp32() -> Iterator[None]:
    """Inside the block, each `openvino.Core` (Ultralytics' backend makes its own) runs FP32 arithmetic
    wherever a model is not quantized, as the timing does (`bench.latency.fp32_cpu`)."""
    import openvino as ov

    original = ov.Core

    class Core(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            fp32_cpu(self)

    ov.Core = Core
    try:
        yield
    finally:
        ov.Core = original


def _quiet_nncf(used: bool) -> contextlib.AbstractContextManager:
    """NNCF's info lines (one per operation it leaves unquantized) hidden inside the block, if `used`."""
    if not used:
        return contextlib.nullcontext()
    import nncf  # noqa: F401  (its import sets its logger's level, so it comes first)

    return quiet(logging.getLogger("nncf"))
