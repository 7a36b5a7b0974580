"""Two checks a pruned model must pass before it is handed to a user: it trains, and it exports.

Scope: `train_step_check` runs one train-mode forward, loss and backward on a tiny synthetic
batch in the format Ultralytics' loss for the model's task expects; `onnx_check` exports the model
with Ultralytics' own exporter, exactly as `YOLO("pruned.pt").export(format="onnx")` would, and
compares ONNX Runtime's first output with torch's. Both work on copies and leave the model as it is.
`export_onnx`, that export on its own, also makes the files `workflows.evaluate.bench` times.
`export_checks` runs both on a pruned model and holds each against the original's own result on
the same check, recording `Check`s.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import torch
from torch import nn
from ultralytics import YOLO
from ultralytics.cfg import get_cfg
from ultralytics.nn.modules import Depth, RTDETRDecoder, SemanticSegment
from ultralytics.nn.tasks import BaseModel
from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_KEYS

from yoloprune.errors import YoloPruneError, first_line
from yoloprune.progress import phase
from yoloprune.yolo.adapter import model_task
from yoloprune.yolo.io import save_checkpoint
from yoloprune.yolo.quiet import quiet

ONNX_TOLERANCE = 1e-3  # max relative difference between ONNX Runtime's and torch's first output
_TASKS = ("detect", "segment", "pose", "obb", "classify", "semantic", "depth")
_BATCH = 2  # images in the synthetic training batch
_OBJECTS = 2  # objects per image
# A model the original already fails a check on is not the pruned model's fault: ONNX Runtime rounds
# some models differently from torch, and some losses need inputs a synthetic batch lacks. So a
# pruned model passes a check within its tolerance, or when it is not meaningfully worse than the
# original on the same check: within ORIGINAL_FACTOR times the original's own error, or failing only
# where the original fails too. Factor 2: pruning changes the arithmetic (fewer, other sums), so a
# rounding difference moves by a fraction of itself (RT-DETR's: 0.5x to 1.5x before its detections
# were compared as a set), while the export faults pruning can cause (a stale split, a wrong width)
# give errors of order 1 or no export at all.
ORIGINAL_FACTOR = 2.0


@dataclass(frozen=True)
class Check:
    """One check of a pruned model, as `prune` and `verify` record it.

    `value` is what was measured on the pruned model (an error, a loss; None for a yes/no check or
    one that could not run), `original` the same measurement on the unpruned original (None where it
    was not needed or could not run), `tolerance` the bound on `value` (see ORIGINAL_FACTOR for when
    the original's own result raises it). `detail` is one line for a person: what was measured, or
    what failed and why.

    Example:
        >>> Check("ONNX", True, 2e-7, tolerance=1e-3, detail="max rel diff 2e-07").ok
        True
    """

    name: str
    ok: bool
    value: float | None = None
    original: float | None = None
    tolerance: float | None = None
    detail: str = ""


class Checked:
    """What a result that records its `checks` (`PruneResult`, `Verification`) says about them."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)


def export_checks(model: nn.Module, original: nn.Module, onnx: bool = True) -> tuple[Check, ...]:
    """The train-step check and (with `onnx`) the ONNX check of a pruned `model`, each held against
    `original`'s own result on the same check, which runs only when `model` misses the tolerance.

    Example:
        >>> from yoloprune.yolo.io import load_model
        >>> model = load_model("yolov8n-cls.yaml").model
        >>> [(c.name, c.ok) for c in export_checks(model, model)]
        [('train step', True), ('ONNX', True)]
    """
    checks = [_train_step(model, original)]
    if onnx:
        checks.append(_onnx(model, original))
    return tuple(checks)


def refusal(failed: Sequence[Check], skip: Mapping[str, str], report: str) -> str:
    """Why a pruned model was not written and what to do: `skip` holds, per check name, the sentence
    that says how to do without that check; `report` names what a bug report needs besides the model.

    Example:
        >>> failed = [Check("ONNX", False, 0.05, 0.001, 1e-3, "max rel diff 0.05")]
        >>> refusal(failed, {}, "the plan").split(". ")[0]
        'the pruned model failed the ONNX check, so nothing was written (ONNX: max rel diff 0.05)'
    """
    names = " and ".join(f"the {c.name} check" for c in failed)
    details = "; ".join(f"{c.name}: {c.detail}" for c in failed)
    text = f"the pruned model failed {names}, so nothing was written ({details})."
    text += "".join(f" {skip[c.name]}" for c in failed if c.name in skip)
    return f"{text} This is likely a yoloprune bug: please report it with the model and {report}."


class ChecksFailed(YoloPruneError):
    """A pruned model failed checks (`checks`, the failed ones), so it was not written."""

    def __init__(self, checks: Sequence[Check]) -> None:
        self.checks = tuple(checks)
        skip = {"ONNX": "If you will not export the model to ONNX, prune with check_onnx=False to save it."}
        super().__init__(refusal(self.checks, skip, "the plan (PruneResult.plan_json())"))


def _attempt(check: Callable[[nn.Module], float], model: nn.Module) -> float | YoloPruneError:
    try:
        return check(model)
    except YoloPruneError as e:
        return e


def _train_step(model: nn.Module, original: nn.Module) -> Check:
    loss = _attempt(train_step_check, model)
    if not isinstance(loss, YoloPruneError):
        return Check("train step", True, loss, detail=f"loss {loss:.4g} on a synthetic batch")
    before = _attempt(train_step_check, original)
    if isinstance(before, YoloPruneError):
        why = f"fails on the original too, so not because of pruning: {before}"
        return Check("train step", True, detail=why)
    return Check("train step", False, None, before, detail=f"{loss} The original passes (loss {before:.4g}).")


def _onnx(model: nn.Module, original: nn.Module) -> Check:
    tol, measured = ONNX_TOLERANCE, "between ONNX Runtime and PyTorch"
    diff = _attempt(onnx_check, model)
    if not isinstance(diff, YoloPruneError) and diff <= tol:
        return Check("ONNX", True, diff, None, tol, f"max rel diff {diff:.2g} {measured} (tolerance {tol:g})")
    before = _attempt(onnx_check, original)
    if isinstance(diff, YoloPruneError):
        if isinstance(before, YoloPruneError):
            detail = f"the original's export fails too, so not because of pruning: {before}"
            return Check("ONNX", True, None, None, tol, detail)
        detail = f"{diff} The original exports (max rel diff {before:.2g} {measured})."
        return Check("ONNX", False, None, before, tol, detail)
    if isinstance(before, YoloPruneError):
        detail = f"max rel diff {diff:.2g} {measured}; the original's export fails, so not worse: {before}"
        return Check("ONNX", True, diff, None, tol, detail)
    detail = (
        f"max rel diff {diff:.2g} {measured}, the original's own {before:.2g} (tolerance {tol:g}, or "
        f"{ORIGINAL_FACTOR:g}x the original's)"
    )
    return Check("ONNX", diff <= ORIGINAL_FACTOR * before, diff, before, tol, detail)


@phase("train-step check (forward, loss, backward)")
def train_step_check(model: nn.Module, imgsz: int = 64) -> float:
    """Run one train-mode forward, loss and backward on a copy of `model`; return the total loss.

    The batch is synthetic, seeded and tiny (2 images of `imgsz`, 2 objects each) in the format the
    model's task needs (detect, segment, pose, obb, classify, semantic or depth; the task is read from
    the model's head). Hyperparameters come from `model.args` where present, else Ultralytics'
    defaults. A YoloPruneError says what failed: the forward, the loss, a non-finite loss or a
    non-finite gradient.

    Example:
        >>> from yoloprune.yolo.io import load_model
        >>> loss = train_step_check(load_model("yolov8n.yaml").model)
        >>> loss > 0
        True
    """
    task = _task(model, "train_step_check")
    check_imgsz(model, imgsz)
    model = deepcopy(model).train()
    for p in model.parameters():  # checkpoints Ultralytics trained are saved with gradients off
        p.requires_grad_(True)
    model.criterion = None  # built afresh from the hyperparameters below
    model.args = hyperparameters(model)
    model.nc = num_classes(model)  # RT-DETR's loss reads it; the trainer sets it from the dataset
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in _synthetic_batch(model, task, imgsz).items()}
    try:
        loss, _ = model.loss(batch)
        total = loss.sum()  # per-component losses, summed as Ultralytics' trainer does
        if torch.isfinite(total):
            total.backward()
    except Exception as e:
        raise YoloPruneError(
            f"The {task} model's train-mode forward and loss failed ({first_line(e)}), so it cannot be "
            "fine-tuned."
        ) from e
    if not torch.isfinite(total):
        raise YoloPruneError(
            f"The {task} model's train-mode loss is {total.item()} on a synthetic batch, so fine-tuning "
            "would diverge at once. Check the weights for NaN or Inf values (e.g. from a corrupt checkpoint)."
        )
    for name, p in model.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            raise YoloPruneError(
                f"The {task} model's loss has a non-finite gradient at {name}; fine-tuning would diverge "
                "at once. Check that layer's weights for NaN or Inf values."
            )
    return total.item()


@phase("ONNX check (export, then ONNX Runtime against torch)")
def onnx_check(model: nn.Module, imgsz: int = 64, workdir: Path | None = None) -> float:
    """Export `model` with Ultralytics' ONNX exporter; return how far ONNX Runtime is from torch.

    The model is saved as a checkpoint, loaded back with `ultralytics.YOLO` and exported as a user
    would (`simplify=False`, so onnxslim is not needed). Both the exported file (CPU provider) and
    the loaded-back model in eval mode run one seeded random image; the result is the first
    output's max abs difference divided by its max abs torch value (for a class map, as semantic
    segmentation exports, the share of pixels whose class differs), to compare with
    `ONNX_TOLERANCE`. The files (model.pt, model.onnx) go to `workdir`, else to a temporary folder
    removed afterwards.

    Example:
        >>> from yoloprune.yolo.io import load_model
        >>> onnx_check(load_model("yolov8n.yaml").model) < ONNX_TOLERANCE
        True
    """
    _task(model, "onnx_check")
    check_imgsz(model, imgsz)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="yoloprune-onnx-")))
        checkpoint = save_checkpoint(model, Path(workdir) / "model.pt").resolve()
        onnx_file, loaded = export_onnx(checkpoint, imgsz)
        try:
            session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
            image = session.get_inputs()[0]
            x = torch.rand(*image.shape, generator=torch.Generator().manual_seed(0))  # (1, 3, H, W)
            got = session.run(None, {image.name: x.numpy()})[0]
        except Exception as e:
            raise YoloPruneError(
                f"ONNX Runtime could not run {onnx_file}, the file Ultralytics exported ({first_line(e)}); "
                "the export is unusable. Please report this with the model."
            ) from e
        reference = loaded.model.eval()
        for m in reference.modules():  # the exporter switches these heads to their export branch: so here
            if isinstance(m, (SemanticSegment, Depth)):  # upsampled to the image (semantic: its class map)
                m.export, m.format = True, "onnx"
        if hasattr(reference, "end2end"):  # the exporter picks the NMS-free branch or not; do the same
            end2end = session.get_modelmeta().custom_metadata_map.get("end2end")
            reference.end2end = end2end == "True"
        with torch.inference_mode():
            want = _first_tensor(reference(x)).numpy()
    if got.shape != want.shape:
        raise YoloPruneError(
            f"The exported ONNX model's first output has shape {got.shape} but torch's has {want.shape}; "
            "the export does not compute what the model computes."
        )
    if got.dtype.kind in "biu":  # a class map: the share of pixels whose class differs
        return float(np.mean(got != want))
    scale = max(float(np.abs(want).max()), 1e-12)
    if got.ndim == 3 and _ranked(reference):  # (B, N, C) detections: tied scores come in either order
        return _unordered_difference(got, want) / scale
    return float(np.abs(got - want).max()) / scale


def _ranked(model: nn.Module) -> bool:
    """Whether the model's first output lists detections ranked by score (RT-DETR, end-to-end heads)."""
    rtdetr = any(isinstance(m, RTDETRDecoder) for m in model.modules())
    return rtdetr or getattr(model, "end2end", False) is True


def _unordered_difference(got: np.ndarray, want: np.ndarray) -> float:
    """Max abs difference between two (B, N, C) detection lists, each row against the other list's
    closest row: detections with equal scores (common at a random init) come in any order."""
    worst = 0.0
    for a, b in zip(got, want, strict=True):  # (N, C) each
        d = np.abs(a[:, None, :] - b[None, :, :]).max(-1)  # (N, N): row i of a against row j of b
        worst = max(worst, float(d.min(1).max()), float(d.min(0).max()))
    return worst


def export_onnx(checkpoint: Path, imgsz: int, simplify: bool = False) -> tuple[Path, YOLO]:
    """Export a saved checkpoint with Ultralytics' ONNX exporter, as `YOLO(checkpoint).export(format="onnx")`
    does, on the CPU; return the file (beside the checkpoint) and the loaded model. `simplify` runs
    onnxslim over the graph (it must be installed).

    Example:
        >>> onnx_file, _ = export_onnx(Path("best.pt"), 64)
        >>> onnx_file.name
        'best.onnx'
    """
    try:
        with quiet():
            loaded = YOLO(str(checkpoint))
            onnx_file = loaded.export(
                format="onnx", imgsz=imgsz, device="cpu", simplify=simplify, verbose=False
            )
    except Exception as e:
        if "output model too small" in str(e):  # Ultralytics' sanity check on the file it wrote
            raise YoloPruneError(
                f"Ultralytics' ONNX export of {checkpoint} refuses its own file ({first_line(e)}): it "
                "takes an ONNX file under 0.1 MB for a corrupt export, so a model this small cannot be "
                "exported with Ultralytics."
            ) from e
        raise YoloPruneError(
            f"Ultralytics' ONNX export of {checkpoint} failed ({first_line(e)}). The export path "
            "differs from eval mode: it fuses Conv+BN and runs C2f-style blocks through forward_split, "
            "which splits by `self.c`; a pruned block whose `c` is stale fails there."
        ) from e
    return Path(onnx_file), loaded


def _task(model: nn.Module, check: str) -> str:
    if not isinstance(model, BaseModel):
        raise YoloPruneError(
            f"{check} needs an Ultralytics model (e.g. YOLO(...).model), not a {type(model).__name__}."
        )
    task = model_task(model)
    if task not in _TASKS:
        raise YoloPruneError(f"{check} supports {', '.join(_TASKS)} models; this one is a {task} model.")
    return task


def check_imgsz(model: nn.Module, imgsz: int) -> None:
    """Refuse an image size that is not a multiple of the model's largest stride."""
    strides = getattr(model, "stride", None)
    stride = int(max(strides.tolist())) if isinstance(strides, torch.Tensor) and strides.numel() else 32
    if imgsz <= 0 or imgsz % stride:
        raise YoloPruneError(
            f"imgsz={imgsz} is not a positive multiple of the model's largest stride {stride}; "
            f"use e.g. imgsz={max(stride, -(-imgsz // stride) * stride)}."
        )


def hyperparameters(model: nn.Module) -> SimpleNamespace:
    """`model.args` as the namespace Ultralytics' losses read (`args.box`), defaults filled in.

    Checkpoints and YAML-built models carry a dict of the arguments they were made with; the
    trainer replaces it with its full config, as this does.
    """
    args = getattr(model, "args", None)
    if isinstance(args, SimpleNamespace):
        return args
    known = {k: v for k, v in (args or {}).items() if k in DEFAULT_CFG_KEYS} if isinstance(args, dict) else {}
    return get_cfg(DEFAULT_CFG, {**known, "task": model_task(model)})  # the task the model's head does


def num_classes(model: nn.Module) -> int:
    """How many classes the model predicts (its head's `nc`, else its class names)."""
    head = model.model[-1]
    return int(getattr(head, "nc", None) or len(getattr(model, "names", None) or [0]))


def _synthetic_batch(model: nn.Module, task: str, imgsz: int) -> dict[str, torch.Tensor]:
    """A seeded batch in the format Ultralytics' dataloader gives the loss for `task`."""
    g = torch.Generator().manual_seed(0)
    batch = {"img": torch.rand(_BATCH, 3, imgsz, imgsz, generator=g)}  # (B, 3, H, W) in [0, 1)
    if isinstance(getattr(model, "txt_feats", None), torch.Tensor):  # YOLO-World reads its classes' texts
        batch["txt_feats"] = model.txt_feats.expand(_BATCH, -1, -1).clone()  # (B, nc, D) text embeddings
    nc = model.nc
    if task == "classify":
        batch["cls"] = torch.arange(_BATCH) % nc  # (B,)
        return batch
    if task == "semantic":
        batch["semantic_mask"] = torch.randint(0, nc, (_BATCH, imgsz, imgsz), generator=g)  # (B, H, W)
        return batch
    if task == "depth":
        batch["depth"] = 0.5 + 9.5 * torch.rand(_BATCH, imgsz, imgsz, generator=g)  # (B, H, W) metres
        return batch
    n = _BATCH * _OBJECTS
    cls = torch.arange(n, dtype=torch.float32) % nc
    # Boxes large enough (20-50% of the image) that the assigner gives every object anchors.
    xy = 0.35 + 0.3 * torch.rand(n, 2, generator=g)
    wh = 0.2 + 0.3 * torch.rand(n, 2, generator=g)
    batch["batch_idx"] = torch.arange(_BATCH).repeat_interleave(_OBJECTS).float()  # (N,)
    batch["cls"] = cls[:, None]  # (N, 1)
    batch["bboxes"] = torch.cat((xy, wh), 1)  # (N, 4) normalised xywh
    if task == "obb":
        angle = math.pi / 2 * torch.rand(n, 1, generator=g)
        batch["bboxes"] = torch.cat((batch["bboxes"], angle), 1)  # (N, 5) normalised xywh + radians
    if task == "pose":
        nkpt, ndim = model.model[-1].kpt_shape
        offset = torch.rand(n, nkpt, 2, generator=g) - 0.5
        kpts = xy[:, None] + offset * wh[:, None]  # (N, K, 2) normalised, inside each box
        batch["keypoints"] = torch.cat((kpts, torch.ones(n, nkpt, ndim - 2)), 2)  # (N, K, ndim), visible
    if task == "segment":
        batch.update(_masks(batch["bboxes"], cls, imgsz // model.args.mask_ratio, model.args.overlap_mask))
    return batch


def _masks(boxes: torch.Tensor, cls: torch.Tensor, size: int, overlap: bool) -> dict[str, torch.Tensor]:
    """Box-shaped instance masks at prototype resolution, and the per-pixel class map YOLO26 uses."""
    grid = (torch.arange(size) + 0.5) / size  # pixel centres, normalised
    lo, hi = boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2  # (N, 2) each
    inside_x = (grid >= lo[:, :1]) & (grid < hi[:, :1])  # (N, W)
    inside_y = (grid >= lo[:, 1:]) & (grid < hi[:, 1:])  # (N, H)
    instance = (inside_y[:, :, None] & inside_x[:, None, :]).float()  # (N, H, W)
    index = torch.zeros(_BATCH, size, size)  # (B, H, W): 0 background, i + 1 the image's i-th object
    semantic = torch.zeros(_BATCH, size, size)  # (B, H, W) class of the covering object
    for i, mask in enumerate(instance):
        image, k = divmod(i, _OBJECTS)
        index[image][mask > 0] = k + 1
        semantic[image][mask > 0] = cls[i]
    return {"masks": index if overlap else instance, "sem_masks": semantic}


def _first_tensor(output: object) -> torch.Tensor:
    """The first tensor in a (nested) model output: the predictions Ultralytics' exporter exports."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    return _first_tensor(output[0])
