"""The `yoloprune` command line: a thin layer over the library.

    yoloprune inspect MODEL [--format text|md|json] [--out FILE]
    yoloprune analyze MODEL [--blocks I ...] [--layers PATH ...] [--exclude PATH ...]
                            [--format md|json|dot|svg] [--out FILE]
    yoloprune prune MODEL (--ratio R|auto | --target-flops F | --target-params F | --plan-in PLAN
                          | --target-latency MS|Fx [--runtime ort|openvino [--int8]] [--threads N])
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
                    [--runtime ort|openvino|tensorrt [--int8]] [--threads N] [--simplify]
                    [--out FILE.md] [--json FILE] [--plot FILE.png]
    yoloprune sensitivity MODEL --data DATA.yaml [--blocks ...] [--layers ...] [--exclude ...]
                          [--ratios R ...] [--metric loss|map] [--importance NAME] [--images N] [--imgsz N]
                          [--csv FILE] [--plot FILE.png] [--target-flops F [--round-to N|auto] [--plan PLAN]]

Exit codes: 0 success, 1 a verification failed (`verify`), 2 a problem with the inputs (the
message on stderr says what to do), 3 `run` or `compare` finished but did not reach its target (a
pruning step lost more than max_drop; the result is the last step kept). `prune` writes nothing
unless every check passes.

Stdout carries only the command's document (a report, a table, JSON, Markdown, DOT, SVG); warnings,
progress and "wrote FILE" lines go to stderr. A reader that closes stdout early (`| head -1`) ends the
command quietly with status 141 (128 + SIGPIPE, what a shell shows for `cat` there).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import typing
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any, Literal

from yoloprune import progress
from yoloprune.choices import CRITERIA_NAMES
from yoloprune.cli import commands
from yoloprune.declare import arms, describe, enum_of, hints, spec_of
from yoloprune.errors import OptionError, YoloPruneError, plain
from yoloprune.pruning.options import AMOUNT, PruneOptions
from yoloprune.runtimes import Runtime
from yoloprune.workflows.recipe import OPTION_KEYS, Recipe

# Fields set by a switch rather than a value: the flag, and the value it sets.
SWITCHES = {"allocation": ("--global", "global"), "int8": ("--int8", True)}
BROKEN_PIPE = 141  # 128 + SIGPIPE: the status a shell shows for `cat` when its reader stops early
_TARGET_EPILOG = (
    "exit status: 0 done; 2 a problem with the inputs; "
    f"{commands.TARGET_NOT_REACHED} the run finished but did not reach its target: a pruning step lost "
    "more than max_drop mAP50-95, so {} keeps the last step within max_drop as final.pt (the unpruned "
    "baseline when none is) and says so in the log and history.json"
)


def flag(name: str) -> str:
    """The flag of a declared field: its switch, or `--` and the name with dashes."""
    return SWITCHES.get(name, (f"--{name.replace('_', '-')}",))[0]


def _parse_as(hint: Any, kind: str) -> Callable[[str], object]:
    """An argparse type for a field of type `hint`: a number, or the Literal words it also takes."""
    words = {a for arm in arms(hint) if typing.get_origin(arm) is Literal for a in typing.get_args(arm)}
    number = next((a for a in arms(hint) if a in (int, float)), str)
    text_too = str in arms(hint)  # e.g. `target_latency`: 12 or "0.5x"; the field checks the text

    def parse(text: str) -> object:
        if text in words:
            return text
        try:
            return number(text)
        except ValueError:
            if text_too:
                return text
            raise argparse.ArgumentTypeError(f"expected {kind}; got {text!r}") from None

    return parse


def add_fields(parser: Any, cls: type, names: Iterable[str]) -> None:
    """A flag per field of the dataclass `cls` named in `names`, generated from its declaration: the
    parser from its type (a list: `nargs="+"`; an Enum or `choices`: choices), the help from its
    metadata, with the field's default. Every flag defaults to None, "not given", so a command builds
    its request from the flags given and the fields' own defaults."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        f, spec, hint = fields[name], spec_of(fields[name]), hints(cls)[name]
        text = spec.help.replace("%", "%%")
        default = None if f.default is dataclasses.MISSING else f.default
        if default not in (None, ()) and default is not False:  # a switch says nothing when off
            text += f" ({default.value if isinstance(default, Enum) else default})"
        if name in SWITCHES:
            switch, value = SWITCHES[name]
            parser.add_argument(switch, dest=name, action="store_const", const=value, help=text)
            continue
        types_ = arms(hint)
        enum = enum_of(hint)
        item = next((typing.get_args(a)[0] for a in types_ if typing.get_origin(a) is tuple), None)
        kwargs: dict[str, Any] = {"metavar": spec.metavar}
        if enum is not None:
            kwargs = {"choices": [e.value for e in enum]}
        elif spec.choices is not None:
            kwargs = {"choices": list(spec.choices())}
        elif item is not None:
            kwargs.update(nargs="+", type=int if item is int else str)
        elif any(a in (int, float) for a in types_):
            kwargs["type"] = _parse_as(hint, spec.kind or describe(hint))
        parser.add_argument(flag(name), dest=name, help=text, **kwargs)


def _options(parser: argparse.ArgumentParser, names: Iterable[str], *, plan_in: bool = False) -> None:
    """`PruneOptions` fields as flags; the amount (`AMOUNT`) as alternatives, one of them required
    with `plan_in` (which adds `--plan-in`, the other way to say what to remove)."""
    names = list(names)
    how = parser.add_mutually_exclusive_group(required=plan_in)
    add_fields(how, PruneOptions, [n for n in names if n in AMOUNT])
    if plan_in:
        how.add_argument("--plan-in", metavar="PLAN", help="replay the channel choices of a plan file")
    add_fields(parser, PruneOptions, [n for n in names if n not in AMOUNT])


SELECTION = ("blocks", "layers", "exclude")
OPTIONS = tuple(f.name for f in dataclasses.fields(PruneOptions))


def _recipe_flags(s: argparse.ArgumentParser) -> None:
    """The recipe as a YAML or as flags (its fields and the `PruneOptions` it holds), shared by `run`
    and `compare`."""
    s.add_argument("items", nargs="*", metavar="RECIPE.yaml|KEY=VALUE", help="a recipe, or train keys")
    s.add_argument("--verbose", action="store_true", help="also show Ultralytics' training output")
    own = [f.name for f in dataclasses.fields(Recipe) if f.name not in ("version", "options", "train")]
    add_fields(s, Recipe, own)
    _options(s, [n for n in OPTIONS if n in OPTION_KEYS])


# Arguments of the library functions `run` and `compare` call that the command line spells otherwise.
_RUN_WORDS = {"folder": "--out", "recipe": "recipe (a YAML or the schedule flags)"}


def _command(
    s: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], words: dict[str, str] | None = None
) -> None:
    """Give subcommand `s` its function, and the flag of each field it takes (for `OptionError`s):
    the flag whose `dest` is the field, or `words` for an argument named otherwise. A flag that takes
    no value is a switch: the value it sets (`True` for `--resume`) is worded as the flag alone."""
    actions = [a for a in s._actions if a.option_strings]
    flags = {a.dest: a.option_strings[-1] for a in actions} | (words or {})
    switches = {a.dest: repr(a.const) for a in actions if a.nargs == 0 and a.const is not None}
    s.set_defaults(run=run, flags=flags, switches=switches)


def flag_words(
    flags: dict[str, str], switches: dict[str, str] | None = None
) -> Callable[[str, str | None], str]:
    """How the command line names a field in an `OptionError`: `--max-ratio 2`; a switch (`switches`:
    the value it sets, as repr writes it) as itself when the value is the one it sets (`--global`,
    `--resume`); a field the command has no flag for as a KEY=VALUE word (`data=d.yaml`), or by its
    name (`train`)."""
    switches = switches or {}

    def render(name: str, value: str | None) -> str:
        if name not in flags:
            return name if value is None else f"{name}={plain(value)}"
        if name in switches and value is not None:
            return flags[name] if plain(value) == plain(switches[name]) else f"{name} {plain(value)}"
        return flags[name] if value is None else f"{flags[name]} {plain(value)}"

    return render


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
    _command(s, commands.cmd_inspect)

    s = sub.add_parser("analyze", help="what must be pruned together, and what pruning one layer breaks")
    s.add_argument("model", help=model_help)
    add_fields(s, PruneOptions, SELECTION)
    s.add_argument("--format", choices=("md", "json", "dot", "svg"), default="md")
    s.add_argument("--out", metavar="FILE", help="write here instead of printing")
    _command(s, commands.cmd_analyze)

    s = sub.add_parser("prune", help="remove channels group by group, verify, write the pruned model")
    s.add_argument("model", help=model_help)
    _options(s, [n for n in OPTIONS if n not in ("calib_images", "calib_imgsz")], plan_in=True)
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
    add_fields(s, PruneOptions, ("calib_images", "calib_imgsz"))
    _command(s, commands.cmd_prune)

    s = sub.add_parser("verify", help="check a pruned checkpoint against its original and plan")
    s.add_argument("original", help=model_help)
    s.add_argument("pruned", help="the pruned .pt checkpoint or safe folder")
    s.add_argument("--plan", required=True, metavar="PLAN", help="the plan written by `prune --plan`")
    s.add_argument("--no-onnx-check", action="store_true", help="skip the ONNX export check")
    _command(s, commands.cmd_verify)

    s = sub.add_parser("data", help="generate a dataset")
    kinds = s.add_subparsers(dest="kind", required=True, metavar="KIND")
    s = kinds.add_parser("digits", help="detection scenes of scikit-learn's handwritten digits, YOLO format")
    s.add_argument("--out", required=True, metavar="DIR", help="new folder to write (DIR/data.yaml)")
    s.add_argument(
        "--images", type=int, default=500, metavar="N", help="images in all, 20%% of them val (500)"
    )
    s.add_argument("--imgsz", type=int, default=160, metavar="N", help="image side in pixels (160)")
    s.add_argument("--seed", type=int, default=0)
    _command(s, commands.cmd_data_digits)

    s = sub.add_parser("finetune", help="fine-tune a pruned checkpoint with the Ultralytics trainer")
    s.add_argument("checkpoint", help="the pruned .pt checkpoint")
    s.add_argument("train", nargs="*", metavar="KEY=VALUE", help="data=DATA.yaml epochs=N and any train key")
    s.add_argument("--teacher", metavar="ORIGINAL.pt", help="distill the head outputs of this unpruned model")
    s.add_argument("--distill-weight", type=float, default=1.0, metavar="W", help="distillation weight (1.0)")
    _command(s, commands.cmd_finetune)

    s = sub.add_parser(
        "run",
        help="prune and fine-tune on a schedule (oneshot|iterative|layerwise), resumable",
        epilog=_TARGET_EPILOG.format("the run"),
    )
    s.add_argument("--out", required=True, metavar="DIR", help="the run folder (new, or the one to resume)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out after its last step")
    _recipe_flags(s)
    _command(s, commands.cmd_run, _RUN_WORDS)

    s = sub.add_parser(
        "compare",
        help="run one recipe once per importance criterion, then one table and plot of them all",
        epilog=_TARGET_EPILOG.format("each criterion's run"),
    )
    s.add_argument("--out", required=True, metavar="DIR", help="the comparison folder (new, or to resume)")
    s.add_argument("--resume", action="store_true", help="skip finished criteria, continue the rest")
    s.add_argument(
        "--criteria",
        nargs="+",
        metavar="NAME",
        help="importance criteria, run in this order (default: the seed's four methods, act-maxweight "
        f"act-medoid act-maxgamma bn); choose from {', '.join(CRITERIA_NAMES)}",
    )
    s.add_argument("--imgsz", type=int, metavar="N", help="benchmark image size (default: the runs' size)")
    s.add_argument("--runs", type=int, default=50, metavar="N", help="timed runs per model, median kept (50)")
    s.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed runs first (10)")
    _recipe_flags(s)
    _command(s, commands.cmd_compare, _RUN_WORDS)

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
    s.add_argument(
        "--runtime",
        choices=[r.value for r in Runtime],
        help="time (and with --data, validate) the file Ultralytics exports for this runtime alone: "
        "ort (ONNX Runtime, CPU), openvino (CPU), tensorrt (GPU); default: ONNX Runtime, TensorRT FP16 "
        "where it can run, and the checkpoint's accuracy",
    )
    s.add_argument(
        "--int8",
        action="store_true",
        help="with --runtime openvino or tensorrt: also INT8, calibrated on --data's train split",
    )
    s.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads for the CPU runtimes (default: 1, and all)"
    )
    s.add_argument("--simplify", action="store_true", help="run onnxslim over each ONNX export")
    s.add_argument("--out", metavar="FILE.md", help="write the Markdown table here instead of printing it")
    s.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    s.add_argument("--plot", metavar="FILE.png", help="also plot latency and mAP against FLOPs")
    _command(s, commands.cmd_bench)

    s = sub.add_parser("sensitivity", help="prune each group alone at several ratios and measure the damage")
    s.add_argument("model", help=model_help)
    s.add_argument("--data", required=True, metavar="DATA.yaml", help="dataset YAML; its val split is scored")
    add_fields(s, PruneOptions, SELECTION)
    s.add_argument(
        "--ratios", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], metavar="R"
    )
    s.add_argument(
        "--metric",
        choices=("loss", "map"),
        default="loss",
        help="loss: validation loss on --images images (fast); map: mAP50-95 on the whole val split (slow)",
    )
    add_fields(s, PruneOptions, ["importance"])
    s.add_argument("--images", type=int, default=32, metavar="N", help="val images for --metric loss (32)")
    s.add_argument(
        "--imgsz", type=int, metavar="N", help="image size for the metric (the model's training size)"
    )
    s.add_argument("--batch", type=int, default=8, metavar="N", help="batch size (8)")
    s.add_argument("--csv", metavar="FILE", help="write every measured point as CSV")
    s.add_argument("--plot", metavar="FILE.png", help="plot the curves, one panel per block")
    add_fields(s, PruneOptions, ("target_flops", "round_to", "min_channels"))
    s.add_argument("--plan", metavar="PLAN", help="write the --target-flops plan here (for prune --plan-in)")
    _command(s, commands.cmd_sensitivity)
    return p


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    try:
        # stdout: the document only; logs, warnings and the progress of long phases: stderr
        with commands.document_on_stdout(), progress.reporting():
            return args.run(args)
    except OptionError as e:  # a field's name, worded as this command's flag
        print(f"error: {e.worded(flag_words(args.flags, args.switches))}", file=sys.stderr)
        return 2
    except YoloPruneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (argparse's usage errors give 2, like YoloPruneError).

    Example:
        >>> main(["inspect", "yolov8n.yaml", "--format", "json", "--out", "blocks.json"])
        0
    """
    try:
        code = _run(argv)
        sys.stdout.flush()  # now, not at exit: a reader that stopped early shows here
        return code
    except BrokenPipeError:  # the reader closed stdout early (`yoloprune ... | head -1`): stop quietly
        with contextlib.suppress(AttributeError, OSError, ValueError):  # no file descriptor: nothing to do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes it at exit
        return BROKEN_PIPE
