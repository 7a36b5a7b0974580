"""Measure the per-channel evidence data-driven criteria read, on a few calibration images.

For every producer conv of the groups to score, the activation after the Ultralytics `Conv`
wrapper (act(bn(conv(x))), or the conv's own output where there is no wrapper) is captured:
  - "taylor": Molchanov et al. (2019) first-order Taylor importance, the mean over images of
    |sum over H, W of activation x d(loss)/d(activation)| per channel, with the model's own
    Ultralytics loss on the dataset's labels;
  - "samples": each activation map read at every ground-truth box centre, on that map's own grid
    (its stride is the input size over the map size), with the box's class.

The model is scored as it is deployed: a copy runs in train mode (so the head returns what the
loss reads) with its BatchNorms in eval mode (running statistics, none updated). The caller's
model is never changed.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from yoloprune.errors import OptionError
from yoloprune.graph.groups import ChannelGraph, Group
from yoloprune.importance import NEEDS, Evidence
from yoloprune.progress import phase
from yoloprune.yolo.adapter import model_task
from yoloprune.yolo.check import check_imgsz, hyperparameters, num_classes
from yoloprune.yolo.dataset import calibration_batches

KINDS = frozenset({"taylor", "samples"})
_MEASURED = {"samples": "activations at box centres", "taylor": "Taylor importance (loss gradients)"}


def producer_convs(model: nn.Module, groups: Iterable[Group]) -> list[str]:
    """Paths of the 2-D convs that produce the channels of the prunable `groups`."""
    modules = dict(model.named_modules())
    paths = (m.module for g in groups if g.prunable for m in g.producers)
    return list(dict.fromkeys(p for p in paths if isinstance(modules[p], nn.Conv2d)))


def gather_evidence(
    model: nn.Module,
    graph: ChannelGraph,
    data_yaml: str | os.PathLike[str],
    images: int = 64,
    imgsz: int = 640,
    need: Iterable[str] = KINDS,
    groups: Iterable[Group] | None = None,
    batch: int = 8,
) -> Evidence:
    """Measure `need` ("taylor", "samples") for the producer convs of `groups` (default: all).

    Example:
        >>> from yoloprune.yolo.api import analyze
        >>> a = analyze("best.pt", run_probe=False)
        >>> ev = gather_evidence(a.model, a.graph, "digits/data.yaml", images=8, imgsz=64)
        >>> x, y = ev.samples["model.0.conv"]
        >>> ev.taylor["model.0.conv"].shape, x.shape == (len(y), 16)
        ((16,), True)
    """
    need = frozenset(need)
    if not need <= KINDS:
        raise ValueError(f"unknown evidence {sorted(need - KINDS)}; choose from {sorted(KINDS)}")
    if images < 1:
        raise OptionError(f"`calib_images={images!r}`: need at least one calibration image.")
    check_imgsz(model, imgsz)
    work = copy.deepcopy(model)
    convs = producer_convs(work, graph.groups if groups is None else groups)
    taps = _taps(work, convs)
    captured: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, path=path: captured.__setitem__(path, out))
        for path, module in taps.items()
    ]
    work.train()
    for m in work.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    if "taylor" in need:
        work.criterion, work.args, work.nc = None, hyperparameters(work), num_classes(work)
    device = next(work.parameters()).device
    taylor: dict[str, torch.Tensor] = {}  # path -> (C,) sum over images of |sum_HW a * g|
    samples: dict[str, list[torch.Tensor]] = {p: [] for p in convs}
    classes: list[torch.Tensor] = []
    seen = 0
    try:
        task = model_task(work) if "taylor" in need else "detect"  # samples need boxes only
        what = " and ".join(_MEASURED[k] for k in sorted(need))
        with phase(f"calibration: {what} at {imgsz}x{imgsz}", images, "images") as progress:
            for b in calibration_batches(data_yaml, task, imgsz, images, batch):
                b = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
                seen += len(b["img"])
                if "taylor" in need:
                    grads = _loss_gradients(work, b, captured, convs, data_yaml)
                    for path, g in grads.items():
                        a = captured[path].detach()  # (B, C, H, W)
                        taylor[path] = taylor.get(path, 0) + (a * g).sum((2, 3)).abs().sum(0).double().cpu()
                else:
                    with torch.no_grad():
                        work(b["img"])
                if "samples" in need:
                    for path in convs:
                        samples[path].append(_at_box_centres(captured[path].detach(), b))
                    classes.append(b["cls"].view(-1).long().cpu())
                captured.clear()
                progress.advance(len(b["img"]))
    finally:
        for h in handles:
            h.remove()
    return Evidence(
        taylor={p: (t / seen).numpy() for p, t in taylor.items()} if "taylor" in need else {},
        samples=_stack(samples, classes) if "samples" in need else {},
    )


def _at_box_centres(a: torch.Tensor, batch: dict) -> torch.Tensor:
    """(B, C, H, W) activations read at each box's centre cell on this map's grid -> (N, C)."""
    h, w = a.shape[-2:]
    centres = batch["bboxes"][:, :2]  # (N, 2) normalised x, y in the letterboxed image
    x = (centres[:, 0] * w).long().clamp(0, w - 1)
    y = (centres[:, 1] * h).long().clamp(0, h - 1)
    return a[batch["batch_idx"].long(), :, y, x].float().cpu()


def _taps(model: nn.Module, convs: list[str]) -> dict[str, nn.Module]:
    """Where each conv's activation is read: its Ultralytics `Conv` wrapper (output after BN and
    activation) when it is the wrapper's `.conv`, else the conv itself."""
    modules = dict(model.named_modules())
    taps = {}
    for path in convs:
        parent = modules.get(path.rpartition(".")[0])
        wrapped = path.endswith(".conv") and getattr(parent, "conv", None) is modules[path]
        taps[path] = parent if wrapped and hasattr(parent, "act") else modules[path]
    return taps


def _loss_gradients(
    model: nn.Module,
    batch: dict,
    captured: dict[str, torch.Tensor],
    convs: list[str],
    data_yaml: str | os.PathLike[str],
) -> dict[str, torch.Tensor]:
    """d(total loss)/d(activation) for every captured conv activation (zeros where unused)."""
    nc = int(model.nc)
    if len(batch["cls"]) and int(batch["cls"].max()) >= nc:
        raise OptionError(
            f"`data={str(data_yaml)!r}` has class id {int(batch['cls'].max())} but the model predicts {nc} "
            "classes, so its loss cannot score the labels. Calibrate on the dataset the model was trained "
            "(or will be fine-tuned) on."
        )
    batch["img"].requires_grad_(True)  # so every activation is in the graph even if weights are frozen
    with torch.enable_grad():
        loss, _ = model.loss(batch)
        acts = [captured[p] for p in convs]
        grads = torch.autograd.grad(loss.sum(), acts, allow_unused=True)
    return {p: torch.zeros_like(a) if g is None else g for p, a, g in zip(convs, acts, grads, strict=True)}


def _stack(
    samples: dict[str, list[torch.Tensor]], classes: list[torch.Tensor]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    labels = torch.cat(classes).numpy() if classes else np.zeros(0, dtype=np.int64)
    return {p: (torch.cat(rows).numpy(), labels) for p, rows in samples.items() if rows}


def evidence_for(
    model: nn.Module,
    graph: ChannelGraph,
    importance: str,
    data: str | os.PathLike[str] | None,
    groups: Iterable[Group] | None = None,
    images: int = 64,
    imgsz: int = 640,
) -> Evidence | None:
    """The evidence criterion `importance` reads, measured on `data`; None when it reads none.

    Example:
        >>> from yoloprune.yolo.api import analyze
        >>> a = analyze("yolov8n.yaml", run_probe=False)
        >>> evidence_for(a.model, a.graph, "l1", None) is None
        True
    """
    needs = NEEDS.get(importance, frozenset())
    if not needs:
        if data is not None:
            readers = ", ".join(sorted(n for n, fields in NEEDS.items() if fields))
            raise OptionError(
                f"`data` is only read by the data-driven criteria ({readers}); `importance={importance!r}` "
                "ranks channels from the weights alone. Drop `data` or pick one of those."
            )
        return None
    if data is None:
        raise OptionError(
            f"`importance={importance!r}` ranks channels on calibration images; pass `data`, an "
            "Ultralytics dataset YAML (e.g. the digits dataset yoloprune generates)."
        )
    return gather_evidence(model, graph, data, images, imgsz, needs, groups)
