"""Distillation: pull a pruned model's head outputs towards the unpruned model's while it trains.

Scope: `head_distillation` (the distance between two raw head outputs), `HeadDistillationLoss` (the
model's criterion plus that distance), `Distillation` (the training callback that installs it) and
`check_teacher`. The callback wraps the model's loss criterion once training is set up; it is
picklable, so DDP workers get it too. The EMA, validation and every saved checkpoint keep the plain
criterion (Ultralytics strips it before saving), so `best.pt` holds only Ultralytics classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.utils.torch_utils import unwrap_model

from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.text import plural
from yoloprune.yolo.check import num_classes
from yoloprune.yolo.io import load_model


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
        >>> from ultralytics.utils import callbacks
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


def check_teacher(teacher: str | os.PathLike[str], student: nn.Module, task: str) -> None:
    """Refuse a teacher whose task, classes or box head differ from the student's."""
    loaded = load_model(teacher)
    same = (
        loaded.task == task
        and num_classes(loaded.model) == num_classes(student)
        and getattr(loaded.model.model[-1], "reg_max", None) == getattr(student.model[-1], "reg_max", None)
    )
    if not same:
        raise OptionError(
            f"`teacher={str(teacher)!r}` is a {loaded.task} model with "
            f"{plural(num_classes(loaded.model), 'class', 'classes')}; it must be the unpruned {task} model "
            f"with {plural(num_classes(student), 'class', 'classes')} and the same head."
        )
