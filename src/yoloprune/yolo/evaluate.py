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

import onnxruntime
import torch
from torch import nn

from yoloprune.bench.latency import ort_latency, tensorrt_latency
from yoloprune.bench.stats import count_flops, count_params
from yoloprune.bench.table import Bench, Measurement
from yoloprune.errors import YoloPruneError
from yoloprune.progress import Progress
from yoloprune.text import plural
from yoloprune.yolo.check import _first_line, check_imgsz, export_onnx, hyperparameters, num_classes
from yoloprune.yolo.data import calibration_batches
from yoloprune.yolo.finetune import Metrics, evaluate
from yoloprune.yolo.io import load_model, save_checkpoint


def accuracy(
    model: nn.Module | str | os.PathLike[str], data: str | os.PathLike[str], imgsz: int = 640, batch: int = 16
) -> Metrics:
    """Box mAP50-95, mAP50, precision and recall of `model` (a module or a .pt file) on the val split
    of the dataset YAML `data`, by Ultralytics' validator at `imgsz` (`finetune.evaluate`).

    Example:
        >>> 0 <= accuracy("best.pt", "digits/data.yaml", imgsz=64).map50_95 <= 1
        True
    """
    with tempfile.TemporaryDirectory(prefix="yoloprune-val-") as work:
        if isinstance(model, nn.Module):
            model = save_checkpoint(model, Path(work) / "model.pt")
        try:
            return evaluate(model, data, imgsz=imgsz, batch=batch, workdir=work)
        except YoloPruneError:
            raise
        except Exception as e:
            raise YoloPruneError(
                f"--data {data}: Ultralytics could not validate {model} on it ({_first_line(e)}). Pass an "
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
            raise YoloPruneError(
                f"--data {self.data} has class id {self.max_class} but the model predicts "
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
        raise YoloPruneError(
            f"--runs {runs} --warmup {warmup}: need at least 1 timed run and 0 or more warm-ups."
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
    tensorrt: bool = True,
    progress: bool = True,
) -> Bench:
    """Measure each model of `sources` (.pt, safe folder, YAML or module) under the same settings.

    Params and FLOPs at `imgsz`; the float32 checkpoint and the ONNX file Ultralytics exports from it
    (`simplify` runs onnxslim); batch-1 latency in ONNX Runtime on the CPU with 1 thread and with all
    cores (every model timed in turn: `warmup` runs, then the median of `runs`); TensorRT FP16 where
    a GPU and TensorRT exist; and with `data`, accuracy on its val split (`accuracy`). Ratios in the
    result are against the first model. Progress goes to stderr.

    Example:
        >>> from yoloprune.yolo.api import prune
        >>> _ = prune("best.pt", target_flops=0.5).save("pruned.pt")
        >>> b = bench(["best.pt", "pruned.pt"], imgsz=64, runs=2, warmup=1)
        >>> round(b.ratios(b.rows[1])["flops"], 1)
        0.5
    """
    if not sources:
        raise YoloPruneError("bench needs at least one model.")
    check_timing(runs, warmup)
    loaded = [load_model(s) for s in sources]
    steps = len(loaded) * (2 if data else 1) + 2 + bool(tensorrt)
    p = Progress(steps, "bench", enabled=progress)
    rows = []
    with tempfile.TemporaryDirectory(prefix="yoloprune-bench-") as work:
        exported = []
        for i, item in enumerate(loaded):
            p.start(f"{item.source}: export to ONNX at {imgsz}x{imgsz}")
            check_imgsz(item.model, imgsz)
            folder = Path(work) / str(i)
            folder.mkdir()
            checkpoint = save_checkpoint(item.model, folder / "model.pt", source_ckpt=item.ckpt)
            onnx_file, _ = export_onnx(checkpoint.resolve(), imgsz, simplify)
            acc = None
            if data is not None:
                p.start(f"{item.source}: validate on {data}")
                acc = asdict(accuracy(checkpoint, data, imgsz, batch))
            exported.append(onnx_file)
            flops = count_flops(item.model, (torch.zeros(1, 3, imgsz, imgsz),))
            sizes = checkpoint.stat().st_size, onnx_file.stat().st_size
            rows.append(Measurement(item.source, count_params(item.model), flops, *sizes, {}, acc))
        load_before = os.getloadavg()[0]
        latency: dict[str, list] = {}
        each = f"{plural(len(exported), 'model')} x {plural(runs, 'run')}, in turn"
        p.start(f"ONNX Runtime, 1 thread: {each}")
        latency["ort_cpu_1_thread"] = ort_latency(exported, 1, runs, warmup)
        p.start(f"ONNX Runtime, all threads: {each}")
        latency["ort_cpu_all_threads"] = ort_latency(exported, None, runs, warmup)
        notes = {}
        if tensorrt:
            p.start("TensorRT FP16")
        trt = tensorrt_latency(exported, runs, warmup) if tensorrt else "n/a (not requested)"
        if isinstance(trt, str):
            notes["tensorrt_fp16"] = trt
            trt = [None] * len(exported)
        latency["tensorrt_fp16"] = trt
        load_after = os.getloadavg()[0]
    p.done()
    measured = tuple(replace(r, latency={k: v[i] for k, v in latency.items()}) for i, r in enumerate(rows))
    cpus = os.cpu_count()
    export = "onnxslim-simplified" if simplify else "not simplified"
    summary = (
        f"Batch 1 at {imgsz}x{imgsz}; ONNX Runtime {onnxruntime.__version__} on the CPU ({cpus} logical "
        f"CPUs, load average {load_before:.2f} before timing, {load_after:.2f} after), median of {runs} runs "
        f"after {warmup} warm-up runs, models timed in turn; ONNX from Ultralytics' exporter ({export})."
    )
    if data is not None:
        summary += f" Accuracy: Ultralytics validation on the val split of {data} (box metrics)."
    settings = {
        "imgsz": imgsz,
        "batch": 1,
        "runs": runs,
        "warmup": warmup,
        "onnxruntime": onnxruntime.__version__,
        "simplify": simplify,
        "cpus": cpus,
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "data": None if data is None else str(data),
        "summary": summary,
    }
    return Bench(measured, settings, notes)
