"""What each `yoloprune` subcommand does, given its parsed arguments (`cli/parser.py` defines the arguments).

Each `cmd_*` function runs one subcommand and returns its exit code; library imports happen inside
them, so `yoloprune --help` stays fast. Outputs are written atomically.

While a command runs (`document_on_stdout`), stdout carries only its document: write that with
`_print` or `_emit`; print() goes to stderr (progress, notes, "wrote FILE"), as do Ultralytics' logger
and progress bars, so `yoloprune inspect m.yaml --format json | jq` reads JSON and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from yoloprune.atomic import atomic_write
from yoloprune.errors import YoloPruneError
from yoloprune.runtimes import Runtime
from yoloprune.text import plural, word

if TYPE_CHECKING:
    from yoloprune.pruning.options import PruneOptions
    from yoloprune.workflows.recipe import Recipe
    from yoloprune.yolo.api import PruneResult

# `run` and `compare` finished, but a pruning step lost more than max_drop, so the run kept an earlier
# step and its result does not reach the recipe's target.
TARGET_NOT_REACHED = 3


_stdout: TextIO | None = None  # the real stdout while `document_on_stdout` holds


@contextlib.contextmanager
def document_on_stdout() -> Iterator[None]:
    """Keep stdout for the command's document (`_print`, `_emit`) while the block runs: print(),
    Ultralytics' logger (which writes to stdout) and its progress bars go to stderr meanwhile."""
    global _stdout
    saved, stdout, imported = _stdout, sys.stdout, "ultralytics" in sys.modules
    with contextlib.redirect_stdout(sys.stderr):
        from ultralytics.utils import LOGGER  # a first import logs (new settings file) to stderr too

        handlers = [h for h in LOGGER.handlers if type(h) is logging.StreamHandler]
        before = [h.stream if imported else stdout for h in handlers]  # stdout: Ultralytics' default
        for handler in handlers:
            handler.setStream(sys.stderr)
        _stdout = stdout
        try:
            yield
        finally:
            _stdout = saved
            for handler, stream in zip(handlers, before, strict=True):
                handler.setStream(stream)


def _print(text: str) -> None:
    """Write `text` as part of the command's document: to stdout, a newline added if missing."""
    stream = _stdout or sys.stdout
    stream.write(text if text.endswith("\n") else text + "\n")


def _emit(data: str | bytes, out: str | None) -> None:
    """Print `data` as the command's document, or write it atomically to `out`."""
    if out is None:
        if isinstance(data, bytes):
            stream = _stdout or sys.stdout
            stream.flush()
            stream.buffer.write(data)
        else:
            _print(data)
        return
    if isinstance(data, bytes):
        atomic_write(out, lambda tmp: tmp.write_bytes(data))
    else:
        atomic_write(out, lambda tmp: tmp.write_text(data, encoding="utf-8"))
    print(f"wrote {out}", file=sys.stderr)


def _options(args: argparse.Namespace) -> PruneOptions:
    """The `PruneOptions` of the option flags given; the fields' own defaults for the rest."""
    from yoloprune.pruning.options import PruneOptions

    fields = PruneOptions.__dataclass_fields__
    return PruneOptions(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise YoloPruneError(f"Cannot read {what} {path}: {e.strerror or e}.") from e


def cmd_inspect(args: argparse.Namespace) -> int:
    from yoloprune.reports import inventory as render
    from yoloprune.yolo import api, inventory

    a = api.analyze(args.model, run_probe=False)
    blocks = inventory.inventory(a)
    if args.format == "json":
        text = render.render_json(blocks, a.source, a.task)
    elif args.format == "md":
        text = render.render_markdown(blocks, a.source)
    else:
        text = render.render_text(blocks)
    _emit(text, args.out)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from yoloprune.reports import analysis as report
    from yoloprune.reports import analysis_dot
    from yoloprune.yolo import api

    o = _options(args)
    a = api.analyze(args.model, exclude=o.exclude)
    r = report.analysis_report(a, o.blocks, o.layers, o.exclude)
    if args.format == "json":
        _emit(report.to_json(r), args.out)
    elif args.format == "dot":
        _emit(analysis_dot.to_dot(r), args.out)
    elif args.format == "svg":
        _emit(analysis_dot.to_svg(analysis_dot.to_dot(r)), args.out)
    else:
        _emit(report.to_markdown(r), args.out)
    return 0


def _change(before: int, after: int) -> str:
    return f"{after / before:.2f}x, {100 * (after - before) / before:+.1f}%" if before else "n/a"


def _prune_summary(result: PruneResult, replayed: str | None = None, head: str = "Pruned") -> str:
    """What a prune did and the evidence that it is right (a row per check, ok or FAIL); `replayed`
    names the plan file the channels came from, if any."""
    from yoloprune.pruning.choose import select_groups

    graph, plan, opts = result.analysis.graph, result.plan, result.options
    in_scope = [g for g in select_groups(graph, result.scope) if g.prunable]
    pruned = sum(1 for g in in_scope if plan.removed.intersection(g.classes))
    pinned = len(select_groups(graph, result.scope)) - len(in_scope)
    (p0, p1), (f0, f1) = result.params, result.flops
    eq, st = result.equivalence, result.structural
    kept = f"{plural(pinned, 'pinned group')} left as {word(pinned, 'it is', 'they are')}"
    left = f" ({kept})" if pinned else ""
    rows = [
        ("groups", f"{pruned} of {plural(len(in_scope), 'prunable group')} pruned{left}"),
        ("convs", f"{plural(len(plan.convs), 'conv')} narrowed"),
        ("params", f"{p0:,} -> {p1:,}  ({_change(p0, p1)})"),
        (
            "FLOPs",
            f"{f0 / 1e9:.2f} G -> {f1 / 1e9:.2f} G at {result.imgsz}x{result.imgsz}  ({_change(f0, f1)})",
        ),
        (
            "equivalence",
            f"max rel error {eq.max_rel_error:.2g} on its own weights, {st.max_rel_error:.2g} on "
            f"signal-carrying weights (tolerance {eq.tolerance:g}): {_ok(eq.ok and st.ok)}",
        ),
        *((c.name, f"{c.detail}: {_ok(c.ok)}") for c in result.checks if c.name not in EQUIVALENCE),
    ]
    if result.splits:
        rows.insert(3, ("split", _depth_search(result)))
    b = plan.budget
    if b is not None and b.metric.value == "latency":
        ms = b.original
        reached = f"{b.reached * ms:.3g} ms on {b.setting}, {b.reached:.3f} of the original's {ms:.3g} ms"
        estimated = f"the latency model estimated {b.estimate * ms:.3g} ms"
        rows.insert(4, ("latency", f"{reached} (target {b.target * ms:.3g} ms, met within 5%; {estimated})"))
    elif b is not None:
        reached = f"{b.reached:.3f} of the original {b.metric.value} (target {b.target:g}"
        rows.insert(4, ("target", f"{reached}, met within 2%; the cost model estimated {b.estimate:.3f})"))
    scope = "every block" if result.scope is None else ", ".join(result.scope)
    rounding = f", widths rounded to multiples of {opts.round_to}" if opts.round_to > 1 else ""
    target = opts.target
    amount = f"ratio {opts.ratio}" if target is None else f"{target[0].value} target {target[1]:g}"
    if opts.latency is not None:
        amount = f"latency target {opts.latency} on {Runtime(opts.runtime or 'ort').title}"
    chosen = f"{scope}; {amount}, {opts.allocation.value} allocation, importance {opts.importance}{rounding}"
    how = f"replaying {replayed}" if replayed else chosen
    return "\n".join([f"{head} {result.analysis.source} ({how}):", *(f"  {k:<12}{v}" for k, v in rows)])


def _depth_search(result: PruneResult) -> str:
    """`depth="auto"`: the split chosen and every split tried, with its prediction distortion."""
    removed = len(result.depth.removed) if result.depth else 0
    feasible = [s for s in result.splits if s.distortion is not None]
    chosen = next(s for s in feasible if s.blocks == removed)
    least = min(feasible, key=lambda s: (s.distortion, s.blocks))
    why = "the least"
    if least is not chosen:
        at = f"{least.distortion:.3g} at {least.blocks}"
        why = f"the fewest blocks within one standard error of the least ({at})"
    tried = ", ".join(f"{s.blocks}: {s.distortion:.3g}" for s in feasible)
    left = len(result.splits) - len(feasible)
    cannot = f"; {plural(left, 'split')} could not meet the target" if left else ""
    return (
        f"auto: {plural(removed, 'block')} removed, then channels; prediction distortion "
        f"{chosen.distortion:.3g} ± {chosen.error:.2g}, {why} (blocks: distortion tried {tried}{cannot})"
    )


EQUIVALENCE = ("equivalence", "structural")  # the summary's equivalence row shows both
# How to do without a check, in the CLI's words (the library names the keyword instead).
SKIP = {"ONNX": "If you will not export the model to ONNX, rerun with --no-onnx-check to write it."}


def _ok(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def cmd_prune(args: argparse.Namespace) -> int:
    from yoloprune.yolo import api
    from yoloprune.yolo.check import refusal

    if args.out is None and not args.dry_run:
        raise YoloPruneError("--out PRUNED.pt is required, or --dry-run to print the plan and write nothing.")
    if args.out is not None:  # before the (slow) prune
        api.check_outputs(args.out, args.plan, args.save_format)
    plan_in = _read_text(args.plan_in, "plan") if args.plan_in else None
    options = None if plan_in else _options(args)  # a replayed plan records its own options
    result = api.prune(args.model, options, plan=plan_in, data=args.data, check_onnx=not args.no_onnx_check)
    head = "Dry run: would prune" if args.dry_run else "Pruned"
    _print(_prune_summary(result, replayed=args.plan_in, head=head))
    if args.dry_run:
        from yoloprune.reports.costs import block_costs, render_blocks

        first = result.depth.original if result.depth else result.original  # before blocks went too
        _print(render_blocks(block_costs(first, result.model, result.imgsz)))
    if not result.ok:
        report = args.plan_in or "this command line, which makes the same plan"
        raise YoloPruneError(refusal(result.failed, SKIP, report))
    if args.dry_run:
        _print("dry run: nothing written")
        return 0
    result.save(args.out, args.save_format, plan=args.plan)
    print(f"wrote {', '.join(filter(None, (args.out, args.plan)))}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from yoloprune.yolo import api

    plan = _read_text(args.plan, "plan")
    v = api.verify(args.original, args.pruned, plan, check_onnx=not args.no_onnx_check)
    eq = v.equivalence
    if not eq.informative:
        print(
            f"note: {args.original}'s outputs barely depend on its input (signal {eq.signal:.2g}; untrained "
            "weights?), so the equivalence row alone proves little; the weights and structural rows do.",
            file=sys.stderr,
        )
    _print(f"Verifying {args.pruned} against {args.original} with {args.plan}:")
    for c in v.checks:
        _print(f"  {c.name:<12}{'ok  ' if c.ok else 'FAIL'}  {c.detail}")
    _print(f"FAILED: {', '.join(c.name for c in v.failed)}" if v.failed else "all checks passed")
    return 1 if v.failed else 0


def cmd_data_digits(args: argparse.Namespace) -> int:
    from yoloprune.workflows.data import make_digits

    made = make_digits(args.out, images=args.images, imgsz=args.imgsz, seed=args.seed)
    counts = ", ".join(
        f"{split} {plural(n, 'image')}, {plural(made.boxes[split], 'box', 'boxes')}"
        for split, n in made.images.items()
    )
    print(f"wrote {made.yaml} ({counts}; 10 classes, {args.imgsz}x{args.imgsz})", file=sys.stderr)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from yoloprune.workflows.finetune import finetune, parse_train_args

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
    _print(
        f"Fine-tuned {args.checkpoint} for {plural(epochs, 'epoch')}, widths and {ft.params:,} params "
        f"kept: mAP50-95 "
        f"{m.map50_95:.3f}, mAP50 {m.map50:.3f}, precision {m.precision:.3f}, recall {m.recall:.3f}"
    )
    print(f"wrote {ft.best} (plain Ultralytics checkpoint)", file=sys.stderr)
    return 0


def _recipe(args: argparse.Namespace) -> Recipe | None:
    """The recipe of `run` and `compare`: a YAML among the words, or the recipe flags (its keys)."""
    from yoloprune.workflows.recipe import KEYS, recipe_from_cli

    return recipe_from_cli(args.items, {k: v for k, v in vars(args).items() if k in KEYS})


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from yoloprune.workflows.history import render_history
    from yoloprune.workflows.schedule import run

    result = run(_recipe(args), args.out, resume=args.resume, log=_log, verbose=args.verbose)
    _print(render_history(result.history))
    _print(f"result {result.final}; history {Path(args.out) / 'history'}.json, .csv, .png")
    if result.target_reached:
        return 0
    print(
        f"warning: target not reached (exit status {TARGET_NOT_REACHED}): {result.stopped}", file=sys.stderr
    )
    return TARGET_NOT_REACHED


def cmd_compare(args: argparse.Namespace) -> int:
    from yoloprune.workflows.compare import compare_criteria

    c = compare_criteria(
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
    _print(c.bench.gains_markdown(c.labels, "criterion"))
    missed = [
        f"{name}: {r.stopped}" for name, r in zip(c.criteria, c.runs, strict=True) if not r.target_reached
    ]
    if not missed:
        return 0
    print(
        f"warning: target not reached (exit status {TARGET_NOT_REACHED}) by {'; '.join(missed)}",
        file=sys.stderr,
    )
    return TARGET_NOT_REACHED


def cmd_bench(args: argparse.Namespace) -> int:
    from yoloprune.workflows.evaluate import bench

    b = bench(
        args.models,
        imgsz=args.imgsz,
        data=args.data,
        runs=args.runs,
        warmup=args.warmup,
        batch=args.batch,
        simplify=args.simplify,
        runtime=args.runtime,
        int8=args.int8,
        threads=args.threads,
    )
    _emit(b.to_markdown(), args.out)
    if args.json:
        _emit(b.to_json(), args.json)
    if args.plot:
        b.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from yoloprune.reports.sensitivity import plan_json, render_plan
    from yoloprune.workflows import sensitivity
    from yoloprune.yolo import api

    o = _options(args)
    if args.plan and o.target_flops is None:
        raise YoloPruneError("--plan writes the plan for --target-flops F; pass --target-flops as well.")
    a = api.analyze(args.model, exclude=o.exclude)
    s = sensitivity.sensitivity(
        args.model,
        args.data,
        blocks=o.blocks,
        layers=o.layers,
        exclude=o.exclude,
        ratios=args.ratios,
        metric=args.metric,
        importance=o.importance,
        images=args.images,
        imgsz=args.imgsz,
        batch=args.batch,
        analysis=a,
    )
    _print(s.to_text())
    if args.csv:
        _emit(s.to_csv(), args.csv)
    if args.plot:
        s.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if o.target_flops is None:
        return 0
    plan = sensitivity.plan_for_target(s, a, o.target_flops, o.round_to, o.min_channels)
    _print(render_plan(s, plan, a))
    if args.plan:
        _emit(plan_json(s, plan, o.round_to, o.min_channels), args.plan)
        print(
            f"replay it with: yoloprune prune {args.model} --plan-in {args.plan} --out pruned.pt",
            file=sys.stderr,
        )
    return 0
