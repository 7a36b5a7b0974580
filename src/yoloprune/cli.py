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
import os
import sys
from collections.abc import Callable, Sequence

from yoloprune import _commands as commands
from yoloprune import progress
from yoloprune.choices import CRITERIA_NAMES, Aggregation
from yoloprune.errors import YoloPruneError
from yoloprune.runtimes import Runtime


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
BROKEN_PIPE = 141  # 128 + SIGPIPE: the status a shell shows for `cat` when its reader stops early
_TARGET_EPILOG = (
    "exit status: 0 done; 2 a problem with the inputs; "
    f"{commands.TARGET_NOT_REACHED} the run finished but did not reach its target: a pruning step lost "
    "more than max_drop mAP50-95, so {} keeps the last step within max_drop as final.pt (the unpruned "
    "baseline when none is) and says so in the log and history.json"
)


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
    s.add_argument("--importance", choices=CRITERIA_NAMES, help="channel ranking (l1)")
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
    s.set_defaults(run=commands.cmd_inspect)

    def selection(s: argparse.ArgumentParser) -> None:
        s.add_argument("--blocks", nargs="+", type=int, metavar="I", help="block indices (model.model[I])")
        s.add_argument("--layers", nargs="+", metavar="PATH", help="layer paths, e.g. model.2.cv1.conv")
        s.add_argument("--exclude", nargs="+", default=[], metavar="PATH", help="layers never to prune")

    s = sub.add_parser("analyze", help="what must be pruned together, and what pruning one layer breaks")
    s.add_argument("model", help=model_help)
    selection(s)
    s.add_argument("--format", choices=("md", "json", "dot", "svg"), default="md")
    s.add_argument("--out", metavar="FILE", help="write here instead of printing")
    s.set_defaults(run=commands.cmd_analyze)

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
    s.add_argument("--importance", choices=CRITERIA_NAMES, default="l1", help="channel ranking")
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
    s.set_defaults(run=commands.cmd_prune)

    s = sub.add_parser("verify", help="check a pruned checkpoint against its original and plan")
    s.add_argument("original", help=model_help)
    s.add_argument("pruned", help="the pruned .pt checkpoint or safe folder")
    s.add_argument("--plan", required=True, metavar="PLAN", help="the plan written by `prune --plan`")
    s.add_argument("--no-onnx-check", action="store_true", help="skip the ONNX export check")
    s.set_defaults(run=commands.cmd_verify)

    s = sub.add_parser("data", help="generate a dataset")
    kinds = s.add_subparsers(dest="kind", required=True, metavar="KIND")
    s = kinds.add_parser("digits", help="detection scenes of scikit-learn's handwritten digits, YOLO format")
    s.add_argument("--out", required=True, metavar="DIR", help="new folder to write (DIR/data.yaml)")
    s.add_argument(
        "--images", type=int, default=500, metavar="N", help="images in all, 20%% of them val (500)"
    )
    s.add_argument("--imgsz", type=int, default=160, metavar="N", help="image side in pixels (160)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(run=commands.cmd_data_digits)

    s = sub.add_parser("finetune", help="fine-tune a pruned checkpoint with the Ultralytics trainer")
    s.add_argument("checkpoint", help="the pruned .pt checkpoint")
    s.add_argument("train", nargs="*", metavar="KEY=VALUE", help="data=DATA.yaml epochs=N and any train key")
    s.add_argument("--teacher", metavar="ORIGINAL.pt", help="distill the head outputs of this unpruned model")
    s.add_argument("--distill-weight", type=float, default=1.0, metavar="W", help="distillation weight (1.0)")
    s.set_defaults(run=commands.cmd_finetune)

    s = sub.add_parser(
        "run",
        help="prune and fine-tune on a schedule (oneshot|iterative|layerwise), resumable",
        epilog=_TARGET_EPILOG.format("the run"),
    )
    s.add_argument("--out", required=True, metavar="DIR", help="the run folder (new, or the one to resume)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out after its last step")
    _recipe_flags(s)
    s.set_defaults(run=commands.cmd_run)

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
    s.set_defaults(run=commands.cmd_compare)

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
    s.set_defaults(run=commands.cmd_bench)

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
    s.add_argument("--importance", choices=CRITERIA_NAMES, default="l1", help="which channels go first")
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
    s.set_defaults(run=commands.cmd_sensitivity)
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


if __name__ == "__main__":
    sys.exit(main())
