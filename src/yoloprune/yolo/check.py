"""Two checks a pruned model must pass before it is handed to a user: it trains, and it exports.

Scope: `train_step_check` runs one train-mode forward, loss and backward on a tiny synthetic
batch in the format Ultralytics' loss for the model's task expects; `onnx_check` exports the model
with Ultralytics' own exporter, exactly as `YOLO("pruned.pt").export(format="onnx")` would, and
compares ONNX Runtime's first output with torch's. Both work on copies and leave the model as it is.
`export_onnx`, that export on its own, also makes the files `yoloprune bench` times.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from copy import deepcopy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import torch
from torch import nn
from ultralytics import YOLO
from ultralytics.cfg import get_cfg
from ultralytics.nn.modules import Depth, SemanticSegment
from ultralytics.nn.tasks import BaseModel
from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_KEYS

from yoloprune.errors import YoloPruneError
from yoloprune.progress import phase
from yoloprune.yolo.io import _quiet, model_task, save_checkpoint

ONNX_TOLERANCE = 1e-3  # max relative difference between ONNX Runtime's and torch's first output
_TASKS = ("detect", "segment", "pose", "obb", "classify", "semantic", "depth")
_BATCH = 2  # images in the synthetic training batch
_OBJECTS = 2  # objects per image


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
            f"The {task} model's train-mode forward and loss failed ({_first_line(e)}), so it cannot be "
            "fine-tuned. If yoloprune pruned it, please report this with the plan (--plan)."
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
                f"ONNX Runtime could not run {onnx_file}, the file Ultralytics exported ({_first_line(e)}); "
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
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))


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
        with _quiet():
            loaded = YOLO(str(checkpoint))
            onnx_file = loaded.export(
                format="onnx", imgsz=imgsz, device="cpu", simplify=simplify, verbose=False
            )
    except Exception as e:
        raise YoloPruneError(
            f"Ultralytics' ONNX export of {checkpoint} failed ({_first_line(e)}). The export path "
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


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
