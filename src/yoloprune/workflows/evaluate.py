"""Measure models: accuracy by Ultralytics validation, a fast validation-loss proxy, and `bench`, which
puts several models side by side (params, FLOPs, file sizes, latency, accuracy).

Scope: accuracy is what a user gets from `YOLO("model.pt").val(data=...)`: the model is saved as a
checkpoint and validated by Ultralytics (box mAP50-95, mAP50, precision and recall).
`ValLoss` is the model's own Ultralytics loss on a fixed set of images of a split, with the
BatchNorms in eval mode (the model is scored as deployed, nothing is updated): seconds instead of
a full validation, for comparing many variants of one model (`sensitivity`). Latency is timed on
the ONNX file Ultralytics exports (`check.export_onnx`), the same export for every model.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from yoloprune.errors import OptionError, YoloPruneError, first_line, unmarked
from yoloprune.progress import Progress
from yoloprune.pruning.count import count_flops, count_params
from yoloprune.reports.measurements import Bench, Export, Measurement
from yoloprune.runtimes import Precision, Runtime, Setting, export_title, runtime_of
from yoloprune.text import plural
from yoloprune.timing import latency as timings
from yoloprune.yolo import deploy
from yoloprune.yolo.check import check_imgsz, hyperparameters, num_classes
from yoloprune.yolo.dataset import calibration_batches
from yoloprune.yolo.io import load_model, save_checkpoint
from yoloprune.yolo.validate import Metrics, evaluate


def accuracy(
    model: nn.Module | str | os.PathLike[str],
    data: str | os.PathLike[str],
    imgsz: int = 640,
    batch: int = 16,
    device: str | int | None = None,
) -> Metrics:
    """Box mAP50-95, mAP50, precision and recall of `model` (a module, a .pt file, or a file Ultralytics
    exported, run on `device`) on the val split of the dataset YAML `data`, by Ultralytics' validator
    at `imgsz` (`finetune.evaluate`).

    Example:
        >>> 0 <= accuracy("best.pt", "digits/data.yaml", imgsz=64).map50_95 <= 1
        True
    """
    with tempfile.TemporaryDirectory(prefix="yoloprune-val-") as work:
        if isinstance(model, nn.Module):
            model = save_checkpoint(model, Path(work) / "model.pt")
        try:
            return evaluate(model, data, imgsz=imgsz, batch=batch, device=device, workdir=work)
        except YoloPruneError:
            raise
        except Exception as e:
            raise OptionError(
                f"`data={unmarked(str(data))!r}`: Ultralytics could not validate {unmarked(str(model))} on "
                f"it ({unmarked(first_line(e))}). Pass an "
                "Ultralytics dataset YAML with a val: split for the model's task; yoloprune never downloads "
                "datasets."
            ) from e


class ValLoss:
    """Mean Ultralytics loss per image (its components summed, as the trainer does) on `images`
    images of a dataset split, letterboxed, not augmented; the batches are read once.

    Example:
        >>> score = ValLoss("digits/data.yaml", imgsz=64, images=4)
        >>> score(load_model("best.pt").model) > 0
        True
    """

    def __init__(
        self,
        data: str | os.PathLike[str],
        task: str = "detect",
        imgsz: int = 640,
        images: int = 32,
        batch: int = 8,
        split: str = "val",
    ) -> None:
        self.data, self.imgsz = data, imgsz
        self.batches = list(calibration_batches(data, task, imgsz, images, batch, split))
        self.images = sum(len(b["img"]) for b in self.batches)
        self.max_class = max((int(b["cls"].max()) for b in self.batches if len(b["cls"])), default=-1)

    def __call__(self, model: nn.Module) -> float:
        check_imgsz(model, self.imgsz)
        if self.max_class >= num_classes(model):
            raise OptionError(
                f"`data={unmarked(str(self.data))!r}` has class id {self.max_class} but the model predicts "
                f"{plural(num_classes(model), 'class', 'classes')}, so its loss cannot score the "
                "labels. Use the dataset the model was trained on."
            )
        total = 0.0
        with _scoring(model), torch.no_grad():
            for b in self.batches:
                loss, _ = model.loss(b)
                total += float(loss.sum())  # per-image mean loss x batch size, components summed
        return total / self.images


@contextlib.contextmanager
def _scoring(model: nn.Module) -> Iterator[None]:
    """Train mode (the head returns what the loss reads) with BatchNorms in eval mode, a loss built
    from the model's hyperparameters; every attribute and mode is restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    saved = {k: getattr(model, k, None) for k in ("criterion", "args", "nc")}
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    model.criterion, model.args, model.nc = None, hyperparameters(model), num_classes(model)
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for k, v in saved.items():
            setattr(model, k, v)


def check_timing(runs: int, warmup: int) -> None:
    """Refuse timing settings `bench` cannot use (checked early by callers with long work before it)."""
    if runs < 1 or warmup < 0:
        raise OptionError(
            f"`runs={runs}` `warmup={warmup}`: need at least 1 timed run and 0 or more warm-ups."
        )


def bench(
    sources: Sequence[object],
    *,
    imgsz: int = 640,
    data: str | os.PathLike[str] | None = None,
    runs: int = 50,
    warmup: int = 10,
    batch: int = 16,
    simplify: bool = False,
    runtime: Runtime | str | None = None,
    int8: bool = False,
    threads: int | None = None,
    tensorrt: bool = True,
    progress: bool = True,
) -> Bench:
    """Measure each model of `sources` (.pt, safe folder, YAML or module) under the same settings.

    Params and FLOPs at `imgsz`, the float32 checkpoint's size, and the batch-1 latency of the file
    Ultralytics exports for a runtime (every model timed in turn: `warmup` runs, then the median of
    `runs`). Without `runtime`: ONNX Runtime on the CPU (`simplify` runs onnxslim over the ONNX file)
    with `threads` threads, or with 1 and with all; TensorRT FP16 where a GPU and TensorRT exist
    (`tensorrt`); and with `data`, the checkpoint's accuracy on its val split (`accuracy`). With
    `runtime` ("ort", "openvino" or "tensorrt"): that runtime alone, in its float precision and, with
    `int8`, in INT8 calibrated on `data` (`deploy.calibration`); with `data`, the accuracy of each
    exported file, as deployed (`deploy.accuracy`). Ratios are against the first model. Progress goes
    to stderr.

    Example:
        >>> from yoloprune.yolo.api import PruneOptions, prune
        >>> _ = prune("best.pt", PruneOptions(target_flops=0.5)).save("pruned.pt")
        >>> b = bench(["best.pt", "pruned.pt"], imgsz=64, runs=2, warmup=1)
        >>> round(b.ratios(b.rows[1])["flops"], 1)
        0.5
    """
    if not sources:
        raise YoloPruneError("bench needs at least one model.")
    check_timing(runs, warmup)
    chosen = deploy.columns(runtime, int8, threads, data, tensorrt)
    exports = {s.export: s for s in chosen}  # the files to export, each with a setting that runs it
    source = {s.key: s.export for s in chosen}  # the file each column times
    if runtime is None:  # one ONNX file; TensorRT builds its FP16 engine from it
        exports = {ORT_FILE: Setting(Runtime.ORT, Precision.FP32)}
        source = dict.fromkeys(source, ORT_FILE)
    scored = data is not None
    loaded = [load_model(s) for s in sources]
    per_model = len(exports) * (1 + (scored and runtime is not None)) + (scored and runtime is None)
    p = Progress(len(loaded) * per_model + len(chosen), "bench", enabled=progress)
    rows = []
    with tempfile.TemporaryDirectory(prefix="yoloprune-bench-") as work:
        files: dict[str, list[Path]] = {k: [] for k in exports}
        for i, item in enumerate(loaded):
            check_imgsz(item.model, imgsz)
            folder = Path(work) / str(i)
            folder.mkdir()
            checkpoint = save_checkpoint(item.model, folder / "model.pt", source_ckpt=item.ckpt).resolve()
            made = {}
            for key, setting in exports.items():
                p.start(f"{item.source}: export for {export_title(key)} at {imgsz}x{imgsz}")
                files[key].append(deploy.export(checkpoint, setting, imgsz, data, simplify))
                made[key] = Export(_size(files[key][-1]))
                if scored and runtime is not None:
                    p.start(f"{item.source}: validate the {export_title(key)} file on {data}")
                    with deploy.as_timed(setting):
                        metrics = accuracy(files[key][-1], data, imgsz, batch, deploy.device(setting))
                    made[key] = replace(made[key], accuracy=asdict(metrics))
            acc = None
            if scored and runtime is None:
                p.start(f"{item.source}: validate on {data}")
                acc = asdict(accuracy(checkpoint, data, imgsz, batch))
            flops = count_flops(item.model, (torch.zeros(1, 3, imgsz, imgsz),))
            onnx = made[ORT_FILE].bytes if ORT_FILE in made else None
            size = checkpoint.stat().st_size
            shown = made if runtime is not None else {}
            rows.append(Measurement(item.source, count_params(item.model), flops, size, onnx, {}, acc, shown))
        load_before = os.getloadavg()[0]
        latency: dict[str, list] = {}
        notes = {}
        each = f"{plural(len(loaded), 'model')} x {plural(runs, 'run')}, in turn"
        for s in chosen:
            p.start(f"{s.title}: {each}")
            timed = timings(s, files[source[s.key]], runs, warmup)
            if isinstance(timed, str):  # TensorRT cannot run here: the reason instead of timings
                notes[s.key], timed = timed, [None] * len(loaded)
            latency[s.key] = timed
        load_after = os.getloadavg()[0]
    p.done()
    measured = tuple(replace(r, latency={k: v[i] for k, v in latency.items()}) for i, r in enumerate(rows))
    cpus = os.cpu_count()
    versions = deploy.versions({s.runtime for s in chosen}, int8)
    onnx_export = "onnxslim-simplified" if simplify else "not simplified"
    summary = (
        f"Batch 1 at {imgsz}x{imgsz}; {', '.join(f'{k} {v}' for k, v in versions.items())} ({cpus} logical "
        f"CPUs, load average {load_before:.2f} before timing, {load_after:.2f} after), median of {runs} runs "
        f"after {warmup} warm-up runs, models timed in turn; files from Ultralytics' exporter"
    )
    summary += f" (ONNX {onnx_export})." if ORT_FILE in exports else "."
    if Runtime.OPENVINO in {s.runtime for s in chosen}:
        summary += " OpenVINO runs FP32 arithmetic wherever a model is not quantized."
    if int8:
        images = deploy.CALIBRATION_IMAGES
        summary += f" INT8: calibrated on up to {images} images of {data}'s train split (val if it has none)."
    if scored:
        what = "each exported file" if runtime is not None else "the checkpoint"
        summary += f" Accuracy of {what}: Ultralytics validation on the val split of {data} (box metrics)."
    settings = {
        "imgsz": imgsz,
        "batch": 1,
        "runs": runs,
        "warmup": warmup,
        "runtime": None if runtime is None else runtime_of(runtime).value,
        "int8": int8,
        "threads": threads,
        **versions,
        "simplify": simplify,
        "cpus": cpus,
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "data": None if data is None else str(data),
        "summary": summary,
    }
    return Bench(measured, settings, notes, {s.key: s.title for s in chosen})


ORT_FILE = Setting(Runtime.ORT, Precision.FP32).export  # the ONNX file


def _size(path: Path) -> int:
    """Bytes of an exported file, or of every file in an exported folder (OpenVINO's .xml and .bin)."""
    return (
        path.stat().st_size
        if path.is_file()
        else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    )
