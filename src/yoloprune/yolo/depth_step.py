"""Taking blocks out of an Ultralytics model: the step and its proof (`take_out`, `DepthStep`), the
repeats its YAML records for the new counts, which blocks a request removes (a `depth` fraction, a
plan's list), and what the step does to a target (`width_options`, `whole_budget`). Which modules hold
repeated blocks, and which can go, is `yoloprune.yolo.depth`'s.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.importance import NEEDS
from yoloprune.pruning.allocate import Budget
from yoloprune.pruning.count import count_flops, count_params
from yoloprune.pruning.depth import Block, remove_and_compare, renamed
from yoloprune.pruning.latency import LatencyBudget
from yoloprune.pruning.options import Metric, PruneOptions
from yoloprune.pruning.plan import plan_removed_blocks
from yoloprune.pruning.verify import Equivalence, excited
from yoloprune.text import plural
from yoloprune.yolo import adapter
from yoloprune.yolo.adapter import ULTRALYTICS, excitation_batch, model_task
from yoloprune.yolo.check import Check
from yoloprune.yolo.dataset import calibration_batches
from yoloprune.yolo.depth import Repeated, blocks_named, chain_of, ranked_blocks, repeated_blocks


def built_count(n: float, depth: float) -> int:
    """How many blocks Ultralytics' `parse_model` builds for a YAML row's repeats `n`."""
    return max(round(n * depth), 1) if n > 1 else n


def yaml_repeats(count: int, depth: float) -> float:
    """The smallest YAML repeats that `parse_model` builds as `count` blocks at depth multiple `depth`:
    a whole number where one does, else `count / depth` (a depth multiple above 1 skips some counts).

    Example:
        >>> yaml_repeats(1, 0.33), yaml_repeats(2, 0.33), yaml_repeats(0, 0.5), yaml_repeats(2, 1.33)
        (1, 5, 0, 1.503759)
    """
    for n in range(count + math.ceil(count / max(depth, 1e-9)) + 2):
        if built_count(n, depth) == count:
            return n
    n = round(count / depth, 6)
    if built_count(n, depth) != count:
        raise YoloPruneError(f"no YAML repeats give {count} blocks at depth multiple {depth}")
    return n


def _depth_multiple(doc: dict) -> float:
    scales = doc.get("scales")
    if scales:
        scale = doc.get("scale") or next(iter(scales))
        return float(scales[scale][0])
    return float(doc.get("depth_multiple", 1.0))


def record_depth(model: nn.Module, owners: Iterable[int]) -> None:
    """Write the block counts of `owners` (block indices) into `model.yaml`, as the repeats its
    `parse_model` reads (or the argument RepNCSPELAN4 and ResNetLayer take), so the YAML describes
    the model's depth. A model without a YAML dict is left as it is."""
    doc = getattr(model, "yaml", None)
    if not isinstance(doc, dict):
        return
    doc = copy.deepcopy(doc)
    rows = [*(doc.get("backbone") or []), *(doc.get("head") or [])]
    for i in sorted(set(owners)):
        module = adapter.blocks(model)[i]
        chain = chain_of(module)
        count = len(module.get_submodule(chain.lists[0]))
        row = rows[i]
        if chain.arg is None:
            row[1] = yaml_repeats(count, _depth_multiple(doc))
        else:
            row[3][chain.arg] = count
    model.yaml = doc


@dataclass(frozen=True)
class DepthStep:
    """Blocks taken out of `original`, giving `model`, with the proof: the shallower model against
    the masked original (each removed block replaced by identity) on the model's own weights
    (`equivalence`) and on signal-carrying ones (`structural`, see `verify.excite`); `check` is both,
    as the one row `prune` and `verify` report ("depth")."""

    original: nn.Module
    model: nn.Module
    removed: tuple[Repeated, ...]
    equivalence: Equivalence
    structural: Equivalence

    @property
    def paths(self) -> tuple[str, ...]:
        """Every removed block's path in the original, as a plan records them."""
        return tuple(p for r in self.removed for p in r.paths)

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(b for r in self.removed for b in r.blocks)

    @property
    def check(self) -> Check:
        own, st = self.equivalence, self.structural
        ok = own.ok and st.ok
        detail = (
            f"{plural(len(self.removed), 'block')} removed: max rel error {own.max_rel_error:.2g} on its "
            f"own weights, {st.max_rel_error:.2g} on signal-carrying weights (tolerance {own.tolerance:g})"
        )
        if not ok:
            detail += (
                ": the shallower model does not compute what the original computes with them as identity"
            )
        return Check("depth", ok, max(own.max_rel_error, st.max_rel_error), None, own.tolerance, detail)


def take_out(original: nn.Module, removed: Sequence[Repeated], seed: int = 0) -> DepthStep:
    """Remove `removed` from a copy of `original`, record the counts in its YAML, and prove it.

    Example:
        >>> from yoloprune.yolo.io import load_model
        >>> model = load_model("yolov8n.yaml").model
        >>> step = take_out(model, [r for r in repeated_blocks(model) if r.path == "model.4.m.1"])
        >>> len(step.model.model[4].m), step.check.ok
        (1, True)
    """
    blocks = [b for r in removed for b in r.blocks]
    inputs = ULTRALYTICS.example_inputs(original, seed=seed)
    shallower, own = remove_and_compare(original, blocks, inputs, ULTRALYTICS, measure_signal=True, own=True)
    with excited(original, excitation_batch(original, seed), seed):
        _, structural = remove_and_compare(original, blocks, inputs, ULTRALYTICS)
    record_depth(shallower, (r.owner for r in removed))
    return DepthStep(original, shallower, tuple(removed), own, structural)


def check_depth_request(found: Sequence[Repeated], fraction: float, scope: Iterable[str] | None) -> None:
    """Refuse `depth` when no block under the selection is removable, saying why."""
    if fraction and not ranked_blocks(found, scope):
        why = "; ".join(f"{r.path}: {r.reason}" for r in found[:4] if not r.removable)
        raise OptionError(
            f"`depth={fraction!r}`: no repeated block in the selection can be removed"
            + (f" ({why})" if why else " (the model has no repeated blocks)")
            + ". Drop `depth`, or select blocks with removable repeated blocks."
        )


def calibration_inputs(
    model: nn.Module, options: PruneOptions, data: str | os.PathLike[str] | None, imgsz: int, count: int
) -> Iterator[tuple[torch.Tensor]] | None:
    """`count` calibration images of the dataset YAML `data` (at `options.calib_imgsz`, else `imgsz`),
    one input tuple per batch, read lazily; None when the criterion reads no dataset (it refuses `data`)."""
    if data is None or not NEEDS.get(options.importance):
        return None
    found = calibration_batches(data, model_task(model), options.calib_imgsz or imgsz, count)
    return ((b["img"],) for b in found)


def block_pool(
    model: nn.Module,
    options: PruneOptions,
    scope: Iterable[str] | None,
    data: str | os.PathLike[str] | None = None,
    imgsz: int = 640,
) -> list[Repeated]:
    """The removable blocks under `scope`, those that change their input least first, measured on
    `options.calib_images` images of the dataset YAML `data` when the criterion reads one (else on the
    example input); refused when there are none."""
    batches = calibration_inputs(model, options, data, imgsz, options.calib_images)
    found = repeated_blocks(model, options.exclude, batches)
    check_depth_request(found, options.depth, scope)
    return ranked_blocks(found, scope)


def depth_request(
    model: nn.Module,
    options: PruneOptions,
    scope: Iterable[str] | None,
    plan: str | None = None,
    data: str | os.PathLike[str] | None = None,
    imgsz: int = 640,
) -> list[Repeated]:
    """The blocks a prune removes before its channels: those a `plan` (JSON text) records, else the
    `options.depth` fraction of `block_pool`."""
    if plan is not None:
        paths = plan_removed_blocks(plan)
        return blocks_named(repeated_blocks(model), paths) if paths else []
    if not options.depth:
        return []
    pool = block_pool(model, options, scope, data, imgsz)
    return pool[: round(options.depth * len(pool))]


def _cost(model: nn.Module, metric: Metric, inputs: tuple[torch.Tensor, ...]) -> int:
    return count_params(model) if metric is Metric.PARAMS else count_flops(model, inputs)


def width_options(
    options: PruneOptions, step: DepthStep, inputs: tuple[torch.Tensor, ...], latency: float | None = None
) -> PruneOptions:
    """The options of the channel step that follows `step`, on the shallower model: `layers` and
    `exclude` renamed to its paths, and a target (a fraction of the original) rescaled to a fraction
    of the shallower model, so that the two steps together meet it. `inputs`: an image at the model's
    training size; `latency`: the shallower model's measured latency over the original's
    (`yolo.latency.latency_ratio`), which a relative latency target needs (without it, as when a plan
    is replayed, the latency target is left as it is)."""
    changes: dict[str, object] = {"exclude": renamed(options.exclude, step.blocks)}
    if options.layers is not None:
        changes["layers"] = renamed(options.layers, step.blocks)
    speed = options.latency
    if speed is not None and speed.relative and latency is not None:
        if speed.value / latency > 1:
            raise OptionError(
                f"`depth={options.depth!r}` alone runs at {latency:.2f}x the original's latency, less than "
                f"`target_latency={options.target_latency!r}`; lower `depth` or raise the target."
            )
        changes["target_latency"] = f"{speed.value / latency:.6g}x"
    if options.target is not None:
        metric, value = options.target
        before, after = _cost(step.original, metric, inputs), _cost(step.model, metric, inputs)
        goal = value * before / after
        if goal > 1:
            raise OptionError(
                f"`depth={options.depth!r}` alone keeps {after / before:.1%} of the {metric.value}, less "
                f"than `target_{metric.value}={value!r}`; lower `depth` or raise the target."
            )
        changes[f"target_{metric.value}"] = goal
    return dataclasses.replace(options, **changes)


def whole_budget(
    budget: Budget | None, step: DepthStep, inputs: tuple[torch.Tensor, ...], latency: float | None = None
) -> Budget | None:
    """A channel step's `Budget` (fractions of the shallower model) as fractions of the original; a
    `LatencyBudget` with `latency`, the shallower model's measured latency over the original's
    (without it, it is left as measured)."""
    if budget is None:
        return None
    if isinstance(budget, LatencyBudget):
        if latency is None:
            return budget
        scale, before = latency, budget.original / latency
    else:
        before = _cost(step.original, budget.metric, inputs)
        scale = _cost(step.model, budget.metric, inputs) / before
    return dataclasses.replace(
        budget,
        target=round(budget.target * scale, 12),
        estimate=budget.estimate * scale,
        reached=budget.reached * scale,
        original=before,
    )
