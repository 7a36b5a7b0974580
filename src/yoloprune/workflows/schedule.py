"""Run a pruning schedule (oneshot, iterative, layerwise) with fine-tuning between steps, resumably.

A run folder holds:
    recipe.yaml        the recipe, every field explicit (running it again repeats the run)
    state.json         the completed steps, rewritten atomically after each; `resume=True` reads it
    steps/stepK.pt     step K's model after its fine-tune (.pruned.pt before it, .plan.json its plan)
    train/stepK/       Ultralytics' training folder of step K (results.csv, weights/)
    history.json .csv .png, final.pt (the result, written when the run finishes)

Step 0 measures the baseline; every pruning step prunes the result of the previous accepted step;
an optional last step only fine-tunes. A step counts once its checkpoint and then the state file
are written, so a run killed at any moment resumes at the first step not recorded, and that step
starts over from its input checkpoint.

The result (final.pt) is always the last accepted step, so a run never ends with a model worse than
one it already had: a pruning step that falls more than `max_drop` below the baseline stops the
pruning (the target is not reached, and the run says so), and a fine-tune-only step that lowers its
input's mAP50-95 is not kept. When no pruning step was kept, the final fine-tune is skipped and the
result is the unpruned baseline.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yoloprune.atomic import atomic_write
from yoloprune.errors import OptionError, YoloPruneError, prefixed, unmarked
from yoloprune.importance import NEEDS
from yoloprune.pruning.count import count_flops, count_params
from yoloprune.pruning.options import AMOUNT, Metric, latency_goal
from yoloprune.text import plural
from yoloprune.workflows.distill import check_teacher
from yoloprune.workflows.finetune import check_data, conv_widths, finetune, training_args
from yoloprune.workflows.history import write_history
from yoloprune.workflows.recipe import (
    Recipe,
    Schedule,
    check_new_folder,
    check_same,
    check_state_belongs,
    load_recipe,
)
from yoloprune.workflows.steps import Step, step_depth, steps_of
from yoloprune.yolo import adapter, api
from yoloprune.yolo.check import num_classes
from yoloprune.yolo.inventory import short_type
from yoloprune.yolo.io import load_model, save_checkpoint
from yoloprune.yolo.trainer import TASKS
from yoloprune.yolo.transfer import rebuild_class_outputs
from yoloprune.yolo.validate import evaluate

STATE_VERSION = 1
Log = Callable[[str], None]
# Ultralytics' arguments for a fine-tune that another fine-tune of the run follows, unless `train:` sets
# them: no learning-rate warm-up (by default at least 100 iterations from zero, most of a short step).
# The run's last fine-tune keeps Ultralytics' defaults. Decisions, section 11.
CONTINUED = {"warmup_epochs": 0}


@dataclass(frozen=True)
class RunResult:
    """A finished (or stopped) run: its folder, result checkpoint and history rows."""

    folder: Path
    final: Path
    history: list[dict[str, Any]]
    stopped: str | None  # why the run stopped pruning before its target (max_drop), if it did

    @property
    def target_reached(self) -> bool:
        """Whether every pruning step of the recipe was kept (False: `stopped` says why not)."""
        return self.stopped is None


def run(
    recipe: Recipe | None,
    folder: str | os.PathLike[str],
    *,
    resume: bool = False,
    log: Log = print,
    verbose: bool = False,
    checked: int | None = None,
) -> RunResult:
    """Run `recipe` into the new folder `folder`, or continue the run there (`resume=True`).

    Everything that can be checked is checked before any training: the model, the dataset (both
    splits labelled, the class count), the training arguments, the teacher, and every pruning step
    (dry run on the baseline's weights, which catches an unreachable target). A caller that has
    already checked `recipe` passes the image size `check_recipe` returned as `checked`. Progress goes
    to `log`; `verbose` also shows Ultralytics' own training output.

    Example:
        >>> result = run(load_recipe("recipe.yaml"), "runs/prune1")  # doctest: +SKIP
        >>> result.final, result.history[-1]["map50_95"]  # doctest: +SKIP
        (PosixPath('runs/prune1/final.pt'), 0.41)
    """
    folder = Path(folder)
    recipe, state = _resume(recipe, folder) if resume else _start(recipe, folder, log, checked)
    steps = steps_of(recipe)
    n = len(steps) - 1
    last = max((s.index for s in steps if s.epochs), default=0)  # the run's last fine-tune
    if state["finished"]:
        log(f"{folder} is already finished ({plural(n, 'step')}); nothing to do.")
    else:
        done = {row["step"] for row in state["steps"]}
        if done:
            log(f"Resuming {folder} after step {max(done)} of {n}.")
        for step in steps:
            if step.index in done or (state["stopped"] and step.kind == "prune"):
                continue
            if state["stopped"] and state["result"] == state["steps"][0]["checkpoint"]:
                log(
                    f"[step {step.index}/{n}] {step.what}: skipped (no pruning step was kept, and fine-tuning"
                    " the unpruned baseline is not what the recipe asks for)"
                )
                continue
            then = "; fine-tune " if step.kind == "prune" else ", "
            log(f"[step {step.index}/{n}] {step.what}" + (then + _epochs(step.epochs) if step.epochs else ""))
            row = _do_step(step, recipe, folder, state, log, verbose, continued=step.index < last)
            state["steps"].append(row)
            if row["accepted"]:
                state["result"] = row["checkpoint"]
            elif step.kind == "prune":
                state["stopped"] = (
                    f"step {step.index} lost {state['steps'][0]['map50_95'] - row['map50_95']:.3f} mAP50-95, "
                    f"more than max_drop {recipe.max_drop}"
                )
                log(f"    stopped: {state['stopped']}; no further pruning")
            else:
                kept = _kept(state)
                log(
                    f"    not kept: the fine-tune lowered mAP50-95 from {kept['map50_95']:.3f} to "
                    f"{row['map50_95']:.3f}; final.pt is step {kept['step']}"
                )
            _save_state(folder, state)
            write_history(folder, state["steps"], recipe.as_dict())
        final = folder / "final.pt"
        atomic_write(final, lambda tmp: shutil.copyfile(folder / state["result"], tmp))
        state["finished"] = True
        state["target_reached"] = state["stopped"] is None
        _save_state(folder, state)
        outcome = {
            "result": state["result"],
            "target_reached": state["target_reached"],
            "stopped": state["stopped"],
        }
        write_history(folder, state["steps"], recipe.as_dict(), outcome)
    if state["stopped"]:
        kept = _kept(state)
        what = "the unpruned baseline" if kept["step"] == 0 else "the last step kept"
        log(f"target not reached: {state['stopped']}; final.pt is step {kept['step']}, {what}.")
    return RunResult(folder, folder / "final.pt", state["steps"], state["stopped"])


def _kept(state: dict[str, Any]) -> dict[str, Any]:
    """The history row of the run's current result (its last accepted step)."""
    return next(row for row in state["steps"] if row["checkpoint"] == state["result"])


def finished(folder: str | os.PathLike[str]) -> bool | None:
    """Whether the run in `folder` has finished; None when no run was started there (no state.json).
    An unreadable state file counts as unfinished, so `run(resume=True)` explains it.

    Example:
        >>> finished("runs/never-started") is None
        True
    """
    path = Path(folder) / "state.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("finished") is True
    except (OSError, ValueError, AttributeError):
        return False


def _epochs(n: int) -> str:
    return plural(n, "epoch")


def _start(
    recipe: Recipe | None, folder: Path, log: Log, checked: int | None
) -> tuple[Recipe, dict[str, Any]]:
    recipe = check_new_folder(recipe, folder, "state.json", "run")
    imgsz = check_recipe(recipe, log) if checked is None else checked
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "steps").mkdir()
    recipe.save(folder / "recipe.yaml")
    state = {
        "version": STATE_VERSION,
        "recipe_sha256": recipe.sha256(),
        "imgsz": imgsz,
        "steps": [],
        "result": None,
        "stopped": None,
        "finished": False,
    }
    _save_state(folder, state)
    return recipe, state


def _resume(recipe: Recipe | None, folder: Path) -> tuple[Recipe, dict[str, Any]]:
    path = folder / "state.json"
    if not path.exists():
        raise OptionError(
            f"Nothing to resume: {unmarked(str(folder))} has no state.json. Start the run without "
            "`resume=True`."
        )
    saved = load_recipe(folder / "recipe.yaml")
    check_same(recipe, saved, folder, "run")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise YoloPruneError(f"Cannot read {path}: {e}. The run cannot be resumed; start it again.") from e
    check_state_belongs(path, state, STATE_VERSION, "run")
    return saved, state


def _save_state(folder: Path, state: dict[str, Any]) -> None:
    text = json.dumps(state, indent=1)
    atomic_write(folder / "state.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_recipe(recipe: Recipe, log: Log = print) -> int:
    """Check everything about `recipe` that can go wrong before training; return the image size.

    Example:
        >>> from yoloprune.workflows.recipe import recipe_from_dict
        >>> r = recipe_from_dict({"version": 1, "schedule": "oneshot", "model": "best.pt",
        ...                       "data": "digits/data.yaml", "ratio": 0.5, "train": {"imgsz": 64}})
        >>> check_recipe(r, log=lambda line: None)
        64
    """
    loaded = load_model(recipe.model)
    if loaded.task not in TASKS:
        raise YoloPruneError(
            f"runs support {', '.join(TASKS)} models; {recipe.model} is a {loaded.task} model."
        )
    names = check_data(recipe.data, loaded.task, loaded.model)
    training_args(Path(recipe.model), recipe.data, 1, loaded.task, recipe.train)
    student = loaded.model
    if len(names) != num_classes(student):  # the run's first fine-tune gives the model the data's classes
        if not any(step.epochs for step in steps_of(recipe)):
            raise OptionError(
                f"`data={unmarked(recipe.data)!r}`: its class count ({len(names)}) differs from the one "
                f"{unmarked(recipe.model)} predicts ({num_classes(student)}), and the recipe never "
                "fine-tunes (`epochs=0`, `final_epochs=0`), so its result could not predict the dataset's "
                "classes. Set `epochs` or `final_epochs` (the first fine-tune rebuilds the class outputs), "
                "or use the dataset the model was trained on."
            )
        student = copy.deepcopy(student)
        rebuilt = rebuild_class_outputs(student, names, remap=recipe.train.get("cls_remap", True))
        log(
            f"Class counts differ (the dataset {rebuilt.now}, the model {rebuilt.was}): the first fine-tune "
            f"rebuilds the class outputs ({', '.join(rebuilt.layers)}); step 0 scores the baseline's own "
            "classes."
        )
    if recipe.teacher is not None:
        check_teacher(recipe.teacher, student, loaded.task)
    size = recipe.train.get("imgsz") or ((loaded.ckpt or {}).get("train_args") or {}).get("imgsz") or 640
    imgsz = int(size[0] if isinstance(size, (list, tuple)) else size)
    with tempfile.TemporaryDirectory(prefix="yoloprune-dry-run-") as tmp:
        source = save_checkpoint(loaded.model, Path(tmp) / "step0.pt", source_ckpt=loaded.ckpt)
        first = last = _costs(loaded.model, imgsz)
        done = 1.0
        for step in steps_of(recipe):
            if step.kind == "prune":
                result = _prune(step, source, recipe, first, last, done)
                if result is not None:
                    source = result.save(Path(tmp) / f"step{step.index}.pt")
                    last = _costs(result.model, imgsz)
                    done *= _latency_fraction(result) or 1.0
    log(
        f"Checked before training: the model, the dataset, the training arguments and every pruning step "
        f"(dry run: params {first[0]:,} -> {last[0]:,}, FLOPs {first[1] / 1e9:.3g} G -> "
        f"{last[1] / 1e9:.3g} G at {imgsz}x{imgsz})."
    )
    return imgsz


def _costs(model: nn.Module, imgsz: int) -> tuple[int, int]:
    """(params, FLOPs at imgsz x imgsz)."""
    return count_params(model), count_flops(model, (torch.zeros(1, 3, imgsz, imgsz),))


def _latency_fraction(result: api.PruneResult) -> float | None:
    """The measured latency of a latency-target prune over its source's; None for other prunes."""
    budget = result.plan.budget
    return budget.reached if budget is not None and budget.metric is Metric.LATENCY else None


def _prune(
    step: Step,
    source: Path,
    recipe: Recipe,
    first: tuple[int, int],
    now: tuple[int, int],
    done: float = 1.0,
) -> api.PruneResult | None:
    """Prune `source` as `step` says; None when a target step finds the target already met. `done`:
    the measured latency of `source` over the original's (the earlier latency steps' product)."""
    amount: dict[str, Any] = {k: None for k in AMOUNT} | {"ratio": step.ratio}
    if step.latency is not None:  # a fraction of the original's latency; prune takes one of the current
        goal = latency_goal(step.latency)
        if goal.relative and goal.value / done >= 0.999:
            return None
        amount.update(
            {"ratio": None, "target_latency": f"{goal.value / done:.6g}x" if goal.relative else goal.value}
        )
    if step.keep is not None:  # the target is a fraction of the original; prune takes one of the current
        metric = recipe.options.target[0]
        which = 1 if metric is Metric.FLOPS else 0
        fraction = step.keep * first[which] / now[which]
        if fraction >= 0.999:
            return None
        amount.update({"ratio": None, f"target_{metric.value}": fraction})
    depth = recipe.options.depth
    if recipe.schedule is not Schedule.LAYERWISE:  # a layerwise step's depth is its own scope's
        depth = step_depth(depth, step.index, recipe.steps)
    options = replace(recipe.options, **amount, blocks=step.blocks, layers=step.layers, depth=depth)
    needs_data = bool(NEEDS.get(options.importance)) or options.int8  # INT8 calibrates on the data
    try:
        return api.prune(str(source), options, data=recipe.data if needs_data else None)
    except YoloPruneError as e:
        raise prefixed(f"step {step.index} ({step.what}): ", e) from e


def _do_step(
    step: Step, recipe: Recipe, folder: Path, state: dict[str, Any], log: Log, verbose: bool, continued: bool
) -> dict:
    """Run one step; return its history row once its checkpoint is written. `continued`: a later step
    fine-tunes again (this one trains with `CONTINUED` under the recipe's arguments)."""
    start = time.monotonic()
    k, imgsz = step.index, state["imgsz"]
    steps = folder / "steps"
    checkpoint = steps / f"step{k}.pt"
    before, latency = None, None
    if step.kind == "baseline":
        loaded = load_model(recipe.model)
        log(f"    source  {recipe.model}")
        save_checkpoint(loaded.model, checkpoint, meta={"step": 0}, source_ckpt=loaded.ckpt)
        trained = checkpoint
    else:
        source = folder / state["result"]
        before = load_model(source).model
        trained = source
        if step.kind == "prune":
            rows = state["steps"]
            done = math.prod(row.get("latency", 1.0) for row in rows)  # measured, over the original's
            first = (rows[0]["params"], rows[0]["flops"])
            result = _prune(step, source, recipe, first, _costs(before, imgsz), done)
            if result is None:
                log("    target already met; nothing pruned")
            else:
                latency = _latency_fraction(result)
                trained = result.save(steps / f"step{k}.pruned.pt")
                text = result.plan_json()
                atomic_write(steps / f"step{k}.plan.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
        if step.epochs:
            shutil.rmtree(folder / "train" / f"step{k}", ignore_errors=True)  # a killed attempt's leftovers
            tuned = finetune(
                trained,
                recipe.data,
                step.epochs,
                teacher=recipe.teacher,
                distill_weight=recipe.distill_weight,
                verbose=verbose,
                log=lambda line: log(f"    {line}"),
                **{"seed": recipe.options.seed, **(CONTINUED if continued else {}), **recipe.train},
                project=str(folder.resolve() / "train"),
                name=f"step{k}",
                exist_ok=True,
            )
            trained = tuned.best
        atomic_write(checkpoint, lambda tmp: shutil.copyfile(trained, tmp))
    model = load_model(checkpoint).model
    batch = recipe.train.get("batch")
    metrics = evaluate(
        checkpoint,
        recipe.data,
        imgsz=imgsz,
        batch=batch if isinstance(batch, int) and batch > 0 else 16,
        device=recipe.train.get("device"),
    )
    params, flops = _costs(model, imgsz)
    if before is not None and step.kind == "prune":
        log(
            textwrap.fill(
                _changed_widths(before, model), 110, initial_indent="    widths  ", subsequent_indent=" " * 12
            )
        )
    if step.kind == "prune":  # within max_drop of the baseline
        drop = state["steps"][0]["map50_95"] - metrics.map50_95
        accepted = recipe.max_drop is None or drop <= recipe.max_drop
    else:  # the baseline; a fine-tune only step must not lower its input's mAP50-95
        accepted = step.kind == "baseline" or metrics.map50_95 >= _kept(state)["map50_95"]
    seconds = round(time.monotonic() - start, 1)
    log(
        f"    mAP50-95 {metrics.map50_95:.3f}  mAP50 {metrics.map50:.3f}  P {metrics.precision:.3f}  "
        f"R {metrics.recall:.3f}  params {params:,}  FLOPs {flops / 1e9:.3g} G  ({seconds:g} s)"
    )
    return {
        "step": k,
        "kind": step.kind,
        "what": step.what,
        "epochs": step.epochs,
        "params": params,
        "flops": flops,
        "imgsz": imgsz,
        "map50_95": metrics.map50_95,
        "map50": metrics.map50,
        "precision": metrics.precision,
        "recall": metrics.recall,
        "accepted": accepted,
        "checkpoint": str(checkpoint.relative_to(folder)),
        "seconds": seconds,
        "widths": conv_widths(model),
        **({} if latency is None else {"latency": latency}),  # measured, over its source's
    }


def _changed_widths(before: nn.Module, after: nn.Module) -> str:
    """The blocks whose conv channels (summed over the block) changed: "block 2 (C2f) 80->40, ..."."""
    old, new = conv_widths(before), conv_widths(after)
    parts = []
    for i, block in enumerate(adapter.blocks(after)):
        prefix = f"{adapter.block_path(i)}."
        a = sum(w for p, w in old.items() if p.startswith(prefix))
        b = sum(w for p, w in new.items() if p.startswith(prefix))
        if a != b:
            parts.append(f"block {i} ({short_type(block)}) {a}->{b}")
    return ", ".join(parts) or "unchanged"
