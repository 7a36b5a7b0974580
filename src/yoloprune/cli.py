"""The `yoloprune` command line: a thin layer over the library.

    yoloprune inspect MODEL [--format text|md|json] [--out FILE]
    yoloprune analyze MODEL [--blocks I ...] [--layers PATH ...] [--exclude PATH ...]
                            [--format md|json|dot|svg] [--out FILE]
    yoloprune prune MODEL (--ratio R|auto | --target-flops F | --target-params F | --plan-in PLAN)
                          [--blocks ...] [--layers ...] [--exclude ...] [--importance NAME]
                          [--aggregation mean|sum] [--global] [--max-ratio R] [--min-channels N]
                          [--round-to N|auto] [--seed N] (--out PRUNED.pt [--plan PLAN] | --dry-run)
                          [--save-format pt|safe]
                          [--no-onnx-check] [--data DATA.yaml [--calib-images N] [--calib-imgsz N]]
    yoloprune verify ORIGINAL PRUNED --plan PLAN [--no-onnx-check]
    yoloprune data digits --out DIR [--images N] [--imgsz N] [--seed N]
    yoloprune finetune PRUNED.pt data=DATA.yaml epochs=N [KEY=VALUE ...] [--teacher ORIGINAL.pt]
                       [--distill-weight W]
    yoloprune run (RECIPE.yaml | --schedule oneshot|iterative|layerwise --model BASELINE.pt --data DATA.yaml
                  ... [KEY=VALUE ...]) --out DIR [--resume] [--verbose]
    yoloprune compare (RECIPE.yaml | the recipe flags of run ...) [--criteria NAME ...] --out DIR [--resume]
                      [--imgsz N] [--runs N] [--warmup N] [--verbose]
    yoloprune bench MODEL [MODEL ...] [--data DATA.yaml] [--imgsz N] [--runs N] [--warmup N] [--batch N]
                    [--simplify] [--out FILE.md] [--json FILE] [--plot FILE.png]
    yoloprune sensitivity MODEL --data DATA.yaml [--blocks ...] [--layers ...] [--exclude ...]
                          [--ratios R ...] [--metric loss|map] [--importance NAME] [--images N] [--imgsz N]
                          [--csv FILE] [--plot FILE.png] [--target-flops F [--round-to N|auto] [--plan PLAN]]

Exit codes: 0 success, 1 a verification failed (`verify`), 2 a problem with the inputs (the
message on stderr says what to do). `prune` writes nothing unless every check passes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from yoloprune._atomic import atomic_write
from yoloprune.errors import YoloPruneError
from yoloprune.importance import CRITERIA, Aggregation
from yoloprune.pruning.plan import select_groups

if TYPE_CHECKING:
    from yoloprune.yolo.api import PruneResult
    from yoloprune.yolo.recipe import Recipe


def _emit(data: str | bytes, out: str | None) -> None:
    """Print `data`, or write it atomically to `out`."""
    if out is None:
        if isinstance(data, bytes):
            sys.stdout.buffer.write(data)
        else:
            sys.stdout.write(data if data.endswith("\n") else data + "\n")
        return
    if isinstance(data, bytes):
        atomic_write(out, lambda tmp: tmp.write_bytes(data))
    else:
        atomic_write(out, lambda tmp: tmp.write_text(data, encoding="utf-8"))
    print(f"wrote {out}", file=sys.stderr)


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise YoloPruneError(f"Cannot read {what} {path}: {e.strerror or e}.") from e


def _inspect(args: argparse.Namespace) -> int:
    from yoloprune.yolo import api, inventory

    a = api.analyze(args.model, run_probe=False)
    blocks = inventory.inventory(a)
    if args.format == "json":
        text = inventory.render_json(blocks, a.source, a.task)
    elif args.format == "md":
        text = inventory.render_markdown(blocks, a.source)
    else:
        text = inventory.render_text(blocks)
    _emit(text, args.out)
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from yoloprune import report
    from yoloprune.yolo import api

    a = api.analyze(args.model, exclude=args.exclude)
    r = report.analysis_report(a, args.blocks, args.layers, args.exclude)
    if args.format == "json":
        _emit(report.to_json(r), args.out)
    elif args.format == "dot":
        _emit(report.to_dot(r), args.out)
    elif args.format == "svg":
        _emit(report.to_svg(report.to_dot(r)), args.out)
    else:
        _emit(report.to_markdown(r), args.out)
    return 0


def _change(before: int, after: int) -> str:
    return f"{after / before:.2f}x, {100 * (after - before) / before:+.1f}%" if before else "n/a"


def _prune_summary(
    result: PruneResult,
    checks: Sequence[tuple[str, str]] = (),
    replayed: str | None = None,
    head: str = "Pruned",
) -> str:
    """What a prune did and the evidence that it is right; `checks` adds (name, result) rows and
    `replayed` names the plan file the channels came from, if any."""
    graph, plan, opts = result.analysis.graph, result.plan, result.options
    in_scope = [g for g in select_groups(graph, opts.scope) if g.prunable]
    pruned = sum(1 for g in in_scope if plan.removed.intersection(g.classes))
    pinned = len(select_groups(graph, opts.scope)) - len(in_scope)
    (p0, p1), (f0, f1) = result.params, result.flops
    eq, st = result.equivalence, result.structural
    left = f" ({pinned} pinned groups left as they are)" if pinned else ""
    rows = [
        ("groups", f"{pruned} of {len(in_scope)} prunable groups pruned{left}"),
        ("convs", f"{len(plan.convs)} convs narrowed"),
        ("params", f"{p0:,} -> {p1:,}  ({_change(p0, p1)})"),
        (
            "FLOPs",
            f"{f0 / 1e9:.2f} G -> {f1 / 1e9:.2f} G at {result.imgsz}x{result.imgsz}  ({_change(f0, f1)})",
        ),
        (
            "equivalence",
            f"max rel error {eq.max_rel_error:.2g} on its own weights, {st.max_rel_error:.2g} on "
            f"signal-carrying weights (tolerance {eq.tolerance:g}): ok",
        ),
        *checks,
    ]
    if plan.budget is not None:
        b = plan.budget
        reached = f"{b.reached:.3f} of the original {b.metric.value} (target {b.target:g}"
        rows.insert(4, ("target", f"{reached}, met within 2%; the cost model estimated {b.estimate:.3f})"))
    scope = "every block" if opts.scope is None else ", ".join(opts.scope)
    rounding = f", widths rounded to multiples of {opts.round_to}" if opts.round_to > 1 else ""
    target = opts.target
    amount = f"ratio {opts.ratio}" if target is None else f"{target[0].value} target {target[1]:g}"
    chosen = f"{scope}; {amount}, {opts.allocation.value} allocation, importance {opts.importance}{rounding}"
    how = f"replaying {replayed}" if replayed else chosen
    return "\n".join([f"{head} {result.analysis.source} ({how}):", *(f"  {k:<12}{v}" for k, v in rows)])


def _checked(name: str, check: Callable[[nn.Module], float], model: nn.Module) -> float:
    """Run one post-prune check, naming it in the error if it fails."""
    try:
        return check(model)
    except YoloPruneError as e:
        raise YoloPruneError(f"the pruned model failed the {name} check, so nothing was written: {e}") from e


def _prune(args: argparse.Namespace) -> int:
    from yoloprune.yolo import api
    from yoloprune.yolo.check import ONNX_TOLERANCE, onnx_check, train_step_check

    if args.out is None and not args.dry_run:
        raise YoloPruneError("--out PRUNED.pt is required, or --dry-run to print the plan and write nothing.")
    if args.out is not None and (Path(args.out).suffix.lower() == ".pt") != (args.save_format == "pt"):
        raise YoloPruneError(
            f"--out {args.out}: Ultralytics reads checkpoints named *.pt; use e.g. pruned.pt."
            if args.save_format == "pt"
            else f"--out {args.out}: --save-format safe writes a folder, not a .pt file; use pruned.safe."
        )
    effective = os.access in os.supports_effective_ids  # as the user the process acts as
    for path in filter(None, (args.out, args.plan)):
        folder = Path(path).parent
        if not folder.is_dir():
            raise YoloPruneError(f"Cannot write {path}: directory {folder} does not exist.")
        if not os.access(folder, os.W_OK | os.X_OK, effective_ids=effective):
            raise YoloPruneError(
                f"Cannot write {path}: directory {folder} is not writable (checked before pruning); "
                "choose another folder or fix its permissions."
            )
    plan_in = _read_text(args.plan_in, "plan") if args.plan_in else None
    result = api.prune(
        args.model,
        0.0 if plan_in else args.ratio,  # a replayed plan records its own options
        importance=args.importance,
        round_to=args.round_to,
        seed=args.seed,
        blocks=args.blocks,
        layers=args.layers,
        exclude=args.exclude,
        plan=plan_in,
        allocation=args.allocation,
        max_ratio=args.max_ratio,
        min_channels=args.min_channels,
        target_flops=args.target_flops,
        target_params=args.target_params,
        aggregation=args.aggregation,
        data=args.data,
        calib_images=args.calib_images,
        calib_imgsz=args.calib_imgsz,
    )
    if args.dry_run:
        from yoloprune.yolo.costs import block_costs, render_blocks

        print(_prune_summary(result, replayed=args.plan_in, head="Dry run: would prune"))
        print(render_blocks(block_costs(result.original, result.model, result.imgsz)))
        print("dry run: nothing written")
        return 0
    loss = _checked("train-step", train_step_check, result.model)
    checks = [("train step", f"loss {loss:.4g} on a synthetic batch: ok")]
    if not args.no_onnx_check:
        diff = _checked("ONNX export", onnx_check, result.model)
        if diff > ONNX_TOLERANCE:
            raise YoloPruneError(
                f"the pruned model's ONNX export differs from PyTorch by {diff:.3g} (tolerance "
                f"{ONNX_TOLERANCE:g}), so nothing was written. Please report this with the plan."
            )
        checks.append(("ONNX", f"max rel diff {diff:.2g} between ONNX Runtime and PyTorch: ok"))
    print(_prune_summary(result, checks, replayed=args.plan_in))
    if args.plan:
        atomic_write(args.plan, lambda tmp: tmp.write_text(result.plan_json(), encoding="utf-8"))
    try:
        result.save(args.out, format=args.save_format)
    except BaseException:
        if args.plan:
            Path(args.plan).unlink(missing_ok=True)
        raise
    print(f"wrote {', '.join(filter(None, (args.out, args.plan)))}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from yoloprune.yolo import api
    from yoloprune.yolo.check import ONNX_TOLERANCE, onnx_check, train_step_check
    from yoloprune.yolo.io import load_model

    v = api.verify(args.original, args.pruned, _read_text(args.plan, "plan"))
    eq, st = v.equivalence, v.structural
    rows = [
        ("shapes", v.same_shapes, "every layer has the width the plan gives"),
        ("weights", v.same_weights, "the original's weights, sliced by the plan (not fine-tuned)"),
        ("equivalence", eq.ok, f"max rel error {eq.max_rel_error:.3g} (tolerance {eq.tolerance:g})"),
        ("structural", st.ok, f"the plan on signal-carrying weights: max rel error {st.max_rel_error:.3g}"),
    ]
    if not eq.informative:
        print(
            f"note: {args.original}'s outputs barely depend on its input (signal {eq.signal:.2g}; untrained "
            "weights?), so the equivalence row alone proves little; the weights and structural rows do."
        )
    model = load_model(args.pruned).model
    try:
        rows.append(("train step", True, f"loss {train_step_check(model):.4g} on a synthetic batch"))
    except YoloPruneError as e:
        rows.append(("train step", False, str(e)))
    if not args.no_onnx_check:
        try:
            diff = onnx_check(model)
            rows.append(
                ("ONNX", diff <= ONNX_TOLERANCE, f"max rel diff {diff:.2g} (tolerance {ONNX_TOLERANCE:g})")
            )
        except YoloPruneError as e:
            rows.append(("ONNX", False, str(e)))
    print(f"Verifying {args.pruned} against {args.original} with {args.plan}:")
    for name, ok, detail in rows:
        print(f"  {name:<12}{'ok  ' if ok else 'FAIL'}  {detail}")
    failed = [name for name, ok, _ in rows if not ok]
    print(f"FAILED: {', '.join(failed)}" if failed else "all checks passed")
    return 1 if failed else 0


def _data_digits(args: argparse.Namespace) -> int:
    from yoloprune.yolo.data import make_digits

    made = make_digits(args.out, images=args.images, imgsz=args.imgsz, seed=args.seed)
    counts = ", ".join(f"{split} {n} images, {made.boxes[split]} boxes" for split, n in made.images.items())
    print(f"wrote {made.yaml} ({counts}; 10 classes, {args.imgsz}x{args.imgsz})")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from yoloprune.yolo.finetune import finetune, parse_train_args

    kwargs = parse_train_args(args.train)
    if "data" not in kwargs or "epochs" not in kwargs:
        raise YoloPruneError(
            "finetune needs data=DATA.yaml and epochs=N, e.g. `yoloprune finetune pruned.pt "
            "data=digits/data.yaml epochs=10`."
        )
    data, epochs = kwargs.pop("data"), kwargs.pop("epochs")
    ft = finetune(
        args.checkpoint, data, epochs, teacher=args.teacher, distill_weight=args.distill_weight, **kwargs
    )
    m = ft.metrics
    print(
        f"Fine-tuned {args.checkpoint} for {epochs} epochs, widths and {ft.params:,} params kept: mAP50-95 "
        f"{m.map50_95:.3f}, mAP50 {m.map50:.3f}, precision {m.precision:.3f}, recall {m.recall:.3f}"
    )
    print(f"wrote {ft.best} (plain Ultralytics checkpoint)")
    return 0


_RECIPE_FLAGS = (
    "schedule", "model", "data", "ratio", "target_flops", "target_params", "steps", "layers", "epochs",
    "final_epochs", "max_drop", "blocks", "exclude", "importance", "allocation", "aggregation", "round_to",
    "max_ratio", "min_channels", "calib_images", "teacher", "distill_weight", "seed",
)  # fmt: skip


def _recipe(args: argparse.Namespace) -> Recipe | None:
    """The recipe of `run` and `compare`: a YAML among the words, or the recipe flags."""
    from yoloprune.yolo.recipe import recipe_from_cli

    return recipe_from_cli(args.items, {k: getattr(args, k) for k in _RECIPE_FLAGS})


def _log(line: str) -> None:
    print(line, flush=True)


def _run(args: argparse.Namespace) -> int:
    from yoloprune.yolo.history import render_history
    from yoloprune.yolo.schedule import run

    result = run(_recipe(args), args.out, resume=args.resume, log=_log, verbose=args.verbose)
    print(render_history(result.history))
    print(f"result {result.final}; history {Path(args.out) / 'history'}.json, .csv, .png")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from yoloprune.yolo.compare import compare

    c = compare(
        _recipe(args),
        args.criteria,
        args.out,
        resume=args.resume,
        imgsz=args.imgsz,
        runs=args.runs,
        warmup=args.warmup,
        log=_log,
        verbose=args.verbose,
    )
    print(c.bench.gains_markdown(c.labels, "criterion"), end="")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from yoloprune.yolo.evaluate import bench

    b = bench(
        args.models,
        imgsz=args.imgsz,
        data=args.data,
        runs=args.runs,
        warmup=args.warmup,
        batch=args.batch,
        simplify=args.simplify,
    )
    _emit(b.to_markdown(), args.out)
    if args.json:
        _emit(b.to_json(), args.json)
    if args.plot:
        b.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _sensitivity(args: argparse.Namespace) -> int:
    from yoloprune.yolo import api, sensitivity

    if args.plan and args.target_flops is None:
        raise YoloPruneError("--plan writes the plan for --target-flops F; pass --target-flops as well.")
    a = api.analyze(args.model, exclude=args.exclude)
    s = sensitivity.sensitivity(
        args.model,
        args.data,
        blocks=args.blocks,
        layers=args.layers,
        exclude=args.exclude,
        ratios=args.ratios,
        metric=args.metric,
        importance=args.importance,
        images=args.images,
        imgsz=args.imgsz,
        batch=args.batch,
        analysis=a,
    )
    print(s.to_text())
    if args.csv:
        _emit(s.to_csv(), args.csv)
    if args.plot:
        s.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.target_flops is None:
        return 0
    plan = sensitivity.plan_for_target(s, a, args.target_flops, args.round_to, args.min_channels)
    print(sensitivity.render_plan(s, plan, a))
    if args.plan:
        _emit(sensitivity.plan_json(s, plan, args.round_to, args.min_channels), args.plan)
        print(f"replay it with: yoloprune prune {args.model} --plan-in {args.plan} --out pruned.pt")
    return 0


def _auto_or(number: type[float] | type[int], example: str) -> Callable[[str], float | int | str]:
    """An argparse type: the word auto, or a `number` such as `example`."""

    def parse(text: str) -> float | int | str:
        if text == "auto":
            return text
        try:
            return number(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {example}, or auto; got {text!r}") from None

    return parse


_ratio = _auto_or(float, "a fraction such as 0.5")  # --ratio auto: the act-* criteria choose widths
_round_to = _auto_or(int, "a whole number such as 8")  # --round-to auto: this machine's channel block
_ROUND_TO_HELP = "keep a multiple of N channels per group; auto: 16 with AVX-512, else 8 (1)"


def _recipe_flags(s: argparse.ArgumentParser) -> None:
    """The recipe as a YAML or as flags (`_RECIPE_FLAGS`), shared by `run` and `compare`."""
    s.add_argument("items", nargs="*", metavar="RECIPE.yaml|KEY=VALUE", help="a recipe, or train keys")
    s.add_argument("--verbose", action="store_true", help="also show Ultralytics' training output")
    s.add_argument("--schedule", choices=("oneshot", "iterative", "layerwise"))
    s.add_argument("--model", metavar="BASELINE.pt", help="the trained, unpruned model")
    s.add_argument("--data", metavar="DATA.yaml", help="dataset YAML for fine-tuning and validation")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--ratio", type=_ratio, metavar="R|auto", help="fraction of channels to remove")
    how.add_argument("--target-flops", type=float, metavar="F", help="keep this fraction of the FLOPs")
    how.add_argument("--target-params", type=float, metavar="F", help="keep this fraction of the params")
    s.add_argument("--steps", type=int, metavar="N", help="iterative: steps to reach the target")
    s.add_argument("--layers", nargs="+", metavar="I|PATH[:R]", help="layerwise: blocks or layers, in order")
    s.add_argument("--epochs", type=int, metavar="E", help="fine-tune epochs after each pruning step")
    s.add_argument("--final-epochs", type=int, metavar="F", help="fine-tune epochs at the end")
    s.add_argument("--max-drop", type=float, metavar="D", help="iterative: stop when mAP50-95 falls more")
    s.add_argument("--blocks", nargs="+", type=int, metavar="I", help="oneshot/iterative: prune only these")
    s.add_argument("--exclude", nargs="+", metavar="PATH", help="layers never to prune")
    s.add_argument("--importance", choices=sorted(CRITERIA), help="channel ranking (l1)")
    s.add_argument("--global", dest="allocation", action="store_const", const="global", help="global ranking")
    s.add_argument("--aggregation", choices=[a.value for a in Aggregation])
    s.add_argument("--round-to", type=_round_to, metavar="N|auto", help=_ROUND_TO_HELP)
    s.add_argument("--max-ratio", type=float, metavar="R")
    s.add_argument("--min-channels", type=int, metavar="N")
    s.add_argument("--calib-images", type=int, metavar="N")
    s.add_argument("--teacher", metavar="ORIGINAL.pt", help="distill the head outputs of this model")
    s.add_argument("--distill-weight", type=float, metavar="W")
    s.add_argument("--seed", type=int)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="yoloprune",
        description="Safe, explainable structured channel pruning for Ultralytics YOLO models.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_help = "a .pt checkpoint or a model YAML (e.g. yolov8s.yaml, built untrained)"

    s = sub.add_parser("inspect", help="list every block and the convs inside it")
    s.add_argument("model", help=model_help)
    s.add_argument("--format", choices=("text", "md", "json"), default="text")
    s.add_argument("--out", metavar="FILE", help="write here instead of printing")
    s.set_defaults(run=_inspect)

    def selection(s: argparse.ArgumentParser) -> None:
        s.add_argument("--blocks", nargs="+", type=int, metavar="I", help="block indices (model.model[I])")
        s.add_argument("--layers", nargs="+", metavar="PATH", help="layer paths, e.g. model.2.cv1.conv")
        s.add_argument("--exclude", nargs="+", default=[], metavar="PATH", help="layers never to prune")

    s = sub.add_parser("analyze", help="what must be pruned together, and what pruning one layer breaks")
    s.add_argument("model", help=model_help)
    selection(s)
    s.add_argument("--format", choices=("md", "json", "dot", "svg"), default="md")
    s.add_argument("--out", metavar="FILE", help="write here instead of printing")
    s.set_defaults(run=_analyze)

    s = sub.add_parser("prune", help="remove channels group by group, verify, write the pruned model")
    s.add_argument("model", help=model_help)
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--ratio",
        type=_ratio,
        metavar="R|auto",
        help="fraction of each group's channels (--global: of all) to remove, e.g. 0.5; auto: the act-* "
        "criteria choose each group's width",
    )
    keep = "keep this fraction of the original's {}, e.g. 0.5 (met within 2%%)"
    how.add_argument("--target-flops", type=float, metavar="F", help=keep.format("FLOPs"))
    how.add_argument("--target-params", type=float, metavar="F", help=keep.format("params"))
    how.add_argument("--plan-in", metavar="PLAN", help="replay the channel choices of a plan file")
    selection(s)
    s.add_argument("--importance", choices=sorted(CRITERIA), default="l1", help="channel ranking")
    s.add_argument(
        "--aggregation",
        choices=[a.value for a in Aggregation],
        default="mean",
        help="combine a channel's values over the group's layers: mean of per-layer normalised (default) "
        "or sum of raw values",
    )
    s.add_argument(
        "--global",
        dest="allocation",
        action="store_const",
        const="global",
        default="local",
        help="rank channels across groups on mean-normalised scores instead of the same ratio per group",
    )
    s.add_argument("--max-ratio", type=float, default=0.9, metavar="R", help="most any group loses (0.9)")
    s.add_argument("--min-channels", type=int, default=1, metavar="N", help="fewest any group keeps (1)")
    s.add_argument("--round-to", type=_round_to, default=1, metavar="N|auto", help=_ROUND_TO_HELP)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", metavar="PRUNED.pt", help="the pruned checkpoint to write (safe: a folder)")
    s.add_argument("--dry-run", action="store_true", help="print the plan per block and write nothing")
    s.add_argument(
        "--save-format",
        choices=("pt", "safe"),
        default="pt",
        help="pt: a plain Ultralytics checkpoint (a pickle); safe: a folder with the architecture as YAML "
        "and the weights as safetensors, loaded without unpickling anything",
    )
    s.add_argument("--plan", metavar="PLAN", help="also write the plan (JSON) here")
    s.add_argument("--no-onnx-check", action="store_true", help="skip the ONNX export check")
    s.add_argument("--data", metavar="DATA.yaml", help="dataset YAML for taylor and act-* (calibration)")
    s.add_argument("--calib-images", type=int, default=64, metavar="N", help="calibration images (64)")
    s.add_argument(
        "--calib-imgsz",
        type=int,
        metavar="N",
        help="calibration image size (default: the model's training size)",
    )
    s.set_defaults(run=_prune)

    s = sub.add_parser("verify", help="check a pruned checkpoint against its original and plan")
    s.add_argument("original", help=model_help)
    s.add_argument("pruned", help="the pruned .pt checkpoint or safe folder")
    s.add_argument("--plan", required=True, metavar="PLAN", help="the plan written by `prune --plan`")
    s.add_argument("--no-onnx-check", action="store_true", help="skip the ONNX export check")
    s.set_defaults(run=_verify)

    s = sub.add_parser("data", help="generate a dataset")
    kinds = s.add_subparsers(dest="kind", required=True, metavar="KIND")
    s = kinds.add_parser("digits", help="detection scenes of scikit-learn's handwritten digits, YOLO format")
    s.add_argument("--out", required=True, metavar="DIR", help="new folder to write (DIR/data.yaml)")
    s.add_argument(
        "--images", type=int, default=500, metavar="N", help="images in all, 20%% of them val (500)"
    )
    s.add_argument("--imgsz", type=int, default=160, metavar="N", help="image side in pixels (160)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(run=_data_digits)

    s = sub.add_parser("finetune", help="fine-tune a pruned checkpoint with the Ultralytics trainer")
    s.add_argument("checkpoint", help="the pruned .pt checkpoint")
    s.add_argument("train", nargs="*", metavar="KEY=VALUE", help="data=DATA.yaml epochs=N and any train key")
    s.add_argument("--teacher", metavar="ORIGINAL.pt", help="distill the head outputs of this unpruned model")
    s.add_argument("--distill-weight", type=float, default=1.0, metavar="W", help="distillation weight (1.0)")
    s.set_defaults(run=_finetune)

    s = sub.add_parser(
        "run", help="prune and fine-tune on a schedule (oneshot|iterative|layerwise), resumable"
    )
    s.add_argument("--out", required=True, metavar="DIR", help="the run folder (new, or the one to resume)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out after its last step")
    _recipe_flags(s)
    s.set_defaults(run=_run)

    s = sub.add_parser(
        "compare", help="run one recipe once per importance criterion, then one table and plot of them all"
    )
    s.add_argument("--out", required=True, metavar="DIR", help="the comparison folder (new, or to resume)")
    s.add_argument("--resume", action="store_true", help="skip finished criteria, continue the rest")
    s.add_argument(
        "--criteria",
        nargs="+",
        metavar="NAME",
        help="importance criteria, run in this order (default: the seed's four methods, act-maxweight "
        f"act-medoid act-maxgamma bn); choose from {', '.join(sorted(CRITERIA))}",
    )
    s.add_argument("--imgsz", type=int, metavar="N", help="benchmark image size (default: the runs' size)")
    s.add_argument("--runs", type=int, default=50, metavar="N", help="timed runs per model, median kept (50)")
    s.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed runs first (10)")
    _recipe_flags(s)
    s.set_defaults(run=_compare)

    s = sub.add_parser("bench", help="params, FLOPs, size, latency and mAP of models side by side")
    s.add_argument(
        "models", nargs="+", metavar="MODEL", help="models to compare; ratios are against the first"
    )
    s.add_argument(
        "--data", metavar="DATA.yaml", help="also validate on this dataset's val split (mAP, P, R)"
    )
    s.add_argument(
        "--imgsz", type=int, default=640, metavar="N", help="image size for FLOPs, export, val (640)"
    )
    s.add_argument("--runs", type=int, default=50, metavar="N", help="timed runs per model, median kept (50)")
    s.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed runs first (10)")
    s.add_argument("--batch", type=int, default=16, metavar="N", help="validation batch size (16)")
    s.add_argument("--simplify", action="store_true", help="run onnxslim over each ONNX export")
    s.add_argument("--out", metavar="FILE.md", help="write the Markdown table here instead of printing it")
    s.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    s.add_argument("--plot", metavar="FILE.png", help="also plot latency and mAP against FLOPs")
    s.set_defaults(run=_bench)

    s = sub.add_parser("sensitivity", help="prune each group alone at several ratios and measure the damage")
    s.add_argument("model", help=model_help)
    s.add_argument("--data", required=True, metavar="DATA.yaml", help="dataset YAML; its val split is scored")
    selection(s)
    s.add_argument(
        "--ratios", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], metavar="R"
    )
    s.add_argument(
        "--metric",
        choices=("loss", "map"),
        default="loss",
        help="loss: validation loss on --images images (fast); map: mAP50-95 on the whole val split (slow)",
    )
    s.add_argument("--importance", choices=sorted(CRITERIA), default="l1", help="which channels go first")
    s.add_argument("--images", type=int, default=32, metavar="N", help="val images for --metric loss (32)")
    s.add_argument(
        "--imgsz", type=int, metavar="N", help="image size for the metric (the model's training size)"
    )
    s.add_argument("--batch", type=int, default=8, metavar="N", help="batch size (8)")
    s.add_argument("--csv", metavar="FILE", help="write every measured point as CSV")
    s.add_argument("--plot", metavar="FILE.png", help="plot the curves, one panel per block")
    s.add_argument(
        "--target-flops", type=float, metavar="F", help="choose per-group ratios keeping F of the FLOPs"
    )
    s.add_argument("--round-to", type=_round_to, default=1, metavar="N|auto", help=_ROUND_TO_HELP)
    s.add_argument(
        "--min-channels", type=int, default=1, metavar="N", help="with --target-flops: fewest kept (1)"
    )
    s.add_argument("--plan", metavar="PLAN", help="write the --target-flops plan here (for prune --plan-in)")
    s.set_defaults(run=_sensitivity)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (argparse's usage errors give 2, like YoloPruneError).

    Example:
        >>> main(["inspect", "yolov8n.yaml", "--format", "json", "--out", "blocks.json"])  # doctest: +SKIP
        0
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    try:
        return args.run(args)
    except YoloPruneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
