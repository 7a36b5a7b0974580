"""The public Python API: analyze a YOLO model, prune it, verify the result.

Example:
    >>> import yoloprune
    >>> result = yoloprune.prune("yolov8n.yaml", ratio=0.5, blocks=[1, 2, 3])
    >>> result.save("pruned.pt")
    PosixPath('pruned.pt')
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from yoloprune.bench.stats import count_flops, count_params
from yoloprune.errors import YoloPruneError
from yoloprune.graph.groups import ChannelGraph, Group
from yoloprune.graph.trace import TraceError, trace
from yoloprune.progress import phase
from yoloprune.pruning.allocate import measurer
from yoloprune.pruning.plan import Plan, PruneOptions, choose, load_plan, recorded_options, select_groups
from yoloprune.pruning.probe import probe
from yoloprune.pruning.verify import (
    Equivalence,
    compare,
    excite,
    excited,
    masked_copy,
    prune_and_compare,
)
from yoloprune.yolo import adapter
from yoloprune.yolo.calibrate import evidence_for
from yoloprune.yolo.io import load_model, save_checkpoint
from yoloprune.yolo.safe import save_safe


@dataclass(frozen=True)
class Analysis:
    """A loaded model and its channel-dependency graph, with every pin: the tracer's, the probe's
    (when `analyze` ran it) and the user's `exclude`."""

    model: nn.Module
    graph: ChannelGraph
    source: str
    task: str
    ckpt: dict | None = None

    def group(self, group_id: int) -> Group:
        return self.graph.groups[group_id]

    def pinned(self, scope: Iterable[str] | None = None) -> list[Group]:
        """The groups under `scope` (module paths; None: all) that `prune` leaves as they are; each
        says why in `Group.reasons`. The analysis report shows exactly these."""
        return [g for g in select_groups(self.graph, scope) if not g.prunable]


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(close)}?" if close else ""


def check_layers(model: nn.Module, names: Iterable[str], flag: str) -> None:
    """Refuse module paths the model does not have, suggesting the closest real ones."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise YoloPruneError(
                f"{flag} {name!r}: the model has no layer by that name.{_suggest(name, modules)} "
                "Run `yoloprune inspect MODEL` to list every layer's path."
            )


def scope_of(
    model: nn.Module, blocks: Iterable[int] | None, layers: Iterable[str] | None
) -> tuple[str, ...] | None:
    """Module paths selected by block indices and layer names; None when neither is given."""
    if blocks is None and layers is None:
        return None
    n = len(adapter.blocks(model))
    paths = []
    for b in blocks or ():
        if not 0 <= int(b) < n:
            raise YoloPruneError(
                f"--blocks {b}: this model has blocks 0 to {n - 1}; pick indices in that range."
            )
        paths.append(adapter.block_path(int(b)))
    check_layers(model, layers or (), "--layers")
    return (*paths, *(layers or ()))


def excited_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` whose every channel carries input-dependent signal (see `excite`)."""
    return excite(copy.deepcopy(model), _excitation_batch(model, seed), seed)


def _excitation_batch(model: nn.Module, seed: int) -> tuple:
    return adapter.example_inputs(model, batch=4, seed=seed + 1)


def analyze(source: object, *, exclude: Iterable[str] = (), run_probe: bool = True) -> Analysis:
    """Load `source` (.pt, YAML, YOLO or nn.Module) and trace its channel-dependency graph.

    Example:
        >>> a = analyze("yolov8n.yaml")
        >>> sum(g.prunable for g in a.graph.groups)
        51
    """
    from yoloprune.graph.groups import build_groups

    loaded = load_model(source)
    model, exclude = loaded.model, tuple(exclude)
    check_layers(model, exclude, "--exclude")
    try:
        with phase("tracing channel dependencies"):
            t = trace(model, adapter.example_inputs(model), adapter.adapts_split, adapter.select_outputs)
    except TraceError as e:
        raise YoloPruneError(
            f"{loaded.source}: {e}. The model must run on a {adapter.example_inputs(model)[0].shape} input."
        ) from e
    graph = build_groups(t, exclude)
    if run_probe:
        inputs = adapter.example_inputs(model, seed=0)
        with excited(model, _excitation_batch(model, 0)):  # BatchNorms restored afterwards
            graph = probe(model, graph, inputs, adapter.fix_attributes, adapter.select_outputs)
    return Analysis(model, graph, loaded.source, loaded.task, loaded.ckpt)


@dataclass(frozen=True)
class PruneResult:
    """A pruned model, the plan that made it and the proof that it is right."""

    model: nn.Module
    original: nn.Module
    analysis: Analysis
    plan: Plan
    options: PruneOptions
    equivalence: Equivalence  # on the model's own weights
    structural: Equivalence  # on a copy whose every channel carries signal (see `excite`)
    widths: dict[str, tuple[int, int]]
    params: tuple[int, int]
    flops: tuple[int, int]
    imgsz: int

    def plan_json(self) -> str:
        return self.plan.to_json(self.analysis.source, self.options.as_json())

    def save(self, path: str | Path, format: str = "pt") -> Path:
        """Write the pruned model: `format="pt"`, a plain Ultralytics checkpoint (a pickle); `"safe"`, a
        pickle-free folder (architecture YAML + safetensors weights, see `yoloprune.yolo.safe`)."""
        meta = {"source": self.analysis.source, "plan": self.plan.convs, "options": self.options.as_json()}
        if format == "safe":
            return save_safe(self.model, path, meta=meta, source_ckpt=self.analysis.ckpt)
        if format != "pt":
            raise YoloPruneError(f"Unknown save format {format!r}; use 'pt' or 'safe'.")
        return save_checkpoint(self.model, path, meta=meta, source_ckpt=self.analysis.ckpt)


def _explain_all_pinned(groups: list[Group]) -> str:
    lines = []
    for g in groups[:8]:
        why = "; ".join(g.reasons)
        lines.append(f"group {g.id} ({g.producers[0].module if g.producers else g.members[0].module}): {why}")
    more = f" (and {len(groups) - 8} more)" if len(groups) > 8 else ""
    return "; ".join(lines) + more


def imgsz_of(analysis: Analysis) -> int:
    """The image size the model was trained at (640 unless its checkpoint says otherwise)."""
    args = (analysis.ckpt or {}).get("train_args") or {}
    size = args.get("imgsz", 224 if analysis.task == "classify" else 640)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def prune(
    source: object,
    ratio: float | str | None = None,
    *,
    blocks: Iterable[int] | None = None,
    layers: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    importance: str = "l1",
    round_to: int | str = 1,
    seed: int = 0,
    plan: str | None = None,
    analysis: Analysis | None = None,
    allocation: str = "local",
    max_ratio: float = 0.9,
    min_channels: int = 1,
    target_flops: float | None = None,
    target_params: float | None = None,
    aggregation: str = "mean",
    data: str | Path | None = None,
    calib_images: int = 64,
    calib_imgsz: int | None = None,
) -> PruneResult:
    """Prune whole coupled groups of `source` and prove the result against the masked original.

    How much: `ratio` (0.5 when nothing is given), or `target_flops` / `target_params`, the fraction
    of the original to keep (met within 2%, reported in `result.plan.budget`). `allocation="global"`
    ranks channels across groups; see `PruneOptions` for the rest. `plan` (JSON text from an earlier
    run) replays exact channel choices instead of choosing. A dry run is this call without `save`.
    Data-driven criteria (`taylor`, `act-*`) measure `calib_images` images of the dataset YAML
    `data` at `calib_imgsz` (default: the model's training size); `ratio="auto"` lets an act-*
    criterion choose each group's width. Every pruned group keeps a multiple of `round_to` channels;
    `round_to="auto"` is this machine's channel block (16 with AVX-512F, else 8), recorded in the
    plan as that number.

    Example:
        >>> r = prune("yolov8n.yaml", ratio=0.5, blocks=[1, 2, 3])
        >>> r.equivalence.ok, r.params
        (True, (3157200, 3133456))
        >>> prune("yolov8n.yaml", "auto", importance="act-medoid", data="digits/data.yaml")  # doctest: +SKIP
        >>> round(prune("yolov8n.yaml", target_flops=0.5, allocation="global").plan.budget.reached, 2)
        0.5
        >>> prune("yolov8n.yaml", target_flops=0.5, round_to="auto").options.round_to in (8, 16)
        True
    """
    if ratio is None and target_flops is None and target_params is None:
        ratio = 0.5
    options = PruneOptions(
        ratio,
        importance,
        round_to,
        seed,
        exclude=tuple(exclude),
        allocation=allocation,
        max_ratio=max_ratio,
        min_channels=min_channels,
        target_flops=target_flops,
        target_params=target_params,
        aggregation=aggregation,
    )
    a = analysis or analyze(source, exclude=options.exclude)
    options = replace(options, scope=scope_of(a.model, blocks, layers))
    imgsz = imgsz_of(a)
    size_in = (adapter.example_inputs(a.model, seed=None)[0].new_zeros(1, 3, imgsz, imgsz),)
    if plan is not None:
        chosen = load_plan(a.graph, a.model, plan)
        options = replace(options, **recorded_options(plan))
    else:
        groups = select_groups(a.graph, options.scope)
        if not any(g.prunable for g in groups):
            raise YoloPruneError(
                "nothing to prune: every group in the selection is pinned. " + _explain_all_pinned(groups)
            )
        measure = measurer(a.model, a.graph, size_in, adapter.fix_attributes)
        evidence = evidence_for(
            a.model, a.graph, importance, data, groups, calib_images, calib_imgsz or imgsz
        )
        chosen = choose(a.graph, a.model, groups, options, evidence, inputs=size_in, measure=measure)
    original = a.model
    inputs = adapter.example_inputs(original, seed=seed)
    fix, select = adapter.fix_attributes, adapter.select_outputs
    with phase("verification: the pruned model against the masked original"):
        pruned, widths, equivalence = prune_and_compare(
            original, a.graph, chosen.removed, inputs, fix, select, measure_signal=True, own=True
        )
        with excited(original, _excitation_batch(original, seed), seed):
            _, _, structural = prune_and_compare(original, a.graph, chosen.removed, inputs, fix, select)
    for name, eq in (("its own weights", equivalence), ("signal-carrying weights", structural)):
        if not eq.ok:
            raise YoloPruneError(
                f"verification failed: on {name} the pruned model differs from the masked original by "
                f"{eq.max_rel_error:.3g} (tolerance {eq.tolerance:g}). This is a yoloprune bug; please "
                "report it with the model and the plan (--plan)."
            )
    params = (count_params(original), count_params(pruned))
    flops = (count_flops(original, size_in), count_flops(pruned, size_in))
    return PruneResult(
        pruned, original, a, chosen, options, equivalence, structural, widths, params, flops, imgsz
    )


@dataclass(frozen=True)
class Verification:
    """Whether a pruned file is its original pruned by a plan, and computes what it should."""

    same_shapes: bool  # every layer has the widths the plan gives
    same_weights: bool  # the weights are the original's, sliced by the plan (false once fine-tuned)
    equivalence: Equivalence  # the file against the masked original
    structural: Equivalence  # the plan itself, on signal-carrying weights

    @property
    def ok(self) -> bool:
        return self.same_shapes and self.same_weights and self.equivalence.ok and self.structural.ok


@phase("verification: the pruned file against its original and plan")
def verify(original: object, pruned: object, plan: str) -> Verification:
    """Check that `pruned` is `original` pruned by `plan`, and that it computes what it should.

    Example:
        >>> r = prune("yolov8n.yaml", ratio=0.5, blocks=[1, 2, 3])
        >>> _ = r.save("pruned.pt")
        >>> verify("yolov8n.yaml", "pruned.pt", r.plan_json()).ok
        True
    """
    a = analyze(original, run_probe=False)
    chosen = load_plan(a.graph, a.model, plan)
    model = load_model(pruned).model
    inputs = adapter.example_inputs(a.model, seed=0)
    fix, select = adapter.fix_attributes, adapter.select_outputs
    expected, _, _ = prune_and_compare(a.model, a.graph, chosen.removed, inputs, fix, select)
    mine, theirs = expected.state_dict(), model.state_dict()
    same_shapes = mine.keys() == theirs.keys() and all(mine[k].shape == theirs[k].shape for k in mine)
    same_weights = same_shapes and all(torch.equal(mine[k], theirs[k].to(mine[k].dtype)) for k in mine)
    if not same_shapes:
        eq = Equivalence(float("inf"), 0)
    else:
        masked = masked_copy(a.model, a.graph, chosen.removed)
        eq = compare(model, masked, inputs, select, measure_signal=True)
    with excited(a.model, _excitation_batch(a.model, 0)):
        _, _, structural = prune_and_compare(a.model, a.graph, chosen.removed, inputs, fix, select)
    return Verification(same_shapes, same_weights, eq, structural)
