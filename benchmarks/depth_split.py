"""How many whole blocks? yolov8s pruned to yolov8n's FLOPs with channels only, with `depth: 0.3`
(the user's fraction), and with `depth: auto` (yoloprune searches the split of blocks and channels
whose predictions differ least from the parent's), each fine-tuned the same; and whether that
distortion, measured before fine-tuning, orders the runs as their mAP after fine-tuning does.

Scope: the runs share the accuracy benchmark's setup and work folder (benchmarks/accuracy.py, full
setup: digits, 1000 images at 96x96, parent 40 epochs, 20 of fine-tuning; the recommended setting,
Taylor and global allocation, widths rounded to this CPU's channel block), so the parent and the
channels-only and `depth: 0.3` runs the Pareto benchmark made are read back, not trained again. For
every run: the blocks removed, the prediction distortion of the pruned model before fine-tuning
(`yoloprune.yolo.request.prediction_distortion`: the mean over the 16 calibration images the
search uses), and mAP50-95 after fine-tuning (Ultralytics validation on the val split at 96). The
`auto` run also reports every split its search tried; the smaller model trained from scratch for
as many epochs is the bar. Results: benchmarks/results/depth_split.{json,md,png}.

`--pair yolo11`: yolo11s pruned to yolo11n's FLOPs the same three ways (attention pruned as well), in
the YOLO11 accuracy benchmark's work folder. Results: benchmarks/results/depth_split-yolo11.*.

Run (from the repository root; needs the `bench` extra):
    PYTHONPATH=src .venv/bin/python benchmarks/depth_split.py [--pair yolo11]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported
os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/yoloprune-bench/ultralytics")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/yoloprune-bench/matplotlib")

from _results import RESULTS, write_results
from accuracy import PAIRS, ROUND_TO, WORK, Arms, Setup, digits
from pareto import DEPTH, recipe_run

from yoloprune.reports.plots import pyplot, save_figure
from yoloprune.yolo.dataset import calibration_batches
from yoloprune.yolo.io import load_model
from yoloprune.yolo.request import DISTORTION_IMAGES, prediction_distortion, predictions
from yoloprune.yolo.validate import evaluate

ARMS = {  # name -> (the words the Pareto benchmark keys its run by, recipe amount besides the target)
    "yoloprune": ("taylor, global: to {target:.3f} of the FLOPs", {}),
    "yoloprune-depth": (f"taylor, global, depth {DEPTH}: to {{target:.3f}} of the FLOPs", {"depth": DEPTH}),
    "yoloprune-depth-auto": (  # blocks ranked by the distortion of removing each alone
        "taylor, global, depth auto (blocks ranked by distortion, one-standard-error rule): "
        "to {target:.3f} of the FLOPs",
        {"depth": "auto"},
    ),
}
TITLES = {
    "yoloprune": "channels only",
    "yoloprune-depth": f"depth {DEPTH}",
    "yoloprune-depth-auto": "depth auto",
}


def plan_of(run: Path) -> dict:
    """The plan of a one-shot `yoloprune run`'s prune step."""
    return json.loads((run / "run" / "steps" / "step1.plan.json").read_text())


def measure(s: Setup, work: Path, prefix: str = "") -> dict:
    """The runs (in `work`, each folder named `prefix` + its name: a prefix keeps them apart from
    another benchmark's runs of the same name there) and what they measure."""
    data = digits(s, work)
    arm = Arms(work, s, 2 + len(ARMS))
    parent, target = arm.from_scratch(data)
    for name, (words, amount) in ARMS.items():
        what = words.format(target=target) + f", {s.finetune} epochs, widths in multiples of {ROUND_TO}"
        arm(
            prefix + name,
            what,
            s.epochs + s.finetune,
            lambda out, a=amount: recipe_run(parent, data, out, s, target_flops=target, **a),
        )
    images = [(b["img"],) for b in calibration_batches(data, "detect", s.imgsz, DISTORTION_IMAGES)]
    reference = predictions(load_model(parent).model, images)
    start = time.perf_counter()
    runs = {}
    for name in ARMS:
        r, folder = arm.runs[prefix + name], work / (prefix + name)
        plan = plan_of(folder)
        pruned = load_model(folder / "run" / "steps" / "step1.pruned.pt").model
        runs[name] = {
            **r,
            "removed_blocks": plan.get("removed_blocks", []),
            "depth_search": plan.get("depth_search"),
            "distortion": prediction_distortion(pruned, images, reference).mean,
            "map50_95": evaluate(r["checkpoint"], data, imgsz=s.imgsz).map50_95,
        }
    small = {
        **arm.runs["small"],
        "map50_95": evaluate(arm.runs["small"]["checkpoint"], data, imgsz=s.imgsz).map50_95,
    }
    seconds = sum(r["seconds"] for r in runs.values()) + time.perf_counter() - start
    return {
        "setup": asdict(s),
        "target_flops": target,
        "runs": runs,
        "small": small,
        "seconds": round(seconds, 1),
    }


def markdown(doc: dict, command: str) -> str:
    s, runs = doc["setup"], doc["runs"]
    lines = [
        f"# How many blocks: {s['large']} pruned to {s['small']}'s FLOPs, channels and blocks",
        "",
        "| run | blocks removed | distortion before fine-tuning | mAP50-95 after |",
        "|---|---|---|---|",
    ]
    for name, r in runs.items():
        lines.append(
            f"| {TITLES[name]} | {len(r['removed_blocks'])} | {r['distortion']:.3f} | {r['map50_95']:.3f} |"
        )
    small = doc["small"]
    lines.append(
        f"| {s['small']} from scratch ({small['epochs']} epochs) | - | - | {small['map50_95']:.3f} |"
    )
    search = runs["yoloprune-depth-auto"]["depth_search"] or []
    tried = ", ".join(
        f"{t['blocks']}: {t['distortion']:.3f}" if t["distortion"] is not None else f"{t['blocks']}: -"
        for t in search
    )
    by_distortion = sorted(runs, key=lambda n: runs[n]["distortion"])
    by_map = sorted(runs, key=lambda n: -runs[n]["map50_95"])
    agree = "the same order" if by_distortion == by_map else "a different order"
    lines += [
        "",
        f"- The `auto` search tried (blocks: distortion) {tried}.",
        f"- Least distortion first: {', '.join(TITLES[n] for n in by_distortion)}; highest mAP first: "
        f"{', '.join(TITLES[n] for n in by_map)} ({agree}).",
        "",
        f"Digits set ({s['images']} images, {s['imgsz']}x{s['imgsz']}); parent {s['epochs']} epochs, "
        f"each pruned run fine-tuned {s['finetune']} epochs after a one-shot prune to "
        f"{doc['target_flops']:.3f} of the parent's FLOPs (Taylor, global, widths in multiples of "
        f"{ROUND_TO}). Distortion: the pruned model's predictions against the parent's on 16 calibration "
        "images (mean relative RMS error per output channel). "
        f"Total {doc['seconds'] / 60:.1f} min. Command: `{command}`.",
    ]
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> None:
    """Left: the `auto` search's distortion for every split it tried (the chosen one ringed); right:
    mAP50-95 of each run after fine-tuning, the smaller model's from scratch dashed."""
    plt = pyplot()
    runs, small = doc["runs"], doc["small"]
    fig, (curve, bars) = plt.subplots(1, 2, figsize=(11, 4.2))
    tried = [t for t in runs["yoloprune-depth-auto"]["depth_search"] or [] if t["distortion"] is not None]
    chosen = len(runs["yoloprune-depth-auto"]["removed_blocks"])
    curve.plot([t["blocks"] for t in tried], [t["distortion"] for t in tried], "o-", color="tab:blue")
    best = [t for t in tried if t["blocks"] == chosen]
    curve.scatter([chosen], [best[0]["distortion"]], s=160, facecolors="none", edgecolors="tab:red", zorder=3)
    curve.set_xlabel("whole blocks removed before the channels")
    curve.set_ylabel("prediction distortion before fine-tuning")
    curve.set_title("depth auto: the splits tried (ringed: chosen)", fontsize=10)
    names = list(runs)[::-1]
    score = [runs[n]["map50_95"] for n in names]
    lo = round(min([*score, small["map50_95"]]) - 0.02, 2)
    bars.barh([TITLES[n] for n in names], [s - lo for s in score], left=lo, color="tab:green")
    for y, s in enumerate(score):
        bars.text(s + 0.001, y, f"{s:.3f}", va="center")
    bars.axvline(small["map50_95"], color="gray", ls="--", lw=1)
    bars.set_xlim(lo, max([*score, small["map50_95"]]) + 0.01)
    bars.set_xlabel(f"mAP50-95 after fine-tuning (dashed: {doc['setup']['small']} from scratch)")
    for ax in (curve, bars):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{doc['setup']['large']} pruned to {doc['setup']['small']}'s FLOPs: how many blocks")
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--pair", choices=PAIRS, default="yolov8", help="yolov8s -> yolov8n (default) or yolo11s -> yolo11n"
    )
    args = ap.parse_args()
    other = args.pair != "yolov8"
    # yolov8: the Pareto benchmark's runs are read back; yolo11: apart from the accuracy benchmark's
    doc = measure(PAIRS[args.pair].full, WORK / ("accuracy" + f"-{args.pair}" * other), "split-" * other)
    name = "depth_split" + f"-{args.pair}" * other
    command = "PYTHONPATH=src .venv/bin/python benchmarks/depth_split.py" + f" --pair {args.pair}" * other
    text = markdown(doc, command)
    print(text)
    write_results(name, doc, text)
    plot(doc, RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
