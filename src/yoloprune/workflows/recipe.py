"""Recipes: what a run (`schedule.run`) does, as a small versioned, validated, frozen document.

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

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from yoloprune.declare import Spec, check, checked, option, refuse_unknown, spec_of
from yoloprune.errors import OptionError, YoloPruneError, plain, unmarked
from yoloprune.pruning.options import AMOUNT, AUTO, PruneOptions

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


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A validated run description: the run's own fields, and the `PruneOptions` every pruning step
    starts from (`options`). Build it with `load_recipe` or `recipe_from_dict`, which read the flat YAML
    (the keys of `PruneOptions` beside the run's own; the run's `layers` is the layerwise list, so a
    recipe's `options.layers` is always None).

    Example:
        >>> r = recipe_from_dict({"version": 1, "schedule": "oneshot", "model": "best.pt",
        ...                       "data": "digits/data.yaml", "target_flops": 0.5, "epochs": 10})
        >>> r.schedule, r.options.target_flops, r.steps
        (<Schedule.ONESHOT: 'oneshot'>, 0.5, 1)
    """

    version: int = option(RECIPE_VERSION, help="the recipe format's version")
    schedule: Schedule = option(help="how the run reaches its target")
    model: str = option(help="the trained, unpruned model", metavar="BASELINE.pt")
    data: str = option(help="dataset YAML for fine-tuning and validation", metavar="DATA.yaml")
    options: PruneOptions = option(
        help="how each pruning step chooses channels", default_factory=PruneOptions
    )
    steps: int = option(1, help="iterative: steps to reach the target", within="[1, inf)", metavar="N")
    layers: tuple[LayerStep, ...] = option(
        (), help="layerwise: blocks or layers, in order", metavar="I|PATH[:R]"
    )
    epochs: int = option(
        0,
        help="fine-tune epochs after each pruning step",
        within="[0, inf)",
        why="0 skips that fine-tune",
        metavar="E",
    )
    final_epochs: int = option(
        0, help="fine-tune epochs at the end", within="[0, inf)", why="0 skips that fine-tune", metavar="F"
    )
    max_drop: float | None = option(
        None, help="iterative: stop when mAP50-95 falls more below the baseline", metavar="D"
    )
    teacher: str | None = option(None, help="distill the head outputs of this model", metavar="ORIGINAL.pt")
    distill_weight: float = option(
        1.0, help="distillation weight", within="(0, inf)", why="e.g. 1.0", metavar="W"
    )
    train: dict[str, Any] = option(
        help="Ultralytics training arguments for every fine-tune", default_factory=dict, hash=False
    )

    def __post_init__(self) -> None:
        check(self)
        _check(self)

    def as_dict(self) -> dict[str, Any]:
        """Plain data, every field explicit, flat as in the YAML (what `save` writes and `sha256`
        hashes; `recipe_from_dict` reads it back equal)."""
        doc: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "options":
                doc.update({k: v for k, v in value.to_json().items() if k not in OWN})
            elif f.name == "layers":
                doc["layers"] = [{k: v for k, v in vars(s).items() if v is not None} for s in value]
            else:
                doc[f.name] = value.value if isinstance(value, Enum) else value
        return doc

    def sha256(self) -> str:
        return _sha256(self.as_dict())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the recipe as YAML, atomically."""
        from yoloprune.atomic import atomic_write

        text = "# yoloprune recipe (every field explicit; paths absolute)\n" + yaml.safe_dump(
            self.as_dict(), sort_keys=False, default_flow_style=None, width=100
        )
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def step_options(self, ratio: float | str | None = None, **scope: Any) -> PruneOptions:
        """The options of one pruning step: this recipe's, with the step's `ratio` when given, and
        its `blocks` / `layers` (`scope`) when given."""
        amount = {} if ratio is None else {k: ratio if k == "ratio" else None for k in AMOUNT}
        return replace(self.options, **amount, **scope)


OWN = frozenset(f.name for f in dataclasses.fields(Recipe)) - {"options"}  # the run's own keys
OPTION_KEYS = frozenset(f.name for f in dataclasses.fields(PruneOptions)) - OWN  # read into options
KEYS = OWN | OPTION_KEYS


def _sha256(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def saved_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of the recipe saved at `path` as its file holds it: what `Recipe.sha256` gave when it
    was saved, by this or an earlier yoloprune (a run's state records it)."""
    return _sha256(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


def check_new_folder(recipe: Recipe | None, folder: Path, state_file: str, kind: str) -> Recipe:
    """The recipe of a new `kind` ("run", "comparison") in `folder`: refuse a missing recipe, a folder
    that already holds one (resume it instead) and a folder with other files in it."""
    if recipe is None:
        raise OptionError(f"Give a `recipe` to start a {kind}, or `resume=True` to continue one.")
    if (folder / state_file).exists():
        raise OptionError(
            f"{unmarked(str(folder))} already holds a {kind}; pass `resume=True` to continue it, or "
            "choose another folder as `folder`."
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OptionError(
            f"`folder={unmarked(str(folder))!r}` exists and is not an empty folder; choose a new folder "
            f"for the {kind}."
        )
    return recipe


def check_state_belongs(path: Path, state: dict, version: int, kind: str) -> None:
    """Refuse a resumed `kind` ("run", "comparison") whose state file `path` was not written for the
    recipe saved beside it, or by another state `version`."""
    recipe = path.parent / "recipe.yaml"
    if state.get("version") != version or state.get("recipe_sha256") != saved_sha256(recipe):
        raise YoloPruneError(
            f"{path} does not belong to {recipe} (was the recipe edited?); restore it or start a new "
            f"{kind} in another folder."
        )


def yaml_words(name: str, value: str | None) -> str:
    """How a recipe file names a field: `max_ratio: 0.5`, or the key alone (see `OptionError.worded`)."""
    return name if value is None else f"{name}: {plain(value)}"


def check_same(recipe: Recipe | None, saved: Recipe, folder: Path, kind: str) -> None:
    """Refuse to resume the `kind` ("run", "comparison") in `folder`, started with `saved`, with another
    `recipe` (None: resume with the saved one), naming every field that differs."""
    if recipe is None or recipe.sha256() == saved.sha256():
        return
    now, then = recipe.as_dict(), saved.as_dict()
    keys = [key for key in now if now[key] != then.get(key)]
    changed = [f"{key}: {then.get(key)!r} there, {now[key]!r} here" for key in keys]
    if "round_to" in keys:
        changed.append("(`round_to: auto` is the channel block of the machine that reads the recipe)")
    raise YoloPruneError(
        f"The recipe differs from the one {folder} was started with ({folder / 'recipe.yaml'}): "
        f"{'; '.join(changed)}. Resume with the saved recipe (give none), or start a new {kind} in "
        "another folder."
    )


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe YAML; relative paths in it are relative to its folder. Errors name
    the recipe's keys (`max_ratio: 2`).

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
    except OptionError as e:
        raise YoloPruneError(f"Recipe {path}: {e.worded(yaml_words)}") from e
    except YoloPruneError as e:
        raise YoloPruneError(f"Recipe {path}: {e}") from e


def recipe_from_dict(doc: dict[str, Any], base: str | os.PathLike[str] = ".") -> Recipe:
    """Validate a recipe given as flat data (`Recipe.as_dict`'s form); relative paths are resolved
    against `base`. Errors are `OptionError`s where they name fields.

    Example:
        >>> r = recipe_from_dict({"version": 1, "schedule": "layerwise", "model": "best.pt",
        ...                       "data": "data.yaml", "ratio": 0.5, "layers": [1, "3:0.25"]})
        >>> [(s.block, s.ratio) for s in r.layers]
        [(1, 0.5), (3, 0.25)]
    """
    refuse_unknown(doc, KEYS, "recipe keys")
    if doc.get("version") != RECIPE_VERSION:
        raise YoloPruneError(
            f"version: {doc.get('version')!r}; this yoloprune reads recipe version {RECIPE_VERSION} "
            f"(put `version: {RECIPE_VERSION}` first in the recipe)."
        )
    for f in dataclasses.fields(Recipe):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and doc.get(f.name) is None:
            raise OptionError(f"`{f.name}` is required: {spec_of(f).help}.")
    own = {k: v for k, v in doc.items() if k in OWN and v is not None}
    options = {k: v for k, v in doc.items() if k in OPTION_KEYS}
    schedule = checked("schedule", own["schedule"], Schedule, Spec(""))
    amount = [k for k in AMOUNT if options.get(k) is not None]
    if schedule is not Schedule.LAYERWISE and not amount:
        raise OptionError(
            "give `ratio` or a target (`target_flops`, `target_params`, `target_latency`): how much each "
            "pruning step removes."
        )
    layers = own.get("layers", [])
    if not isinstance(layers, list):
        raise OptionError(f"`layers={layers!r}` must be a list of blocks or layer paths.")
    steps = tuple(_layer_step(entry, i, options.get("ratio")) for i, entry in enumerate(layers))
    if steps and options.get("ratio") is None:  # layerwise: the entries' ratios, the first as the default
        options["ratio"] = steps[0].ratio
    own["layers"] = steps
    recipe = Recipe(**own, options=PruneOptions.from_json(options))
    paths = {k: _absolute(getattr(recipe, k), Path(base)) for k in ("model", "data", "teacher")}
    return replace(recipe, **{k: v for k, v in paths.items() if v is not None})


def _check(r: Recipe) -> None:
    """Cross-field rules; each message names the keys to change."""
    controlled = sorted(set(r.train) & set(RUN_CONTROLLED))
    if controlled:
        raise OptionError(
            f"`train`: {', '.join(controlled)} are set by the run itself (fine-tunes go to RUN/train/stepK); "
            "use `model`, `data`, `epochs` and `final_epochs` instead."
        )
    o = r.options
    targets = [f"`{k}`" for k in AMOUNT[1:] if getattr(o, k) is not None]
    if r.schedule is Schedule.LAYERWISE:
        if not r.layers:
            raise OptionError(
                "`schedule='layerwise'` needs `layers`: an ordered list of blocks or layer paths."
            )
        extra = [*targets, *["`steps`"] * (r.steps != 1), *["`max_drop`"] * (r.max_drop is not None)]
        extra += ["`blocks`"] * (o.blocks is not None)
        if extra:
            raise OptionError(
                f"`schedule='layerwise'` takes one step per entry of `layers`, each with its own ratio; "
                f"remove {', '.join(extra)} (they belong to oneshot and iterative)."
            )
        for i, step in enumerate(r.layers):
            if step.ratio is None:
                raise OptionError(
                    f"layers[{i}] ({step.label()}) has no ratio; give it one ({{block: {step.block}, ratio: "
                    "0.5}) or set a default `ratio` for every entry."
                )
            r.step_options(step.ratio)
        return
    if r.layers:
        raise OptionError(
            f"`layers` is for `schedule='layerwise'`; `schedule={r.schedule.value!r}` uses `blocks`."
        )
    if o.latency is not None and not o.latency.relative and r.steps != 1:
        raise OptionError(
            f"`target_latency={o.target_latency!r}` is milliseconds; `steps={r.steps}` steps down from the "
            "original's measured latency by the same fraction each time, so give the target as a fraction "
            "of it (e.g. `target_latency='0.5x'`), or `steps=1`."
        )
    if r.schedule is Schedule.ONESHOT and r.steps != 1:
        raise OptionError("`steps`: oneshot prunes in one step; use `schedule='iterative'` for several.")
    if r.max_drop is not None and (r.schedule is not Schedule.ITERATIVE or not 0 < r.max_drop < 1):
        raise OptionError(
            f"`max_drop={r.max_drop!r}`: an iterative schedule stops when mAP50-95 falls more than this "
            "below the baseline (a fraction in (0, 1), e.g. 0.05); oneshot and layerwise do not take it."
        )
    if o.ratio == AUTO:
        raise OptionError(
            f"`ratio='auto'` chooses widths per group; `schedule={r.schedule.value!r}` needs a number "
            "or a target."
        )


def _layer_step(entry: object, i: int, default: object = None) -> LayerStep:
    """`3`, `"3:0.5"`, `"model.2.cv1.conv:auto"` or `{block: 3, ratio: 0.5}` / `{layer: ..., ratio: ...}`;
    `default` is the ratio of an entry without one."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        entry = {"block": entry}
    if isinstance(entry, str):
        name, _, ratio = entry.rpartition(":") if ":" in entry else (entry, "", "")
        entry = {"block" if name.isdigit() else "layer": int(name) if name.isdigit() else name}
        if ratio:
            entry["ratio"] = ratio if ratio == AUTO else _number(ratio, f"layers[{i}]")
    if not isinstance(entry, dict) or set(entry) - {"block", "layer", "ratio"}:
        raise YoloPruneError(
            f"layers[{i}]: {entry!r} is not a layer step; write a block index (3), a layer path "
            "(model.2.cv1.conv), either with :RATIO, or {block: 3, ratio: 0.5}."
        )
    if ("block" in entry) == ("layer" in entry):
        raise YoloPruneError(f"layers[{i}]: {entry!r} needs exactly one of block: and layer:.")
    block, layer, ratio = entry.get("block"), entry.get("layer"), entry.get("ratio", default)
    if block is not None and (not isinstance(block, int) or isinstance(block, bool) or block < 0):
        raise YoloPruneError(f"layers[{i}]: block {block!r} must be a block index (0, 1, 2, ...).")
    if layer is not None and not isinstance(layer, str):
        raise YoloPruneError(f"layers[{i}]: layer {layer!r} must be a module path such as model.2.cv1.conv.")
    number = isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
    if ratio is not None and ratio != AUTO and not number:
        raise YoloPruneError(f"layers[{i}]: ratio {ratio!r} must be a fraction such as 0.5, or auto.")
    return LayerStep(block, layer, float(ratio) if number else ratio)


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise YoloPruneError(f"{where}: ratio {text!r} must be a fraction such as 0.5, or auto.") from None


def _absolute(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p).resolve())


def recipe_from_cli(words: list[str], flags: dict[str, Any]) -> Recipe | None:
    """The recipe of the run and compare commands: a recipe YAML among `words`, or built from `flags`
    (the recipe's keys; None: not given) plus the `key=value` training arguments among `words`; None
    when neither is given. Errors name the keys as fields (`OptionError`), for the command line to word
    as flags."""
    from yoloprune.workflows.finetune import parse_train_args

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
            names = [f"`{k}`" for k in given] + list(train)
            raise OptionError(
                f"give a recipe or flags, not both: {paths[0]} already says what {', '.join(names)} would; "
                "edit the recipe instead."
            )
        return load_recipe(paths[0])
    if not given and not train:
        return None
    return recipe_from_dict({"version": RECIPE_VERSION, **given, **({"train": train} if train else {})})
