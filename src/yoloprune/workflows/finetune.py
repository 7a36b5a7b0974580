"""Fine-tune a pruned model with Ultralytics' own trainer, keeping its pruned widths.

Scope: the trainer subclasses (`PrunedDetectionTrainer`, ...), head-output distillation from the
unpruned model, `finetune` and `evaluate`. Nothing here patches Ultralytics:
  - Ultralytics' stock `get_model` rebuilds the model from `model.yaml` and copies in the weights
    whose shapes match, which silently drops every pruned layer. Our trainers override that one
    seam and return the checkpoint's own module; for a dataset with another class count they first
    rebuild its class outputs, as that rebuild would (`transfer.rebuild_class_outputs`). The
    checkpoint always travels by path (`model=pruned.pt`), so Ultralytics' DDP workers, which rebuild
    the trainer from its class and arguments in a subprocess, load the same pruned module, and so does
    `resume=last.pt`.
  - Distillation is a training callback (`Distillation`, picklable, so DDP workers get it too) that
    wraps the model's loss criterion once training is set up; the EMA, validation and every saved
    checkpoint keep the plain criterion (Ultralytics strips it before saving), so `best.pt` holds
    only Ultralytics classes.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics import YOLO
from ultralytics.cfg import get_cfg, parse_key_value_pair
from ultralytics.models import yolo
from ultralytics.utils import DEFAULT_CFG, callbacks
from ultralytics.utils.torch_utils import unwrap_model

from yoloprune.errors import YoloPruneError
from yoloprune.pruning.count import count_params
from yoloprune.text import plural
from yoloprune.yolo.check import num_classes
from yoloprune.yolo.dataset import yolo_dataset
from yoloprune.yolo.io import load_model
from yoloprune.yolo.quiet import quiet
from yoloprune.yolo.transfer import class_outputs, rebuild_class_outputs

TASKS = ("detect", "segment", "pose", "obb")
RESERVED = ("model", "data", "epochs", "task", "mode")  # set by `finetune` itself
DEFAULTS = {"plots": False}  # Ultralytics' training plots fetch a font from the internet on first use


class _KeepsPrunedModel:
    """Mixin for an Ultralytics trainer: train the checkpoint's own module, never a YAML rebuild."""

    def get_model(self, cfg: Any = None, weights: nn.Module | None = None, verbose: bool = True) -> nn.Module:
        if not isinstance(weights, nn.Module):
            raise YoloPruneError(
                f"{type(self).__name__} fine-tunes the module inside a checkpoint; pass model=PRUNED.pt and "
                "leave pretrained at True (a pruned architecture cannot be rebuilt from its YAML)."
            )
        if num_classes(weights) != self.data["nc"]:  # a new dataset: new class outputs, as Ultralytics does
            rebuild_class_outputs(weights, self.data["names"], remap=getattr(self.args, "cls_remap", True))
        model = self.set_model_names_for_load(weights)
        for p in model.parameters():
            p.requires_grad_(p.dtype.is_floating_point)
        return model


class PrunedDetectionTrainer(_KeepsPrunedModel, yolo.detect.DetectionTrainer):
    """`DetectionTrainer` that keeps a pruned model's widths (see `_KeepsPrunedModel`).

    Example:
        >>> YOLO("pruned.pt").train(trainer=PrunedDetectionTrainer, data="digits/data.yaml")  # doctest: +SKIP
    """


class PrunedSegmentationTrainer(_KeepsPrunedModel, yolo.segment.SegmentationTrainer):
    """`SegmentationTrainer` that keeps a pruned model's widths."""


class PrunedPoseTrainer(_KeepsPrunedModel, yolo.pose.PoseTrainer):
    """`PoseTrainer` that keeps a pruned model's widths."""


class PrunedOBBTrainer(_KeepsPrunedModel, yolo.obb.OBBTrainer):
    """`OBBTrainer` that keeps a pruned model's widths."""


TRAINERS: dict[str, type] = {
    "detect": PrunedDetectionTrainer,
    "segment": PrunedSegmentationTrainer,
    "pose": PrunedPoseTrainer,
    "obb": PrunedOBBTrainer,
}


def head_distillation(student: dict, teacher: dict, reg_max: int) -> torch.Tensor:
    """How far the student's raw head outputs are from the teacher's, as one scalar (0 when equal).

    Per branch (`one2many` and `one2one` for end-to-end heads, averaged; else the dict itself):
      - classes: Bernoulli KL(teacher || student) of every class logit `scores` (B, nc, A), summed and
        divided by the teacher's summed probabilities, as Ultralytics divides its class loss by the
        target scores;
      - boxes: per anchor, KL(teacher || student) of the side distributions `boxes` (B, 4 * reg_max, A)
        over reg_max bins (squared error when reg_max is 1), summed over the 4 sides and averaged over
        anchors weighted by the teacher's top class probability, so background anchors barely count.
    Mask, keypoint and angle outputs are not distilled.

    Example:
        >>> head = {"boxes": torch.zeros(1, 64, 8), "scores": torch.zeros(1, 10, 8)}
        >>> float(head_distillation(head, head, reg_max=16))
        0.0
    """
    branches = [k for k in ("one2many", "one2one") if k in student and k in teacher]
    pairs = [(student[k], teacher[k]) for k in branches] or [(student, teacher)]
    return sum(_distill_branch(s, t, reg_max) for s, t in pairs) / len(pairs)


def _distill_branch(student: dict, teacher: dict, reg_max: int) -> torch.Tensor:
    for key in ("scores", "boxes"):
        if student[key].shape != teacher[key].shape:
            raise YoloPruneError(
                f"The teacher's head output {key!r} has shape {tuple(teacher[key].shape)} but the student's "
                f"has {tuple(student[key].shape)}; the teacher must be the unpruned model (same classes and "
                "head)."
            )
    s, t = student["scores"].float(), teacher["scores"].float()  # (B, nc, A) logits
    p = t.sigmoid()
    kl = F.binary_cross_entropy_with_logits(s, p, reduction="none") - F.binary_cross_entropy_with_logits(
        t, p, reduction="none"
    )
    classes = kl.sum() / p.sum().clamp(min=1.0)
    sb, tb = student["boxes"].float(), teacher["boxes"].float()  # (B, 4 * reg_max, A)
    if reg_max > 1:
        b, _, a = sb.shape
        log_s = sb.view(b, 4, reg_max, a).log_softmax(2)  # (B, 4, reg_max, A)
        log_t = tb.view(b, 4, reg_max, a).log_softmax(2)
        per_anchor = (log_t.exp() * (log_t - log_s)).sum((1, 2))  # (B, A)
    else:
        per_anchor = (sb - tb).pow(2).sum(1)  # (B, A)
    weight = p.amax(1)  # (B, A) the teacher's confidence that an anchor holds an object
    boxes = (weight * per_anchor).sum() / weight.sum().clamp(min=1e-9)
    return classes + boxes


def _raw(output: object) -> dict:
    """The raw head dict of a model output: train mode returns it, eval mode `(decoded, raw)`."""
    return output[-1] if isinstance(output, tuple) else output


class HeadDistillationLoss:
    """The model's own criterion plus `weight` x `head_distillation` toward a frozen teacher.

    The returned loss vector gets one more component, and the loss items a `kd_loss` entry, so
    Ultralytics logs it beside box, cls and dfl. Scaled by the batch size like Ultralytics' losses.
    """

    def __init__(self, criterion: Any, teacher: nn.Module, weight: float, reg_max: int) -> None:
        self.criterion, self.teacher, self.weight, self.reg_max = criterion, teacher, weight, reg_max

    def __call__(self, preds: Any, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, items = self.criterion(preds, batch)
        with torch.no_grad():
            taught = _raw(self.teacher(batch["img"]))
        distill = self.weight * head_distillation(_raw(preds), taught, self.reg_max)
        scaled = (distill * batch["img"].shape[0]).to(loss.dtype).view(1)
        return torch.cat([loss.view(-1), scaled]), {**items, "kd_loss": distill.detach()}

    def update(self) -> None:
        """Per-epoch update of the wrapped criterion (YOLO26's end-to-end loss shifts its weights)."""
        if hasattr(self.criterion, "update"):
            self.criterion.update()


@dataclass(frozen=True)
class Distillation:
    """A training callback (`on_pretrain_routine_end`) that distills the head outputs of `teacher`.

    It holds only a path and a weight, so Ultralytics can pickle it into DDP workers, each of which
    loads the teacher itself.

    Example:
        >>> cbs = callbacks.get_default_callbacks()
        >>> cbs["on_pretrain_routine_end"].append(Distillation("best.pt", 1.0))
    """

    teacher: str
    weight: float = 1.0

    def __call__(self, trainer: Any) -> None:
        model = unwrap_model(trainer.model)
        inner = getattr(model, "criterion", None)
        if isinstance(inner, HeadDistillationLoss):
            return
        teacher = load_model(self.teacher).model.to(trainer.device).eval().requires_grad_(False)
        inner = inner if inner is not None else model.init_criterion()
        model.criterion = HeadDistillationLoss(inner, teacher, self.weight, int(model.model[-1].reg_max))


@dataclass(frozen=True)
class Metrics:
    """Box metrics on a validation split (fractions in [0, 1])."""

    map50_95: float
    map50: float
    precision: float
    recall: float

    @classmethod
    def from_results(cls, results: dict[str, float]) -> Metrics:
        """From Ultralytics' `results_dict` / `train_metrics` (the `(B)` box keys)."""
        try:
            keys = ("mAP50-95", "mAP50", "precision", "recall")
            return cls(*(float(results[f"metrics/{k}(B)"]) for k in keys))
        except KeyError as e:
            raise YoloPruneError(f"Ultralytics reported no box metric {e}; got {sorted(results)}.") from e


@dataclass(frozen=True)
class Finetuned:
    """What `finetune` wrote and what the model is afterwards."""

    best: Path  # Ultralytics' best.pt (last.pt when no epoch was validated as best)
    last: Path
    save_dir: Path
    params: int
    widths: dict[str, int]  # output channels of every Conv2d, by named_modules() path
    metrics: Metrics  # of `best`, on the val split, as Ultralytics measured it while training


def conv_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every `Conv2d`, keyed by `named_modules()` path."""
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def check_data(data: str | os.PathLike[str], task: str, model: nn.Module) -> dict[int, str]:
    """Refuse a dataset YAML whose train or val split is missing or unlabelled, or whose class count
    differs from the model's when its head cannot be given another (`transfer.class_outputs`); return
    the dataset's class names ({index: name})."""
    for split in ("train", "val"):
        dataset = yolo_dataset(data, task, 64, 1, split)
    names = {int(k): str(v) for k, v in dataset.data["names"].items()}
    if len(names) != num_classes(model):
        try:
            class_outputs(model)
        except YoloPruneError as e:
            raise YoloPruneError(f"--data {data} has {len(names)} classes, but {e}") from e
    return names


def training_args(
    checkpoint: Path, data: str | os.PathLike[str], epochs: int, task: str, train: dict[str, Any]
) -> dict:
    """The trainer's overrides (`train` plus the given ones), checked by Ultralytics' own validation."""
    taken = sorted(set(train) & set(RESERVED))
    if taken:
        raise YoloPruneError(
            f"training arguments {', '.join(taken)}: set by fine-tuning itself (the checkpoint, the dataset "
            "YAML and the epochs are arguments of their own); remove them."
        )
    if not isinstance(epochs, int) or epochs < 1:
        raise YoloPruneError(f"epochs={epochs}: fine-tuning needs a whole number of epochs, 1 or more.")
    overrides = {
        **DEFAULTS,
        **train,
        "model": str(checkpoint),
        "data": str(data),
        "epochs": epochs,
        "task": task,
    }
    try:
        with quiet():
            get_cfg(DEFAULT_CFG, overrides)
    except (SyntaxError, TypeError, ValueError) as e:
        reason = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(e).split()))
        raise YoloPruneError(f"Ultralytics refuses the training arguments: {reason}") from e
    return overrides


def parse_train_args(items: list[str]) -> dict[str, Any]:
    """Ultralytics-style `key=value` words as a dict, parsed by Ultralytics' own CLI parser.

    Example:
        >>> parse_train_args(["imgsz=96", "batch=8", "device=cpu", "cos_lr=True"])
        {'imgsz': 96, 'batch': 8, 'device': 'cpu', 'cos_lr': True}
    """
    args: dict[str, Any] = {}
    for item in items:
        if "=" not in item or item.startswith("=") or item.endswith("="):
            raise YoloPruneError(f"{item!r} is not a training argument; write KEY=VALUE, e.g. imgsz=96.")
        key, value = parse_key_value_pair(item)
        if key in args:
            raise YoloPruneError(f"{key}= is given twice; give each training argument once.")
        args[key] = value
    return args


def _pruned_source(checkpoint: str | os.PathLike[str]) -> tuple[Path, nn.Module, str]:
    path = Path(checkpoint)
    if path.suffix.lower() != ".pt":
        raise YoloPruneError(
            f"Cannot fine-tune {path}: the trainer loads the model by path (also in DDP workers), so pass a "
            ".pt checkpoint, e.g. one written by `yoloprune prune --out pruned.pt`."
        )
    loaded = load_model(path)
    if loaded.task not in TASKS:
        raise YoloPruneError(
            f"fine-tuning supports {', '.join(TASKS)} models; {path} is a {loaded.task} model."
        )
    # An absolute path: given a bare official name, Ultralytics would try to download it.
    return path.resolve(), loaded.model, loaded.task


def finetune(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    epochs: int,
    *,
    teacher: str | os.PathLike[str] | None = None,
    distill_weight: float = 1.0,
    verbose: bool = True,
    log: Callable[[str], None] = print,
    **train_kwargs: Any,
) -> Finetuned:
    """Fine-tune a pruned checkpoint with Ultralytics' trainer; return where `best.pt` is.

    Every other Ultralytics training argument passes through (`imgsz=`, `batch=`, `device="0,1"`,
    `project=`, `name=`, ...; `plots` defaults to False). The model, dataset, arguments and teacher
    are checked before training starts. `teacher` (the unpruned checkpoint) adds
    `distill_weight` x `head_distillation` to the loss. A dataset with another class count gets new
    class outputs first, as Ultralytics gives a pretrained model (`transfer.rebuild_class_outputs`;
    said on `log`). Afterwards `best.pt` is reloaded and must have the input's widths (but those class
    outputs) and parameter count, else a YoloPruneError is raised.

    Example:
        >>> ft = finetune("pruned.pt", "digits/data.yaml", 10, imgsz=96, teacher="best.pt")  # doctest: +SKIP
        >>> ft.best, ft.metrics.map50_95  # doctest: +SKIP
        (PosixPath('runs/detect/train/weights/best.pt'), 0.41)
    """
    path, model, task = _pruned_source(checkpoint)
    names = check_data(data, task, model)
    overrides = training_args(path, data, epochs, task, train_kwargs)
    if len(names) != num_classes(model):  # what the trainer's get_model will do to its own copy
        log(rebuild_class_outputs(model, names, remap=overrides.get("cls_remap", True)).describe())
    cbs = callbacks.get_default_callbacks()
    if teacher is not None:
        if not (isinstance(distill_weight, (int, float)) and 0 < distill_weight < float("inf")):
            raise YoloPruneError(f"--distill-weight {distill_weight}: pass a positive number such as 1.0.")
        check_teacher(teacher, model, task)
        cbs["on_pretrain_routine_end"].append(
            Distillation(str(Path(teacher).resolve()), float(distill_weight))
        )
    with contextlib.nullcontext() if verbose else quiet():
        trainer = TRAINERS[task](overrides=overrides, _callbacks=cbs)
        trainer.train()
    best = trainer.best if trainer.best.exists() else trainer.last
    trained = load_model(best)
    widths, params = conv_widths(trained.model), count_params(trained.model)
    if widths != conv_widths(model) or params != count_params(model):
        raise YoloPruneError(
            f"{best} does not have the pruned widths of {path} ({params:,} params, {count_params(model):,} "
            "expected): the trainer rebuilt the model. This is a yoloprune bug; please report it."
        )
    metrics = Metrics.from_results(trained.ckpt.get("train_metrics") or {})
    return Finetuned(best, trainer.last, trainer.save_dir, params, widths, metrics)


def check_teacher(teacher: str | os.PathLike[str], student: nn.Module, task: str) -> None:
    """Refuse a teacher whose task, classes or box head differ from the student's."""
    loaded = load_model(teacher)
    same = (
        loaded.task == task
        and num_classes(loaded.model) == num_classes(student)
        and getattr(loaded.model.model[-1], "reg_max", None) == getattr(student.model[-1], "reg_max", None)
    )
    if not same:
        raise YoloPruneError(
            f"--teacher {teacher} is a {loaded.task} model with "
            f"{plural(num_classes(loaded.model), 'class', 'classes')}; it must be the unpruned {task} model "
            f"with {plural(num_classes(student), 'class', 'classes')} and the same head."
        )


def evaluate(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    imgsz: int,
    batch: int = 16,
    device: str | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> Metrics:
    """Validate `checkpoint` on the val split of `data` with Ultralytics' validator (no plots).

    Example:
        >>> 0 <= evaluate("best.pt", "digits/data.yaml", imgsz=64).map50_95 <= 1
        True
    """
    with tempfile.TemporaryDirectory(prefix="yoloprune-val-") as tmp, quiet():
        results = YOLO(str(Path(checkpoint).resolve())).val(
            data=str(data),
            imgsz=imgsz,
            batch=batch,
            device=device,
            plots=False,
            verbose=False,
            project=str(workdir or tmp),
            name="val",
            exist_ok=True,
        )
    return Metrics.from_results(results.results_dict)
