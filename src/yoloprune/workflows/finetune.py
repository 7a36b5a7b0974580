"""Fine-tune a pruned model with Ultralytics' own trainer, keeping its pruned widths.

Scope: `finetune` (check the checkpoint, dataset, training arguments and teacher, train, and check
that `best.pt` kept the pruned widths) and the training arguments it takes (`parse_train_args`,
`training_args`). The trainers that keep the widths are the seam's (`yolo.trainer`), distillation
is `workflows.distill`, and the validator is `yolo.validate`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn
from ultralytics.cfg import get_cfg, parse_key_value_pair
from ultralytics.utils import DEFAULT_CFG, callbacks

from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.pruning.count import count_params
from yoloprune.workflows.distill import Distillation, check_teacher
from yoloprune.yolo.check import num_classes
from yoloprune.yolo.dataset import yolo_dataset
from yoloprune.yolo.io import load_model
from yoloprune.yolo.quiet import quiet
from yoloprune.yolo.trainer import TASKS, TRAINERS
from yoloprune.yolo.transfer import class_outputs, rebuild_class_outputs
from yoloprune.yolo.validate import Metrics

RESERVED = ("model", "data", "epochs", "task", "mode")  # set by `finetune` itself
DEFAULTS = {"plots": False}  # Ultralytics' training plots fetch a font from the internet on first use


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
    the dataset's class names ({index: name}). A pose dataset must have the model's keypoints: a pruned
    model keeps its keypoint outputs (Ultralytics would rebuild them from the YAML, losing every width)."""
    if task == "pose":
        check_keypoints(data, model)
    for split in ("train", "val"):
        dataset = yolo_dataset(data, task, 64, 1, split)
    names = {int(k): str(v) for k, v in dataset.data["names"].items()}
    if len(names) != num_classes(model):
        try:
            class_outputs(model)
        except YoloPruneError as e:
            raise OptionError(f"`data={str(data)!r}` has {len(names)} classes, but {e}") from e
    return names


def check_keypoints(data: str | os.PathLike[str], model: nn.Module) -> None:
    """Refuse a pose dataset whose `kpt_shape` is not the model's, before any label is read."""
    want = tuple(model.model[-1].kpt_shape)
    doc = yaml.safe_load(Path(data).read_text(encoding="utf-8")) if Path(data).is_file() else None
    have = doc.get("kpt_shape") if isinstance(doc, dict) else None
    if have is not None and tuple(have) != want:
        raise OptionError(
            f"`data={str(data)!r}` has kpt_shape {list(have)}, but the model predicts {list(want)} "
            "(keypoints x values). A pruned model keeps its keypoint outputs: prune a model trained for "
            f"{have[0]} keypoints, or label the dataset with {want[0]}."
        )


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
            ".pt checkpoint, such as the pruned model saved as pruned.pt."
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
            raise OptionError(f"`distill_weight={distill_weight!r}`: pass a positive number such as 1.0.")
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
