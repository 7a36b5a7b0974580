"""A pickle-free model format: the architecture as YAML, the weights as safetensors.

`.pt` checkpoints are pickles, and unpickling can run any code the file's author chose. A *safe folder*
holds only data:

    pruned.safe/
      architecture.yaml    the Ultralytics model YAML the model was built from (`model.yaml`), the model
                           class, class names, every layer's widths and every tensor's shape
      weights.safetensors  every tensor of the state_dict (float32; integer buffers as they are)

`load_safe` rebuilds the model from that YAML, resizes every layer to the recorded widths and loads the
weights strictly. It never unpickles and never evaluates text: the YAML is read with `yaml.safe_load`,
the model YAML may only name Ultralytics layers and `torch.nn` layers (Ultralytics' own builder would
call anything it names), and its `activation` is parsed, not `eval`-ed as Ultralytics does.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
import ultralytics
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from ultralytics.engine.model import Model
from ultralytics.nn import tasks
from ultralytics.nn.modules import Conv

from yoloprune.atomic import atomic_write_dir
from yoloprune.errors import YoloPruneError, first_line
from yoloprune.pruning.layers import implied_widths, width_attributes
from yoloprune.yolo.adapter import ULTRALYTICS
from yoloprune.yolo.quiet import quiet

FORMAT, VERSION = "yoloprune-safe", 1
ARCHITECTURE, WEIGHTS = "architecture.yaml", "weights.safetensors"
MODEL_CLASSES: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        tasks.DetectionModel,
        tasks.SegmentationModel,
        tasks.PoseModel,
        tasks.OBBModel,
        tasks.ClassificationModel,
        tasks.RTDETRDetectionModel,
    )
}
# Ultralytics layers that fetch files or networks when built; never built from an untrusted YAML.
_REFUSED_LAYERS = frozenset({"TorchVision"})


@dataclass(frozen=True, eq=False)
class SafeModel:
    """A model read from a safe folder, with the training arguments and yoloprune's metadata beside it."""

    model: nn.Module
    train_args: dict[str, Any]
    meta: Any


def save_safe(
    model: nn.Module | Model,
    path: str | os.PathLike[str],
    *,
    meta: Any = None,
    source_ckpt: dict[str, Any] | None = None,
) -> Path:
    """Write `model` as a safe folder at `path` (architecture YAML + safetensors weights), atomically.

    `meta` (JSON-able data) and `source_ckpt["train_args"]` are stored in the architecture file. An
    existing safe folder at `path` is replaced; any other existing file or folder is refused.

    Example:
        >>> from yoloprune.yolo.io import load_model
        >>> save_safe(load_model("yolov8n.yaml").model, "yolov8n.safe")
        PosixPath('yolov8n.safe')
    """
    path = Path(path)
    model = model.model if isinstance(model, Model) else model
    cls = type(model).__name__
    if MODEL_CLASSES.get(cls) is not type(model) or not isinstance(getattr(model, "yaml", None), dict):
        raise YoloPruneError(
            f"Cannot save {path} in the safe format: it rebuilds the model from its Ultralytics YAML, and a "
            f"{cls} is not one of the Ultralytics model classes it knows ({', '.join(MODEL_CLASSES)}) or has "
            "no model YAML. Save it as a .pt checkpoint instead."
        )
    rows = [*(model.yaml.get("backbone") or []), *(model.yaml.get("head") or [])]
    refused = [
        (i, row[2]) for i, row in enumerate(rows) if isinstance(row[2], str) and row[2] in _REFUSED_LAYERS
    ]
    if refused:
        i, name = refused[0]
        raise YoloPruneError(
            f"Cannot save {path} in the safe format: layer 'model.{i}' is a {name} layer, which the safe "
            "loader never builds (building it fetches a network, and its weights, by a name read from the "
            "file), so the folder could not be loaded. Save it as a .pt checkpoint instead."
        )
    try:
        meta = json.loads(json.dumps(meta))
        train_args = json.loads(json.dumps(dict((source_ckpt or {}).get("train_args") or {}), default=str))
    except (TypeError, ValueError) as e:
        raise YoloPruneError(f"Cannot save {path}: meta must be plain JSON data; {e}.") from e
    tensors = {k: _plain(v) for k, v in model.state_dict().items()}
    architecture = {
        "format": FORMAT,
        "version": VERSION,
        "ultralytics": ultralytics.__version__,
        "model_class": cls,
        "model_yaml": json.loads(json.dumps(model.yaml, default=str)),
        "names": {int(k): str(v) for k, v in dict(getattr(model, "names", None) or {}).items()},
        "train_args": train_args,
        "yoloprune": meta,
        "layers": {name: w for name, m in model.named_modules() if (w := width_attributes(m))},
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
    }
    text = yaml.dump(architecture, Dumper=_Dumper, sort_keys=False, width=120)

    def write(folder: Path) -> None:
        (folder / ARCHITECTURE).write_text(text, encoding="utf-8")
        save_file(tensors, str(folder / WEIGHTS), metadata={"format": FORMAT})

    return atomic_write_dir(path, write, replaceable=_is_replaceable, what="a yoloprune safe folder")


class _Dumper(yaml.SafeDumper):
    """Writes rows such as `[-1, 1, Conv, [64, 3, 2]]` on one line, as Ultralytics' YAMLs do."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    nested = any(
        isinstance(x, dict) or (isinstance(x, list) and any(isinstance(y, (list, dict)) for y in x))
        for x in data
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=not nested)


_Dumper.add_representer(list, _represent_list)


def _plain(t: torch.Tensor) -> torch.Tensor:
    """A compact CPU copy (float32 for floating tensors) that shares no storage with anything."""
    t = t.detach().cpu()
    return (t.float() if t.is_floating_point() else t).clone(memory_format=torch.contiguous_format)


def _is_replaceable(path: Path) -> bool:
    return path.is_dir() and {p.name for p in path.iterdir()} <= {ARCHITECTURE, WEIGHTS}


def load_safe(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild the model in safe folder `path` without unpickling anything (float32, CPU, eval mode).

    Example:
        >>> from yoloprune.yolo.io import load_model
        >>> _ = save_safe(load_model("yolov8n.yaml").model, "yolov8n.safe")
        >>> model = load_safe("yolov8n.safe")
        >>> type(model).__name__
        'DetectionModel'
    """
    return read_safe(path).model


def read_safe(path: str | os.PathLike[str]) -> SafeModel:
    """`load_safe`, also returning the training arguments and yoloprune's metadata stored with the model."""
    path = Path(path)
    doc = _read_architecture(path)
    model = _build(path, doc)
    _resize(path, model, doc)
    _load_weights(path, model, doc)
    ULTRALYTICS.fix_attributes(model)
    model.names = dict(doc.get("names") or {}) or getattr(model, "names", {})
    model.eval()
    try:
        with torch.no_grad():
            model(*ULTRALYTICS.example_inputs(model))
    except Exception as e:
        raise YoloPruneError(
            f"{path}: the rebuilt model does not run ({first_line(e)}): {ARCHITECTURE} "
            "and the weights do not describe a working model. Was the folder edited? Save it again."
        ) from e
    return SafeModel(model, dict(doc.get("train_args") or {}), doc.get("yoloprune"))


def _bad(path: Path, what: str) -> YoloPruneError:
    return YoloPruneError(
        f"{path / ARCHITECTURE} is not a valid yoloprune safe architecture: {what}. Save the model again "
        "in the safe format."
    )


def _read_architecture(path: Path) -> dict[str, Any]:
    if not (path / ARCHITECTURE).is_file():
        raise YoloPruneError(
            f"{path} is not a yoloprune safe folder: it has no {ARCHITECTURE}. Pass a folder saved in the "
            "safe format."
        )
    try:
        doc = yaml.safe_load((path / ARCHITECTURE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise _bad(path, f"it cannot be read as YAML ({first_line(e)})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _bad(path, f"it has no 'format: {FORMAT}' entry")
    if doc.get("version") != VERSION:
        raise _bad(path, f"version {doc.get('version')!r}; this yoloprune reads version {VERSION}")
    expected = {"model_class": str, "model_yaml": dict, "layers": dict, "tensors": dict}
    for key, kind in expected.items():
        if not isinstance(doc.get(key), kind):
            raise _bad(path, f"{key!r} is missing or not a {kind.__name__}")
    for key in ("names", "train_args"):
        if not isinstance(doc.get(key) or {}, dict):
            raise _bad(path, f"{key!r} is not a mapping")
    return doc


def _build(path: Path, doc: dict[str, Any]) -> nn.Module:
    """The model built from the recorded model YAML at its original widths, after checking that the YAML
    names only layers and a literal activation."""
    cls = MODEL_CLASSES.get(doc["model_class"])
    if cls is None:
        raise _bad(path, f"model class {doc['model_class']!r} is not one of {', '.join(MODEL_CLASSES)}")
    cfg = deepcopy(doc["model_yaml"])
    rows = [*(cfg.get("backbone") or []), *(cfg.get("head") or [])]
    if not rows or not all(isinstance(r, list) and len(r) == 4 for r in rows):
        raise _bad(path, "model_yaml needs 'backbone' and 'head' lists of [from, repeats, module, args] rows")
    for row in rows:
        _check_layer_name(path, row[2])
    act = _activation(path, cfg.pop("activation", None))
    channels = cfg.get("channels", 3)
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise _bad(path, f"model_yaml channels {channels!r} is not a positive integer")
    try:
        with quiet(), _default_activation(act), torch.random.fork_rng():
            model = cls(cfg=cfg, ch=channels, nc=None, verbose=False)
    except Exception as e:
        raise _bad(path, f"model_yaml does not build ({first_line(e)})") from e
    model.yaml = deepcopy(doc["model_yaml"])  # as recorded, activation included
    return model


def _check_layer_name(path: Path, name: object) -> None:
    """Refuse a YAML module name that is not a layer class: Ultralytics' builder calls whatever it names."""
    if isinstance(name, str) and name.startswith("nn."):
        found, origin = getattr(nn, name[3:], None), "torch.nn"
    elif isinstance(name, str) and name.startswith("torchvision.ops."):
        found, origin = getattr(torchvision.ops, name[16:], None), "torchvision.ops"
    else:
        found, origin = (
            getattr(tasks, name, None) if isinstance(name, str) else None,
            "ultralytics.nn.modules",
        )
    ok = isinstance(found, type) and issubclass(found, nn.Module) and found.__module__.startswith(origin)
    if not ok or name in _REFUSED_LAYERS:
        raise _bad(
            path, f"model_yaml names {name!r}, which is not an Ultralytics or torch.nn layer it may build"
        )


def _activation(path: Path, spec: object) -> nn.Module | None:
    """The module an `activation: nn.SiLU()`-style spec names, parsed without evaluating it."""
    if spec is None:
        return None
    try:
        call = ast.parse(str(spec).strip(), mode="eval").body
        func = ast.unparse(call.func) if isinstance(call, ast.Call) else ""
        name = func.removeprefix("torch.").removeprefix("nn.")
        cls = getattr(nn, name, None) if func in (f"nn.{name}", f"torch.nn.{name}") else None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError("not a torch.nn class")
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
        return cls(*args, **kwargs)
    except (SyntaxError, ValueError, TypeError) as e:
        raise _bad(path, f"activation {spec!r} is not a torch.nn layer with literal arguments ({e})") from e


@contextlib.contextmanager
def _default_activation(act: nn.Module | None) -> Iterator[None]:
    """Build Ultralytics `Conv` layers with `act`, as its builder does for a YAML's `activation`."""
    saved = Conv.default_act
    if act is not None:
        Conv.default_act = act
    try:
        yield
    finally:
        Conv.default_act = saved


def _resize(path: Path, model: nn.Module, doc: dict[str, Any]) -> None:
    """Give every layer the recorded widths and every tensor the recorded shape (contents left empty)."""
    modules = dict(model.named_modules())
    for name, attrs in doc["layers"].items():
        module = modules.get(name)
        if module is None or not isinstance(attrs, dict) or set(attrs) != set(width_attributes(module)):
            raise _bad(path, f"layer {name!r} does not match the model its YAML builds")
        for attr, value in attrs.items():
            if not isinstance(value, int) or value < 1:
                raise _bad(path, f"layer {name!r} has {attr} {value!r}, not a positive integer")
            setattr(module, attr, value)
    state = model.state_dict()
    if set(doc["tensors"]) != set(state):
        odd = sorted(set(doc["tensors"]) ^ set(state))[:5]
        raise _bad(path, f"its tensors do not match the model its YAML builds (e.g. {', '.join(odd)})")
    for key, shape in doc["tensors"].items():
        if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise _bad(path, f"tensor {key!r} has shape {shape!r}")
        owner, _, local = key.rpartition(".")
        module = modules[owner]
        current = getattr(module, local)
        if list(current.shape) != shape:
            empty = torch.empty(shape, dtype=current.dtype)
            if local in module._parameters:
                module._parameters[local] = nn.Parameter(empty, current.requires_grad)
            else:
                module._buffers[local] = empty


def _load_weights(path: Path, model: nn.Module, doc: dict[str, Any]) -> None:
    file = path / WEIGHTS
    try:
        tensors = load_file(str(file))
    except (OSError, SafetensorError) as e:
        raise YoloPruneError(
            f"Cannot read the weights {file}: {first_line(e)}. The file is missing, "
            "truncated or not a safetensors file; save the model again."
        ) from e
    state = model.state_dict()
    for key, shape in doc["tensors"].items():
        t = tensors.get(key)
        if t is None:
            raise YoloPruneError(
                f"{file} has no tensor {key!r}, which {ARCHITECTURE} lists; save the model again."
            )
        if list(t.shape) != shape or t.dtype != state[key].dtype:
            raise YoloPruneError(
                f"{file}: tensor {key!r} is {t.dtype} of shape {list(t.shape)}, but {ARCHITECTURE} says "
                f"{state[key].dtype} of shape {shape}. The two files do not belong together; save the model "
                "again."
            )
    extra = sorted(set(tensors) - set(doc["tensors"]))
    if extra:
        raise YoloPruneError(f"{file} holds tensors {ARCHITECTURE} does not list: {', '.join(extra[:5])}.")
    model.load_state_dict(tensors, strict=True)
    for name, module in model.named_modules():
        implied = implied_widths(module)
        if implied and implied != width_attributes(module):
            raise _bad(
                path, f"layer {name!r} has widths {width_attributes(module)}, its tensors imply {implied}"
            )
