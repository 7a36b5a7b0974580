"""Load Ultralytics models from checkpoints, YAMLs or objects; save checkpoints Ultralytics can read.

Scope: the only place yoloprune reads or writes model files. `load_model` never downloads: a
missing `.pt` is an error, not a name to fetch. `save_checkpoint` writes the dict Ultralytics'
trainer writes, in float32, atomically, and refuses to pickle anything a process with only
Ultralytics and its own requirements (torch, torchvision, numpy) installed could not unpickle.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import pickle
import re
import sys
import types
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
import ultralytics
from torch import nn
from ultralytics import RTDETR, YOLO
from ultralytics.engine.model import Model
from ultralytics.nn import tasks
from ultralytics.nn.tasks import BaseModel, load_checkpoint
from ultralytics.utils import YAML
from ultralytics.utils.checks import check_yolov5u_filename
from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES
from ultralytics.utils.patches import torch_load

from yoloprune.atomic import atomic_write
from yoloprune.errors import YoloPruneError, first_line
from yoloprune.progress import phase
from yoloprune.yolo.adapter import model_task
from yoloprune.yolo.quiet import quiet

CFG_DIR = Path(ultralytics.__file__).parent / "cfg" / "models"
# Ultralytics' naming rule: "yolov8s.yaml" is "yolov8.yaml" built at scale "s".
_SCALED = re.compile(r"(\d+)([nslmx])(.+)?$")
# Top-level packages a process that loads a saved checkpoint is assumed to have: Ultralytics and the
# requirements it pickles in its own checkpoints (torchvision: its TorchVision backbone layer).
_LOADABLE_ROOTS = frozenset({"torch", "torchvision", "ultralytics", "numpy"}) | sys.stdlib_module_names
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


@dataclass(frozen=True, eq=False)  # eq=False: comparing modules and tensor dicts is meaningless
class Loaded:
    """A model ready to analyse: float32, on CPU, with where it came from.

    `model` is the Ultralytics model (`YOLO(...).model`, e.g. a DetectionModel), `task` its task
    ("detect", "segment", "pose", "obb", "classify", ...; "unknown" for a non-Ultralytics module),
    and `ckpt` the raw checkpoint dict when loaded from a `.pt` file (from a safe folder: its
    "train_args" and "yoloprune" entries), else None.
    """

    model: nn.Module
    source: str
    task: str
    ckpt: dict[str, Any] | None = None


def load_model(source: str | os.PathLike[str] | Model | nn.Module) -> Loaded:
    """Load a model from a `.pt` checkpoint, a safe folder (`save_safe`, no pickle), a model YAML, a
    `YOLO` object or an `nn.Module`.

    A YAML may be a file or any name Ultralytics ships (`yolov8s.yaml`, `yolo11n-seg.yaml`);
    it builds an untrained model. Nothing is ever downloaded. Objects are used as they are,
    converted in place to float32 on CPU. Every failure is a YoloPruneError naming the source.

    Example:
        >>> loaded = load_model("yolov8n.yaml")
        >>> loaded.task, type(loaded.model).__name__, loaded.ckpt
        ('detect', 'DetectionModel', None)
    """
    if isinstance(source, Model):  # checked first: a YOLO object is an nn.Module too
        if not isinstance(source.model, nn.Module):
            raise YoloPruneError(
                f"The YOLO object wraps {source.model!r}, an exported model, not a PyTorch one; "
                "load the .pt checkpoint it was exported from instead."
            )
        ckpt = source.ckpt if isinstance(source.ckpt, dict) and source.ckpt else None
        return _loaded(source.model, str(source.ckpt_path or source.model_name or "YOLO object"), ckpt)
    if isinstance(source, nn.Module):
        return _loaded(source, f"{type(source).__name__} object", None)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        suffix = Path(text).suffix.lower()
        with phase(f"loading {text}"):
            if Path(text).is_dir() and suffix != ".pt":  # a pickle-free safe folder (yoloprune.yolo.safe)
                from yoloprune.yolo.safe import read_safe

                saved = read_safe(text)
                return _loaded(saved.model, text, {"train_args": saved.train_args, "yoloprune": saved.meta})
            if suffix == ".pt":
                return _load_checkpoint_file(Path(text))
            if suffix in (".yaml", ".yml"):
                return _build_from_yaml(text)
        what = f"{suffix} files" if suffix else "names without a .pt or .yaml suffix"
        raise YoloPruneError(
            f"Cannot load {text!r}: yoloprune reads Ultralytics .pt checkpoints, safe folders and model "
            f"YAMLs, not {what}. Pass e.g. runs/detect/train/weights/best.pt or yolov8s.yaml."
        )
    raise YoloPruneError(
        f"Cannot load a model from a {type(source).__name__}; pass a .pt path, a model YAML, "
        "an ultralytics.YOLO object or a torch.nn.Module."
    )


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    meta: dict[str, Any] | None = None,
    source_ckpt: dict[str, Any] | None = None,
) -> Path:
    """Write `model` as an Ultralytics checkpoint that `ultralytics.YOLO(path)` loads without yoloprune.

    The dict has the keys Ultralytics' trainer writes; "model" is a float32 copy (exact numbers,
    no forward/backward hooks), "ema" is None, "train_args" come from `source_ckpt`, and
    "yoloprune" holds `meta` (JSON-able data, stored as its JSON round trip). The write is
    atomic: on failure no file is left behind and a YoloPruneError names `path`.

    Example:
        >>> loaded = load_model("yolov8n.yaml")
        >>> save_checkpoint(loaded.model, "pruned.pt", meta={"ratio": 0.5})
        PosixPath('pruned.pt')
    """
    path = Path(path)
    if isinstance(model, Model):
        model = model.model
    if path.suffix.lower() != ".pt":
        raise YoloPruneError(
            f"Cannot save a checkpoint as {path}: Ultralytics only reads checkpoints named *.pt; "
            f"use {path.with_suffix('.pt')}."
        )
    check_checkpoint_name(path, official=False)
    if not isinstance(model, nn.Module):
        raise YoloPruneError(f"Cannot save {type(model).__name__} to {path}: pass a torch.nn.Module.")
    try:
        meta_json = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as e:
        raise YoloPruneError(
            f"Cannot save {path}: meta must be plain JSON data (dict, list, str, number, bool, None); {e}."
        ) from e
    snapshot = _snapshot(model)
    train_args = dict((source_ckpt or {}).get("train_args") or {})
    task = model_task(snapshot)
    if task != "unknown":  # what `YOLO(path).task` and a trainer resuming from train_args read
        snapshot.task = train_args["task"] = task
    ckpt = {
        "epoch": -1,  # a finished checkpoint: Ultralytics will not try to resume it
        "best_fitness": None,
        "model": snapshot,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": train_args,
        "train_metrics": None,
        "train_results": None,
        "date": datetime.now().astimezone().isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "yoloprune": meta_json,
    }
    _check_portable(ckpt, snapshot, path)
    # torch.serialization.save, not torch.save: Ultralytics replaces torch.save with a wrapper that
    # retries failed writes with sleeps.
    return atomic_write(path, lambda tmp: torch.serialization.save(ckpt, tmp))


def check_checkpoint_name(path: str | os.PathLike[str], *, official: bool = True) -> None:
    """Refuse a checkpoint name Ultralytics would not read as that file: a YOLOv5 or YOLOv3 name it
    rewrites to its "u" model (`yolov5n.pt` -> `yolov5nu.pt`, `checks.check_yolov5u_filename`, then
    looked for locally and downloaded), so nothing could load the file back; and with `official`, the
    name of an official Ultralytics checkpoint (`downloads.GITHUB_ASSETS_NAMES`, e.g. `yolov8n.pt`),
    which `YOLO(name)` downloads wherever the file is not found, so a pruned model is easily
    mistaken for the official one.

    Example:
        >>> check_checkpoint_name("yolov5n.pt")
        Traceback (most recent call last):
        ...
        yoloprune.errors.YoloPruneError: Cannot save a checkpoint as yolov5n.pt: Ultralytics reads ...
        >>> check_checkpoint_name("yolov5n-pruned.pt")
    """
    path = Path(path)
    for text in (path.name, str(path), str(path.resolve())):  # yoloprune loads by the absolute path
        renamed = check_yolov5u_filename(text, verbose=False)
        if renamed != text:
            raise YoloPruneError(
                f"Cannot save a checkpoint as {path}: Ultralytics reads the name {text} as {renamed} "
                "(its YOLOv5u rename) and looks for that file instead (downloading it if it is an official "
                "model), so neither YOLO() nor yoloprune could load this file back. Choose another name, "
                f"e.g. {_other_name(path)}."
            )
    if official and path.name in GITHUB_ASSETS_NAMES:
        raise YoloPruneError(
            f"Cannot save the pruned model as {path}: {path.name} is the name of an official Ultralytics "
            f"checkpoint, which YOLO({path.name!r}) downloads wherever this file is not found, so the "
            f"pruned model is easily mistaken for it. Choose another name, e.g. {_other_name(path)}."
        )


def _other_name(path: Path) -> str:
    """A name beside `path` that Ultralytics reads as it is."""
    for name in (f"{path.stem}-pruned{path.suffix}", f"pruned{path.suffix}"):
        if name not in GITHUB_ASSETS_NAMES and check_yolov5u_filename(name, verbose=False) == name:
            return name
    return "pruned.pt"


def _loaded(model: nn.Module, source: str, ckpt: dict[str, Any] | None) -> Loaded:
    model = model.float().cpu()
    return Loaded(model=model, source=source, task=model_task(model), ckpt=ckpt)


def _load_checkpoint_file(path: Path) -> Loaded:
    if not path.exists():
        yaml_name = path.with_suffix(".yaml").name
        hint = f" ('{yaml_name}' builds an untrained one)" if _is_shipped(yaml_name) else ""
        raise YoloPruneError(
            f"Checkpoint {path} not found; yoloprune never downloads weights, pass a path to your own "
            f"checkpoint or a model YAML such as yolov8s.yaml{hint}."
        )
    if path.is_dir():
        raise YoloPruneError(f"Checkpoint {path} is a directory; pass the .pt file itself.")
    if not os.access(path, os.R_OK):
        raise YoloPruneError(f"Checkpoint {path} is not readable (permission denied); fix its permissions.")
    # An absolute path: given a bare official name (e.g. "yolov8n.pt") whose file is corrupt,
    # Ultralytics deletes the file and downloads it again.
    resolved = path.resolve()
    try:
        with quiet():
            model, ckpt = load_checkpoint(str(resolved))
    except Exception as e:
        raise YoloPruneError(_why_unloadable(path, e)) from e
    if not isinstance(model, BaseModel):
        raise YoloPruneError(
            f"Checkpoint {path} holds a {_qualname(model)}, not an Ultralytics model; a file written with "
            "torch.save(model) loses the model wrapper. Save it with YOLO(...).save() or "
            "yoloprune.yolo.io.save_checkpoint and load that."
        )
    return _loaded(model, str(path), ckpt)


def _refused_global(*errors: BaseException) -> str | None:
    """The global a weights-only unpickler refused, as torch names it in one of `errors` or their causes."""
    for error in errors:
        while error is not None:
            if found := re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(error), re.IGNORECASE):
                return found.group(1)
            error = error.__cause__ or error.__context__
    return None


def _why_unloadable(path: Path, error: Exception) -> str:
    """Explain why Ultralytics could not load `path`, re-reading it only on this error path."""
    if isinstance(error, ModuleNotFoundError):
        return (
            f"Checkpoint {path} needs the Python module {error.name!r}, which is not installed: the file "
            "pickles objects from it. Install that package, or re-save the model with YOLO(...).save() "
            "where it loads."
        )
    if isinstance(error, OSError):
        return f"Could not read checkpoint {path}: {error}."
    try:  # under ULTRALYTICS_SAFE_LOAD, Ultralytics refused to unpickle code: so must this re-read
        obj = torch_load(path, map_location="cpu", weights_only=bool(tasks.SAFE_LOAD))
    except Exception as e:
        refused = _refused_global(error, e)  # Ultralytics' own refusal first: it names what its list lacks
        if tasks.SAFE_LOAD and refused:
            instead = (
                " (a TorchVision backbone: the pickle-free safe format cannot hold it either)."
                if refused.startswith("torchvision.")
                else ", or use a pickle-free safe folder instead."
            )
            return (
                f"Checkpoint {path} pickles {refused}, which restricted loading (ULTRALYTICS_SAFE_LOAD) "
                f"refuses: unpickling it could run code. Unset ULTRALYTICS_SAFE_LOAD only if you trust the "
                f"file's source{instead}"
            )
        return (
            f"Checkpoint {path} is not a readable PyTorch checkpoint: the file is empty, truncated, "
            f"corrupted or not a torch file ({first_line(e)}). Copy or export it again."
        )
    if isinstance(obj, dict) and any(isinstance(obj.get(k), nn.Module) for k in ("ema", "model")):
        return (
            f"Ultralytics could not prepare the model in checkpoint {path}: {type(error).__name__}: {error}."
        )
    return (
        f"Checkpoint {path} holds no Ultralytics model: expected a dict with an nn.Module under 'ema' "
        f"or 'model', found {_describe(obj)}. Pass a checkpoint written by Ultralytics training "
        "(e.g. runs/detect/train/weights/best.pt) or by yoloprune."
    )


def _describe(obj: object) -> str:
    if not isinstance(obj, dict):
        return f"a {_qualname(obj)}"
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "a state_dict (tensors only, no model structure)"
    keys = ", ".join(repr(k) for k in list(obj)[:10])
    held = [
        f"{k!r} is {'None' if obj[k] is None else 'a ' + _qualname(obj[k])}"
        for k in ("ema", "model")
        if k in obj
    ]
    return f"a dict with keys {keys}" + (f" ({', '.join(held)})" if held else "")


def _qualname(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _build_from_yaml(text: str) -> Loaded:
    path = Path(text)
    if not path.is_file() and not (path.name == text and _is_shipped(text)):
        raise YoloPruneError(_yaml_not_found(text))
    # Ultralytics' CLI picks RT-DETR by file name too: YOLO() cannot build an RTDETRDecoder head.
    try:  # seeded: the same YAML always builds the same weights, so a YAML original can be verified
        with quiet(), torch.random.fork_rng():
            torch.manual_seed(0)
            wrapper = RTDETR(text) if "rtdetr" in path.stem else YOLO(text, verbose=False)
    except Exception as e:
        raise YoloPruneError(_yaml_build_error(text, e)) from e
    return _loaded(wrapper.model, text, None)


def _yaml_build_error(text: str, e: Exception) -> str:
    """One paragraph on why a model YAML did not build, and what to change."""
    reason = " ".join(str(e).split())  # one paragraph: Ultralytics' YAML errors span lines
    if isinstance(e, (URLError, ConnectionError, TimeoutError)):
        return (
            f"Model YAML {text} does not build: building it tried to download something "
            f"({type(e).__name__}: {reason}), e.g. a TorchVision backbone's pretrained weights. "
            "yoloprune never downloads: set `weights: null` (or a local path) in that layer's arguments."
        )
    return (
        f"Model YAML {text} does not build: {type(e).__name__}: {reason}. Check that every module it "
        "names is an Ultralytics module or torch.nn.<Name>, that 'backbone' and 'head' are present, and "
        f"that each argument list has the types its module expects; the YAMLs under {CFG_DIR} are "
        "working examples."
    )


@functools.cache
def _shipped_yamls() -> dict[str, Path]:
    return {p.name: p for p in sorted(CFG_DIR.rglob("*.yaml"))}


def _is_shipped(name: str) -> bool:
    return name in _shipped_yamls() or _SCALED.sub(r"\1\3", name) in _shipped_yamls()


def _yaml_not_found(text: str) -> str:
    if Path(text).name != text:
        return f"Model YAML {text} not found; check the path, or pass a shipped name such as yolov8s.yaml."
    close = difflib.get_close_matches(text, _yaml_names(), n=6, cutoff=0.6)
    hint = (
        f"did you mean {', '.join(close)}?"
        if close
        else f"the configs Ultralytics ships are under {CFG_DIR}."
    )
    return f"Model YAML {text!r} is neither a file nor a config Ultralytics ships; {hint}"


def _yaml_names() -> list[str]:
    """Every YAML name Ultralytics resolves: shipped files plus their scaled variants (yolov8s.yaml)."""
    names = set(_shipped_yamls())
    for name, file in _shipped_yamls().items():
        for scale in (YAML.load(file) or {}).get("scales") or {}:
            variant = re.sub(r"(\d+)", rf"\g<1>{scale}", name, count=1)
            if _SCALED.sub(r"\1\3", variant) == name:
                names.add(variant)
    return sorted(names)


def _snapshot(model: nn.Module) -> nn.Module:
    """A float32 CPU copy with compact tensors, no hooks and no loss object, ready to pickle."""
    snapshot = deepcopy(model).float().cpu()
    if hasattr(snapshot, "criterion"):
        snapshot.criterion = None  # training-only state, as Ultralytics strips it
    for module in snapshot.modules():
        for name in _HOOK_DICTS:
            getattr(module, name, {}).clear()
        for store in (module._parameters, module._buffers):
            for tensor in store.values():
                # A view into a larger (unpruned) storage would save the whole storage.
                if tensor is not None and tensor.untyped_storage().nbytes() > tensor.nbytes:
                    tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)
    return snapshot


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


class _PortabilityCheck(pickle.Pickler):
    """Pickles into nothing, failing on the first object from a package outside `_LOADABLE_ROOTS`."""

    def __init__(self, model: nn.Module, path: Path) -> None:
        super().__init__(_Discard(), protocol=torch.serialization.DEFAULT_PROTOCOL)
        self.model, self.path = model, path

    def persistent_id(self, obj: object) -> str | None:
        return "storage" if torch.is_storage(obj) else None  # tensor data is not walked

    def reducer_override(self, obj: object) -> object:
        owner = obj if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)) else type(obj)
        module = getattr(owner, "__module__", None) or "?"
        if module.partition(".")[0] in _LOADABLE_ROOTS:
            return NotImplemented  # pickle it the usual way
        layer = next((name for name, m in self.model.named_modules() if m is obj), None)
        where = f"layer {layer!r} is" if layer is not None else "the checkpoint holds"
        raise YoloPruneError(
            f"Cannot save {self.path}: {where} a {module}.{getattr(owner, '__qualname__', owner)}, which a "
            f"process without the {module.partition('.')[0]!r} package cannot unpickle. Remove it first "
            "(e.g. finish pruning so no yoloprune layers remain); only torch, torchvision, ultralytics, "
            "numpy and standard-library objects may be saved."
        )


def _check_portable(ckpt: dict[str, Any], model: nn.Module, path: Path) -> None:
    _PortabilityCheck(model, path).dump(ckpt)
