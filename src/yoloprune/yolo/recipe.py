"""Recipes: what a `yoloprune run` does, as a small versioned, validated, frozen document.

A recipe is a flat YAML mapping (`Recipe`'s fields). It is checked completely when it is read
(unknown keys, types, ranges, combinations), and `save` writes every field explicitly with paths
made absolute, so the copy saved beside a run's results repeats it exactly. `sha256` identifies a
recipe for resuming. `round_to: auto` is resolved when the recipe is read (16 with AVX-512F, else 8),
so the saved copy holds the number and every step of a run, resumed ones too, rounds alike.

    version: 1
    schedule: layerwise            # oneshot | iterative | layerwise
    model: runs/detect/train/weights/best.pt
    data: digits/data.yaml
    ratio: 0.5                     # layerwise: the default ratio of each entry
    layers: [1, 3, {block: 5, ratio: 0.25}, {layer: model.7.conv, ratio: auto}]
    epochs: 5                      # fine-tune epochs after every pruning step
    final_epochs: 20               # one more fine-tune at the end
    train: {imgsz: 96, batch: 16}  # Ultralytics training arguments for every fine-tune
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from yoloprune.errors import YoloPruneError
from yoloprune.pruning.options import AUTO, PruneOptions, resolve_round_to

RECIPE_VERSION = 1
# Training arguments a run sets for each fine-tune itself.
RUN_CONTROLLED = ("model", "data", "epochs", "task", "mode", "project", "name", "exist_ok", "resume")


class Schedule(str, Enum):
    """How a run reaches its target."""

    ONESHOT = "oneshot"  # prune to the target, fine-tune
    ITERATIVE = "iterative"  # reach the target in `steps` steps, fine-tuning between them
    LAYERWISE = "layerwise"  # prune the listed blocks or layers one at a time, fine-tuning between them


@dataclass(frozen=True)
class LayerStep:
    """One layerwise step: block `block` (all groups its convs produce) or the group of conv `layer`,
    losing `ratio` of its channels (a fraction, or "auto" for the act-* criteria)."""

    block: int | None = None
    layer: str | None = None
    ratio: float | str | None = None

    def label(self) -> str:
        return f"block {self.block}" if self.block is not None else self.layer or "?"


@dataclass(frozen=True)
class Recipe:
    """A validated run description; build it with `load_recipe` or `recipe_from_dict`.

    Example:
        >>> r = recipe_from_dict({"version": 1, "schedule": "oneshot", "model": "best.pt",
        ...                       "data": "digits/data.yaml", "target_flops": 0.5, "epochs": 10})
        >>> r.schedule, r.target_flops, r.steps
        (<Schedule.ONESHOT: 'oneshot'>, 0.5, 1)
    """

    schedule: Schedule
    model: str
    data: str
    ratio: float | str | None = None
    target_flops: float | None = None
    target_params: float | None = None
    steps: int = 1
    layers: tuple[LayerStep, ...] = ()
    epochs: int = 0
    final_epochs: int = 0
    max_drop: float | None = None
    blocks: tuple[int, ...] | None = None
    exclude: tuple[str, ...] = ()
    importance: str = "l1"
    allocation: str = "local"
    aggregation: str = "mean"
    round_to: int = 1  # `round_to: auto` in YAML is resolved on reading
    max_ratio: float = 0.9
    min_channels: int = 1
    calib_images: int = 64
    teacher: str | None = None
    distill_weight: float = 1.0
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict, hash=False)
    version: int = RECIPE_VERSION

    def as_dict(self) -> dict[str, Any]:
        """Plain data, every field explicit (what `save` writes and `sha256` hashes)."""
        doc = asdict(self)
        doc["schedule"] = self.schedule.value
        doc["layers"] = [{k: v for k, v in asdict(s).items() if v is not None} for s in self.layers]
        doc["blocks"] = None if self.blocks is None else list(self.blocks)
        doc["exclude"] = list(self.exclude)
        return {"version": doc.pop("version"), **doc}

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the recipe as YAML, atomically."""
        from yoloprune._atomic import atomic_write

        text = "# yoloprune run recipe (every field explicit; paths absolute)\n" + yaml.safe_dump(
            self.as_dict(), sort_keys=False, default_flow_style=None, width=100
        )
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def prune_options(self, ratio: float | str | None = None) -> PruneOptions:
        """The pruning options of one step (`ratio` or this recipe's target)."""
        target = (
            {}
            if ratio is not None
            else {"target_flops": self.target_flops, "target_params": self.target_params}
        )
        return PruneOptions(
            ratio if ratio is not None else self.ratio,
            self.importance,
            self.round_to,
            self.seed,
            exclude=self.exclude,
            allocation=self.allocation,
            max_ratio=self.max_ratio,
            min_channels=self.min_channels,
            aggregation=self.aggregation,
            **target,
        )


_FIELDS = {f.name for f in fields(Recipe)}


def check_same(recipe: Recipe | None, saved: Recipe, folder: Path, kind: str) -> None:
    """Refuse to resume the `kind` ("run", "comparison") in `folder`, started with `saved`, with another
    `recipe` (None: resume with the saved one), naming every field that differs."""
    if recipe is None or recipe.sha256() == saved.sha256():
        return
    now, then = recipe.as_dict(), saved.as_dict()
    keys = [key for key in now if now[key] != then[key]]
    changed = [f"{key}: {then[key]!r} there, {now[key]!r} here" for key in keys]
    if "round_to" in keys:
        changed.append("(`round_to: auto` is the channel block of the machine that reads the recipe)")
    raise YoloPruneError(
        f"The recipe differs from the one {folder} was started with ({folder / 'recipe.yaml'}): "
        f"{'; '.join(changed)}. Resume without a recipe or schedule flags, or start a new {kind} in "
        "another folder."
    )


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe YAML; relative paths in it are relative to its folder.

    Example:
        >>> doc = {"version": 1, "schedule": "layerwise", "model": "best.pt", "data": "digits/data.yaml",
        ...        "ratio": 0.5, "layers": [1, 3]}
        >>> _ = Path("recipe.yaml").write_text(json.dumps(doc))  # JSON is YAML
        >>> load_recipe("recipe.yaml").schedule
        <Schedule.LAYERWISE: 'layerwise'>
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise YoloPruneError(f"Cannot read recipe {path}: {e.strerror or e}.") from e
    except yaml.YAMLError as e:
        raise YoloPruneError(f"Recipe {path} is not valid YAML: {' '.join(str(e).split())}.") from e
    if not isinstance(doc, dict):
        raise YoloPruneError(
            f"Recipe {path} must be a YAML mapping of keys such as schedule:, model:, data:."
        )
    try:
        return recipe_from_dict(doc, base=path.parent)
    except YoloPruneError as e:
        raise YoloPruneError(f"Recipe {path}: {e}") from e


def recipe_from_dict(doc: dict[str, Any], base: str | os.PathLike[str] = ".") -> Recipe:
    """Validate a recipe given as plain data; relative paths are resolved against `base`.

    Example:
        >>> r = recipe_from_dict({"version": 1, "schedule": "layerwise", "model": "best.pt",
        ...                       "data": "data.yaml", "ratio": 0.5, "layers": [1, "3:0.25"]})
        >>> [(s.block, s.ratio) for s in r.layers]
        [(1, 0.5), (3, 0.25)]
    """
    unknown = [k for k in doc if k not in _FIELDS]
    if unknown:
        hints = [f"{k!r}" + _close(k, _FIELDS) for k in unknown]
        raise YoloPruneError(
            f"unknown recipe keys {', '.join(hints)}; the keys are {', '.join(sorted(_FIELDS))}."
        )
    if doc.get("version") != RECIPE_VERSION:
        raise YoloPruneError(
            f"version: {doc.get('version')!r}; this yoloprune reads recipe version {RECIPE_VERSION} "
            f"(put `version: {RECIPE_VERSION}` first in the recipe)."
        )
    for key in ("schedule", "model", "data"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise YoloPruneError(f"{key}: is required (a string); got {doc.get(key)!r}.")
    try:
        schedule = Schedule(doc["schedule"])
    except ValueError:
        raise YoloPruneError(
            f"schedule: {doc['schedule']!r} is not a schedule; choose {', '.join(s.value for s in Schedule)}."
        ) from None
    base = Path(base)
    values = dict(doc, schedule=schedule)
    values["model"] = _absolute(doc["model"], base)
    values["data"] = _absolute(doc["data"], base)
    if doc.get("teacher") is not None:
        values["teacher"] = _absolute(_typed(doc, "teacher", str), base)
    for key in ("steps", "epochs", "final_epochs", "min_channels", "calib_images", "seed"):
        if key in doc:
            _typed(doc, key, int)
    if "round_to" in doc:
        values["round_to"] = _round_to(doc["round_to"])
    for key in ("target_flops", "target_params", "max_drop", "max_ratio", "distill_weight"):
        if doc.get(key) is not None:
            values[key] = float(_typed(doc, key, (int, float)))
    for key in ("importance", "allocation", "aggregation"):
        if key in doc:
            _typed(doc, key, str)
    if doc.get("blocks") is not None:
        values["blocks"] = tuple(_typed_list(doc, "blocks", int))
    values["exclude"] = tuple(_typed_list(doc, "exclude", str)) if doc.get("exclude") is not None else ()
    values["train"] = dict(_typed(doc, "train", dict)) if doc.get("train") is not None else {}
    values["layers"] = tuple(
        _layer_step(entry, i) for i, entry in enumerate(_typed_list(doc, "layers", object))
    )
    if doc.get("ratio") is not None and doc["ratio"] != "auto":
        values["ratio"] = float(_typed(doc, "ratio", (int, float)))
    recipe = _with_default_ratio(Recipe(**values))
    _check(recipe)
    return recipe


def _check(r: Recipe) -> None:
    """Cross-field rules; each message names the keys to change."""
    for key in ("steps", "round_to", "min_channels", "calib_images"):
        if getattr(r, key) < 1:
            raise YoloPruneError(f"{key}: {getattr(r, key)} must be 1 or more.")
    for key in ("epochs", "final_epochs"):
        if getattr(r, key) < 0:
            raise YoloPruneError(f"{key}: {getattr(r, key)} must be 0 or more (0 skips that fine-tune).")
    if not 0 < r.distill_weight < float("inf"):
        raise YoloPruneError(f"distill_weight: {r.distill_weight} must be a positive number, e.g. 1.0.")
    controlled = sorted(set(r.train) & set(RUN_CONTROLLED))
    if controlled:
        raise YoloPruneError(
            f"train: {', '.join(controlled)} are set by the run itself (fine-tunes go to RUN/train/stepK); "
            "use the recipe's model:, data:, epochs: and final_epochs: instead."
        )
    targets = [k for k in ("target_flops", "target_params") if getattr(r, k) is not None]
    if r.schedule is Schedule.LAYERWISE:
        if not r.layers:
            raise YoloPruneError(
                "schedule: layerwise needs layers: an ordered list of blocks or layer paths."
            )
        if targets or r.steps != 1 or r.max_drop is not None or r.blocks is not None:
            extra = [
                *targets,
                *(["steps"] if r.steps != 1 else []),
                *(["max_drop"] * (r.max_drop is not None)),
            ]
            extra += ["blocks"] * (r.blocks is not None)
            raise YoloPruneError(
                f"schedule: layerwise takes one step per entry of layers: with its own ratio; remove "
                f"{', '.join(extra)} (they belong to oneshot and iterative)."
            )
        for i, step in enumerate(r.layers):
            if step.ratio is None:
                raise YoloPruneError(
                    f"layers[{i}] ({step.label()}) has no ratio; give it one ({{block: {step.block}, ratio: "
                    "0.5}) or set a default ratio: for every entry."
                )
            r.prune_options(step.ratio)
        return
    if r.layers:
        raise YoloPruneError(
            f"layers: is for schedule: layerwise; schedule: {r.schedule.value} uses blocks:."
        )
    if r.schedule is Schedule.ONESHOT and r.steps != 1:
        raise YoloPruneError("steps: oneshot prunes in one step; use schedule: iterative for several.")
    if r.max_drop is not None and (r.schedule is not Schedule.ITERATIVE or not 0 < r.max_drop < 1):
        raise YoloPruneError(
            f"max_drop: {r.max_drop}: an iterative schedule stops when mAP50-95 falls more than this below "
            "the baseline (a fraction in (0, 1), e.g. 0.05); oneshot and layerwise do not take it."
        )
    if r.ratio == "auto":
        raise YoloPruneError(
            f"ratio: auto chooses widths per group; schedule: {r.schedule.value} needs a number or a target."
        )
    r.prune_options()


def _layer_step(entry: object, i: int) -> LayerStep:
    """`3`, `"3:0.5"`, `"model.2.cv1.conv:auto"` or `{block: 3, ratio: 0.5}` / `{layer: ..., ratio: ...}`."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        return LayerStep(block=entry)
    if isinstance(entry, str):
        name, _, ratio = entry.rpartition(":") if ":" in entry else (entry, "", "")
        entry = {"block" if name.isdigit() else "layer": int(name) if name.isdigit() else name}
        if ratio:
            entry["ratio"] = ratio if ratio == "auto" else _number(ratio, f"layers[{i}]")
    if not isinstance(entry, dict) or set(entry) - {"block", "layer", "ratio"}:
        raise YoloPruneError(
            f"layers[{i}]: {entry!r} is not a layer step; write a block index (3), a layer path "
            "(model.2.cv1.conv), either with :RATIO, or {block: 3, ratio: 0.5}."
        )
    if ("block" in entry) == ("layer" in entry):
        raise YoloPruneError(f"layers[{i}]: {entry!r} needs exactly one of block: and layer:.")
    block, layer, ratio = entry.get("block"), entry.get("layer"), entry.get("ratio")
    if block is not None and (not isinstance(block, int) or isinstance(block, bool) or block < 0):
        raise YoloPruneError(f"layers[{i}]: block {block!r} must be a block index (0, 1, 2, ...).")
    if layer is not None and not isinstance(layer, str):
        raise YoloPruneError(f"layers[{i}]: layer {layer!r} must be a module path such as model.2.cv1.conv.")
    if ratio is not None and ratio != "auto" and not isinstance(ratio, (int, float)):
        raise YoloPruneError(f"layers[{i}]: ratio {ratio!r} must be a fraction such as 0.5, or auto.")
    return LayerStep(block, layer, float(ratio) if isinstance(ratio, (int, float)) else ratio)


def _with_default_ratio(r: Recipe) -> Recipe:
    """A layerwise recipe whose entries without a ratio take the recipe's `ratio`."""
    if r.schedule is not Schedule.LAYERWISE or r.ratio is None:
        return r
    return replace(r, layers=tuple(s if s.ratio is not None else replace(s, ratio=r.ratio) for s in r.layers))


def _round_to(value: object) -> int:
    """`round_to:` a whole number (checked for range with the rest), or auto: this machine's block."""
    if value == AUTO:
        return resolve_round_to(AUTO)
    if isinstance(value, bool) or not isinstance(value, int):
        raise YoloPruneError(f"round_to: {value!r} must be a whole number such as 8, or auto.")
    return value


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise YoloPruneError(f"{where}: ratio {text!r} must be a fraction such as 0.5, or auto.") from None


def _typed(doc: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = doc[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise YoloPruneError(f"{key}: {value!r} must be {'a mapping' if kind is dict else 'a ' + names}.")
    return value


def _typed_list(doc: dict[str, Any], key: str, kind: type) -> list[Any]:
    value = doc.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise YoloPruneError(
            f"{key}: {value!r} must be a list of {kind.__name__ if kind is not object else 'items'}."
        )
    return value


def _absolute(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p).resolve())


def _close(name: str, choices: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def recipe_from_cli(words: list[str], flags: dict[str, Any]) -> Recipe | None:
    """The recipe of `yoloprune run`: a recipe YAML among `words`, or built from `flags` (None when
    not given) plus the `key=value` training arguments among `words`; None when neither is given."""
    from yoloprune.yolo.finetune import parse_train_args

    given = {k: v for k, v in flags.items() if v is not None}
    for key in ("layers", "exclude"):  # `--layers 1 3 imgsz=96`: argparse hands the KEY=VALUE to the flag
        if key in given:
            words = [*words, *(w for w in given[key] if "=" in w)]
            given[key] = [w for w in given[key] if "=" not in w]
    paths = [w for w in words if "=" not in w]
    train = parse_train_args([w for w in words if "=" in w])
    if len(paths) > 1:
        raise YoloPruneError(f"give one recipe YAML, not {len(paths)} ({', '.join(paths)}).")
    if paths:
        if given or train:
            names = [f"--{k.replace('_', '-')}" for k in given] + list(train)
            raise YoloPruneError(
                f"give a recipe or flags, not both: {paths[0]} already says what {', '.join(names)} would; "
                "edit the recipe instead."
            )
        return load_recipe(paths[0])
    if not given and not train:
        return None
    return recipe_from_dict({"version": RECIPE_VERSION, **given, **({"train": train} if train else {})})
