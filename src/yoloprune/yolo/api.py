"""The public Python API: analyze a YOLO model, prune it, verify the result.

Example:
    >>> import yoloprune
    >>> result = yoloprune.prune("yolov8n.yaml", yoloprune.PruneOptions(0.5, blocks=[1, 2, 3]))
    >>> result.save("pruned.pt")
    PosixPath('pruned.pt')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from yoloprune.atomic import atomic_write
from yoloprune.errors import YoloPruneError
from yoloprune.progress import phase
from yoloprune.pruning.count import count_flops, count_params
from yoloprune.pruning.depth import renamed
from yoloprune.pruning.options import AUTO
from yoloprune.pruning.plan import Plan, PruneOptions, load_plan, plan_options, plan_removed_blocks
from yoloprune.pruning.split import Split
from yoloprune.pruning.verify import (
    Equivalence,
    compare_outputs,
    excited,
    first_state_difference,
    kept_outputs,
    masked_copy,
    prune_and_compare,
)
from yoloprune.yolo.adapter import ULTRALYTICS, excitation_batch
from yoloprune.yolo.analyze import Analysis, analyze, excited_copy, imgsz_of, scope_of
from yoloprune.yolo.check import Check, Checked, ChecksFailed, export_checks
from yoloprune.yolo.depth_step import DepthStep, depth_request, take_out
from yoloprune.yolo.io import check_checkpoint_name, load_model, save_checkpoint
from yoloprune.yolo.request import search_depth, shape
from yoloprune.yolo.safe import save_safe

__all__ = [
    "Analysis",
    "PruneResult",
    "Verification",
    "analyze",
    "check_outputs",
    "excited_copy",
    "imgsz_of",
    "prune",
    "scope_of",
    "verify",
]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class PruneResult(Checked):
    """A pruned model, the plan that made it and the proof that it is right: `checks`, every check
    `prune` ran (equivalence, structural, train step, ONNX); `save` writes only when all passed."""

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
    checks: tuple[Check, ...]  # `ok`: all passed, so `save` writes; `failed`: those that did not
    depth: DepthStep | None = None  # whole blocks removed first: `original` is then the shallower model
    splits: tuple[Split, ...] = ()  # `depth="auto"`: every split of blocks and channels tried

    @property
    def scope(self) -> tuple[str, ...] | None:
        """The module paths `options.blocks` and `options.layers` select (None: the whole model), in
        `original` (the shallower model, when blocks were removed first)."""
        layers = self.options.layers
        if self.depth and layers is not None:
            layers = renamed(layers, self.depth.blocks)
        return scope_of(self.original, self.options.blocks, layers)

    def plan_json(self) -> str:
        extra: dict[str, object] = {"removed_blocks": list(self.depth.paths)} if self.depth else {}
        if self.splits:
            extra["depth_search"] = [s.as_json() for s in self.splits]
        return self.plan.to_json(self.analysis.source, self.options, **extra)

    def save(self, path: PathLike, format: str = "pt", *, plan: PathLike | None = None) -> Path:
        """Write the pruned model, and with `plan` its plan (JSON), only if every check passed.

        `format="pt"`: a plain Ultralytics checkpoint (a pickle); `"safe"`: a pickle-free folder
        (architecture YAML + safetensors weights, see `yoloprune.yolo.safe`). Both files are written
        atomically, the plan first; if the model cannot be written the plan is removed again, so a
        failure leaves neither. A failed check raises ChecksFailed (a YoloPruneError) and writes nothing.

        Example:
            >>> r = prune("yolov8n.yaml", PruneOptions(0.5, blocks=[1, 2, 3]))
            >>> r.save("pruned.pt", plan="plan.json")
            PosixPath('pruned.pt')
        """
        if not self.ok:
            raise ChecksFailed(self.failed)
        check_outputs(path, plan, format)
        meta = {"source": self.analysis.source, "plan": self.plan.convs, "options": self.options.to_json()}
        if plan is not None:
            text = self.plan_json()
            atomic_write(plan, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        try:
            if format == "safe":
                return save_safe(self.model, path, meta=meta, source_ckpt=self.analysis.ckpt)
            return save_checkpoint(self.model, path, meta=meta, source_ckpt=self.analysis.ckpt)
        except BaseException:
            if plan is not None:
                Path(plan).unlink(missing_ok=True)
            raise


SAVE_FORMATS = ("pt", "safe")


def check_outputs(out: PathLike, plan: PathLike | None = None, format: str = "pt") -> None:
    """Refuse outputs `PruneResult.save` could not write, before any work is spent: an unknown
    `format`, a name that does not suit it (or that Ultralytics would not read as this file, see
    `check_checkpoint_name`), a missing or unwritable directory.

    Example:
        >>> check_outputs("pruned.pt", plan="plan.json", format="pt")
        >>> check_outputs("pruned.pt", format="safe")
        Traceback (most recent call last):
        ...
        yoloprune.errors.YoloPruneError: Cannot save pruned.pt: the safe format writes a folder, not ...
    """
    if format not in SAVE_FORMATS:
        raise YoloPruneError(f"Unknown save format {format!r}; use 'pt' or 'safe'.")
    out = Path(out)
    if (out.suffix.lower() == ".pt") != (format == "pt"):
        raise YoloPruneError(
            f"Cannot save a checkpoint as {out}: Ultralytics reads checkpoints named *.pt; use e.g. "
            "pruned.pt."
            if format == "pt"
            else f"Cannot save {out}: the safe format writes a folder, not a .pt file; use e.g. pruned.safe."
        )
    if format == "pt":
        check_checkpoint_name(out)
    if plan is not None and Path(plan).resolve() == out.resolve():
        raise YoloPruneError(f"Cannot write both the model and its plan to {out}; name the plan plan.json.")
    effective = os.access in os.supports_effective_ids  # as the user the process acts as
    for path in filter(None, (out, plan)):
        folder = Path(path).parent
        if not folder.is_dir():
            raise YoloPruneError(f"Cannot write {path}: directory {folder} does not exist.")
        if not os.access(folder, os.W_OK | os.X_OK, effective_ids=effective):
            raise YoloPruneError(
                f"Cannot write {path}: directory {folder} is not writable; choose another folder or fix "
                "its permissions."
            )


def prune(
    source: object,
    options: PruneOptions | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    plan: str | None = None,
    analysis: Analysis | None = None,
    check_onnx: bool = True,
) -> PruneResult:
    """Prune whole coupled groups of `source` as `options` say, and prove the result.

    `options` (a `PruneOptions`; default: ratio 0.5 of every prunable group) holds everything that
    decides which channels go: how much (`ratio`, or `target_flops` / `target_params`, the fraction
    of the original to keep, met within 2% and reported in `result.plan.budget`; or `target_latency`,
    milliseconds or "0.5x" of the original's, measured on `options.runtime` at the model's image
    size and met within 5%: see `yoloprune.pruning.latency`), what (`blocks`,
    `layers`, `exclude`), the criterion and its limits. Data-driven criteria (`taylor`, `act-*`)
    measure images of the dataset YAML `data`. `plan` (JSON text from `result.plan_json()`) replays
    exact channel choices with the options it records, so it takes no `options`. `analysis` reuses
    an `analyze` result of `source`. A dry run is this call without `save`.

    The result's `checks` record every proof: equivalence and structural (the pruned model against
    the masked original), a train step, and (unless `check_onnx=False`) the ONNX export; a check the
    original already fails the same way does not count against the pruned model (see
    `yoloprune.yolo.check.ORIGINAL_FACTOR`). `result.ok` says whether all passed; `save` writes
    only then.

    Example:
        >>> r = prune("yolov8n.yaml", PruneOptions(0.5, blocks=[1, 2, 3]))
        >>> r.equivalence.ok, r.params
        (True, (3157200, 3133456))
        >>> by_act = PruneOptions("auto", importance="act-medoid")
        >>> prune("yolov8n.yaml", by_act, data="digits/data.yaml")  # doctest: +SKIP
        >>> options = PruneOptions(target_flops=0.5, allocation="global")
        >>> round(prune("yolov8n.yaml", options).plan.budget.reached, 2)
        0.5
        >>> blocked = PruneOptions(target_flops=0.5, round_to="auto")
        >>> prune("yolov8n.yaml", blocked).options.round_to in (8, 16)
        True
    """
    if plan is not None:
        if options is not None:
            raise YoloPruneError(
                "give options or a plan, not both: a plan replays the options it was made with."
            )
        options = plan_options(plan)
    elif options is None:
        options = PruneOptions()
    elif not isinstance(options, PruneOptions):
        raise TypeError(f"options must be a PruneOptions, e.g. PruneOptions(ratio=0.5); got {options!r}")
    auto = plan is None and options.depth == AUTO
    removes_blocks = bool(plan_removed_blocks(plan)) if plan is not None else bool(options.depth) and not auto
    a = analysis or analyze(source, exclude=options.exclude, run_probe=not removes_blocks)  # probed after
    imgsz = imgsz_of(a)
    size_in = (ULTRALYTICS.example_inputs(a.model, seed=None)[0].new_zeros(1, 3, imgsz, imgsz),)
    scope = scope_of(a.model, options.blocks, options.layers)
    splits: tuple[Split, ...] = ()
    if auto:
        s, splits = search_depth(a, options, scope, data, size_in, imgsz)
    else:
        blocks = depth_request(a.model, options, scope, plan, data, imgsz)
        s = shape(a, blocks, options, data, size_in, imgsz, plan)
    a, chosen, depth = s.analysis, s.chosen, s.depth
    original = a.model
    inputs = ULTRALYTICS.example_inputs(original, seed=options.seed)
    with phase("verification: the pruned model against the masked original"):
        pruned, widths, equivalence = prune_and_compare(
            original, a.graph, chosen.removed, inputs, ULTRALYTICS, measure_signal=True, own=True
        )
        with excited(original, excitation_batch(original, options.seed), options.seed):
            _, _, structural = prune_and_compare(original, a.graph, chosen.removed, inputs, ULTRALYTICS)
    checks = (
        *((depth.check,) if depth else ()),
        _equivalence_check("equivalence", equivalence, "on its own weights"),
        _equivalence_check("structural", structural, "on signal-carrying weights"),
        *export_checks(pruned, original, onnx=check_onnx),
    )
    first = depth.original if depth else original
    params = (count_params(first), count_params(pruned))
    flops = (count_flops(first, size_in), count_flops(pruned, size_in))
    return PruneResult(
        pruned, original, a, chosen, options, equivalence, structural, widths, params, flops, imgsz, checks,
        depth, splits,
    )  # fmt: skip


def _equivalence_check(name: str, eq: Equivalence, where: str) -> Check:
    """The pruned model against the masked original. No baseline from the original is needed here:
    the reference is the original itself, and an error above the tolerance is measured again in
    float64, where rounding is ~1e-12 and can neither hide nor fake a difference."""
    detail = f"max rel error {eq.max_rel_error:.3g} {where} (tolerance {eq.tolerance:g})"
    if not eq.ok:
        detail += ": the pruned model does not compute what the masked original computes"
    return Check(name, eq.ok, eq.max_rel_error, None, eq.tolerance, detail)


@dataclass(frozen=True)
class Verification(Checked):
    """Whether a pruned file is its original pruned by a plan, and computes what it should; `checks`
    holds every row (shapes, weights, equivalence, structural, train step, ONNX)."""

    same_shapes: bool  # every layer has the widths the plan gives
    same_weights: bool  # the weights are the original's, sliced by the plan (false once fine-tuned)
    equivalence: Equivalence  # the file against the masked original
    structural: Equivalence  # the plan itself, on signal-carrying weights
    checks: tuple[Check, ...]
    first_difference: tuple[str, str] | None = None  # (tensor, how): first shape, else weight, that differs


def _where(differs: tuple[str, str] | None, ok: bool, text: str) -> str:
    return text if ok or differs is None else f"{text}; first differs at {differs[0]}: {differs[1]}"


def _diverges(eq: Equivalence) -> str:
    if eq.first_divergence is None:
        return ""
    layer, error = eq.first_divergence
    return f"; first differs at {layer} (rel error {error:.3g})"


@phase("verification: the pruned file against its original and plan")
def verify(original: object, pruned: object, plan: str, *, check_onnx: bool = True) -> Verification:
    """Check that `pruned` is `original` pruned by `plan`, and that it computes what it should: the
    checks `prune` runs, plus the file's shapes and weights against the plan's (`check_onnx=False`
    skips the ONNX export).

    Example:
        >>> r = prune("yolov8n.yaml", PruneOptions(0.5, blocks=[1, 2, 3]))
        >>> _ = r.save("pruned.pt")
        >>> verify("yolov8n.yaml", "pruned.pt", r.plan_json()).ok
        True
    """
    a = analyze(original, run_probe=False)
    depth = None
    removed_blocks = depth_request(a.model, plan_options(plan), None, plan)
    if removed_blocks:  # the plan's blocks out of the original, proved; its convs are the shallower model's
        depth = take_out(a.model, removed_blocks)
        a = analyze(depth.model, run_probe=False)
    chosen = load_plan(a.graph, a.model, plan)
    model = load_model(pruned).model
    inputs = ULTRALYTICS.example_inputs(a.model, seed=0)
    expected, _, _ = prune_and_compare(a.model, a.graph, chosen.removed, inputs, ULTRALYTICS)
    mine, theirs = expected.state_dict(), model.state_dict()
    same_shapes = mine.keys() == theirs.keys() and all(mine[k].shape == theirs[k].shape for k in mine)
    same_weights = same_shapes and all(torch.equal(mine[k], theirs[k].to(mine[k].dtype)) for k in mine)
    differs = first_state_difference(mine, theirs, values=same_shapes)
    if not same_shapes:
        eq = Equivalence(float("inf"), 0)
    else:
        masked = masked_copy(a.model, a.graph, chosen.removed)
        eq = compare_outputs(model, masked, inputs, ULTRALYTICS, True, kept_outputs(a.graph, chosen.removed))
    with excited(a.model, excitation_batch(a.model, 0)):
        _, _, structural = prune_and_compare(a.model, a.graph, chosen.removed, inputs, ULTRALYTICS)
    widths = _where(differs, same_shapes, "every layer has the width the plan gives")
    weights = _where(differs, same_weights, "the original's weights, sliced by the plan (not fine-tuned)")
    checks = (
        *((depth.check,) if depth else ()),
        Check("shapes", same_shapes, detail=widths),
        Check("weights", same_weights, detail=weights),
        Check(
            "equivalence", eq.ok, eq.max_rel_error, None, eq.tolerance,
            f"max rel error {eq.max_rel_error:.3g} (tolerance {eq.tolerance:g}){_diverges(eq)}",
        ),
        Check(
            "structural", structural.ok, structural.max_rel_error, None, structural.tolerance,
            f"the plan on signal-carrying weights: max rel error {structural.max_rel_error:.3g}"
            f"{_diverges(structural)}",
        ),
        *export_checks(model, a.model, onnx=check_onnx),
    )  # fmt: skip
    return Verification(same_shapes, same_weights, eq, structural, checks, differs)
