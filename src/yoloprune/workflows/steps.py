"""What a pruning schedule's steps are: `steps_of` turns a recipe into its baseline, pruning and
fine-tuning steps (each pruning step's share of the ratio, the target or the latency, spread
geometrically over the steps), and `step_depth` spreads a `depth` fraction the same way. Running
them is `yoloprune.workflows.schedule`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from yoloprune.pruning.options import AUTO, Metric
from yoloprune.workflows.recipe import Recipe, Schedule

_METRIC_NAMES = {Metric.FLOPS: "FLOPs", Metric.PARAMS: "params"}


@dataclass(frozen=True)
class Step:
    """One step of a run. A pruning step removes `ratio` of each selected group (local allocation;
    of all selected channels for global), or prunes until `keep` of the original's FLOPs or params
    remain, or to `latency` (a `target_latency` of the original: "0.7x" of its measured latency, or
    milliseconds); `blocks` / `layers` select what it may prune (None: every block)."""

    index: int
    kind: str  # "baseline", "prune" or "finetune"
    what: str
    epochs: int
    ratio: float | str | None = None
    keep: float | None = None
    blocks: tuple[int, ...] | None = None
    layers: tuple[str, ...] | None = None
    latency: float | str | None = None


def steps_of(recipe: Recipe) -> list[Step]:
    """The steps of `recipe`, baseline first.

    Example:
        >>> from yoloprune.workflows.recipe import recipe_from_dict
        >>> r = recipe_from_dict({"version": 1, "schedule": "layerwise", "model": "best.pt",
        ...                       "data": "digits/data.yaml", "ratio": 0.5, "layers": [1, 3],
        ...                       "final_epochs": 5})
        >>> [s.what for s in steps_of(r)]
        ['baseline', 'prune block 1, ratio 0.5', 'prune block 3, ratio 0.5', 'final fine-tune']
    """
    r = recipe
    steps = [Step(0, "baseline", "baseline", 0)]
    if r.schedule is Schedule.LAYERWISE:
        for s in r.layers:
            scope = {"blocks": (s.block,)} if s.block is not None else {"layers": (s.layer,)}
            steps.append(
                Step(len(steps), "prune", f"prune {s.label()}, ratio {s.ratio}", r.epochs, s.ratio, **scope)
            )
    else:
        o = r.options
        where = "every block" if o.blocks is None else "blocks " + ", ".join(map(str, o.blocks))
        metric, target = o.target or (None, None)
        for k in range(1, r.steps + 1):
            if o.ratio is not None:  # remove k/N of the ratio, as a fraction of what the last step left
                ratio = 1 - (1 - o.ratio * k / r.steps) / (1 - o.ratio * (k - 1) / r.steps)
                what = f"prune {where}, ratio {o.ratio}"
                if r.steps > 1:
                    what = f"prune {where}: {o.ratio * k / r.steps:.0%} of the channels removed in all"
                steps.append(Step(k, "prune", what, r.epochs, ratio, blocks=o.blocks))
            elif o.latency is not None:  # a fraction: each step removes the same fraction of what is left
                goal = o.latency
                keep = goal.value ** (k / r.steps)
                latency = f"{keep:.6g}x" if goal.relative else goal.value  # ms: one step (the recipe checks)
                aim = f"{keep:.0%} of the original's latency" if goal.relative else f"{goal.value:g} ms"
                what = f"prune {where} to {aim}"
                steps.append(Step(k, "prune", what, r.epochs, blocks=o.blocks, latency=latency))
            else:
                keep = target ** (k / r.steps)  # each step removes the same fraction of what is left
                what = f"prune {where} to {keep:.0%} of the original {_METRIC_NAMES[metric]}"
                steps.append(Step(k, "prune", what, r.epochs, keep=keep, blocks=o.blocks))
    if r.final_epochs:
        steps.append(Step(len(steps), "finetune", "final fine-tune", r.final_epochs))
    return steps


def step_depth(depth: float | str, k: int, steps: int) -> float | str:
    """The `depth` of step `k` of `steps`: the fraction of the current model's removable blocks that
    brings the blocks removed in all to `depth * k / steps` of the original's (as a ratio is spread);
    "auto" stays "auto" (every step searches its own split for its own target).

    Example:
        >>> [round(step_depth(0.5, k, 2), 3) for k in (1, 2)]  # a quarter, then a third of the rest
        [0.25, 0.333]
    """
    if not depth or depth == AUTO or steps <= 1:
        return depth
    return 1 - (1 - depth * k / steps) / (1 - depth * (k - 1) / steps)
