"""mAP against measured latency on the runtimes CPU users deploy to: yolov8s pruned to yolov8n's FLOPs
(channels; channels and blocks), to yolov8n's measured latency, and by Torch-Pruning, against both
models trained from scratch, each exported and timed on ONNX Runtime (1 thread, all threads) and
OpenVINO (FP32, INT8), with the mAP of every exported file.

Scope: the runs share the accuracy benchmark's setup and work folder (benchmarks/accuracy.py, its
full setup: digits, 1000 images at 96x96, parent 40 epochs, 20 of fine-tuning), so a run both
benchmarks make (the parent, yolov8n from scratch, yoloprune's FLOPs-target run, Torch-Pruning) is
trained once. Added here:
- `yoloprune-depth`: the recommended setting (Taylor, global) to yolov8n's FLOPs with `depth: 0.3`
  (the 3 of yolov8s' 10 removable bottlenecks that change their input least go whole, then channels);
- `yoloprune-latency`: the recommended setting to yolov8n's latency, `target_latency` as the ratio
  of yolov8n's to yolov8s' median latency measured here first (ONNX Runtime, 1 thread, 640x640),
  met within 5% by the prune's own timing on the same runtime. The parent copy it prunes records
  640 as its image size, so the prune times at 640 like this benchmark (its calibration stays at 96).
Latency at 640x640 (where the accuracy benchmark times), batch 1, models timed in turn; accuracy of
each exported file (ONNX; OpenVINO FP32 and INT8, INT8 calibrated on the train split by NNCF through
Ultralytics' exporter) at the training size, 96, on the val split. Goals: the latency-target prune
beats yolov8n's mAP on every runtime; each pruned model's INT8 is within 1.0 mAP50-95 point of its
FP32. Results: benchmarks/results/pareto.{json,md,png}.

Run (from the repository root; needs the `bench` and `deploy` extras):
    PYTHONPATH=src .venv/bin/python benchmarks/pareto.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported
os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/yoloprune-bench/ultralytics")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/yoloprune-bench/matplotlib")

import torch
from _results import RESULTS, write_results
from accuracy import FULL, QUICK, ROUND_TO, WORK, Arms, cached, digits, run_torch_pruning, train_args

from yoloprune.reports.plots import pyplot, save_figure
from yoloprune.workflows.evaluate import bench
from yoloprune.workflows.recipe import recipe_from_dict
from yoloprune.workflows.schedule import run
from yoloprune.yolo.io import load_model, save_checkpoint

LATENCY_IMGSZ = 640
DEPTH = 0.3
RUNTIMES = {  # column -> (bench latency key, bench export key, title)
    "ort-1": ("ort_cpu_1_thread", "ort_fp32", "ONNX Runtime, 1 thread"),
    "ort-all": ("ort_cpu_all_threads", "ort_fp32", "ONNX Runtime, all threads"),
    "openvino": ("openvino_cpu_fp32_all_threads", "openvino_fp32", "OpenVINO FP32"),
    "openvino-int8": ("openvino_cpu_int8_all_threads", "openvino_int8", "OpenVINO INT8"),
}
TITLES = {
    "large": "{large} from scratch",
    "small": "{small} from scratch",
    "yoloprune": "{large} pruned to {small}'s FLOPs (channels)",
    "yoloprune-depth": "{large} pruned to {small}'s FLOPs (channels + depth " + f"{DEPTH})",
    "yoloprune-latency": "{large} pruned to {small}'s latency (ONNX Runtime, 1 thread)",
    "torch-pruning": "{large} pruned by Torch-Pruning to {small}'s FLOPs",
}


def recipe_run(parent: Path, data: Path, out: Path, s, **amount) -> Path:
    """A one-shot `yoloprune run` in the recommended setting, to `amount`, with `s.finetune` epochs."""
    doc = {
        "version": 1, "schedule": "oneshot", "model": str(parent), "data": str(data), "steps": 1,
        "epochs": s.finetune, "importance": "taylor", "allocation": "global", "round_to": ROUND_TO,
        "calib_imgsz": s.imgsz, "train": train_args(s), **amount,
    }  # fmt: skip
    folder = out / "run"
    return run(
        recipe_from_dict(doc), folder, resume=folder.exists(), log=lambda x: print("   ", x, flush=True)
    ).final


def timed_at(parent: Path, imgsz: int, out: Path) -> Path:
    """A copy of `parent` whose recorded image size is `imgsz` (what a latency target times at)."""
    loaded = load_model(parent)
    ckpt = dict(loaded.ckpt)
    ckpt["train_args"] = {**(ckpt.get("train_args") or {}), "imgsz": imgsz}
    loaded.model.args = {**(getattr(loaded.model, "args", None) or {}), "imgsz": imgsz}
    out.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(loaded.model, out / f"parent-{imgsz}.pt", source_ckpt=ckpt)


def latency_ratio(large: str, small: str, runs: int) -> float:
    """yolov8n's median latency over yolov8s' (ONNX Runtime, 1 thread, 640x640), timed in turn."""
    b = bench(
        [large, small], imgsz=LATENCY_IMGSZ, runtime="ort", threads=1, runs=runs, warmup=3, progress=False
    )
    (key,) = b.rows[0].latency
    return b.rows[1].latency[key].median_ms / b.rows[0].latency[key].median_ms


def measure(s, work: Path) -> dict:
    data = digits(s, work)
    e, f = s.epochs, s.finetune
    arm = Arms(work, s, 6)
    runs, key = arm.runs, {"setup": asdict(s), "train": train_args(s)}
    parent, target = arm.from_scratch(data)  # the same runs as accuracy.py's: both benchmarks share them
    what = f"taylor, global: to {target:.3f} of the FLOPs, {f} epochs, widths in multiples of {ROUND_TO}"
    arm("yoloprune", what, e + f, lambda out: recipe_run(parent, data, out, s, target_flops=target))
    what = f"taylor, global, depth {DEPTH}: to {target:.3f} of the FLOPs, {f} epochs, widths in multiples of "
    what += str(ROUND_TO)
    arm(
        "yoloprune-depth",
        what,
        e + f,
        lambda out: recipe_run(parent, data, out, s, target_flops=target, depth=DEPTH),
    )
    timing = f"{s.small}'s latency over {s.large}'s, ONNX Runtime 1 thread, {LATENCY_IMGSZ}x{LATENCY_IMGSZ}"
    measured = cached(  # timed once: a resumed benchmark keeps the target its latency run was made for
        work / "latency-ratio",
        {"what": timing, **key},
        lambda: {"ratio": latency_ratio(str(parent), runs["small"]["checkpoint"], s.runs)},
    )
    ratio = measured["ratio"]
    what = f"taylor, global: to {ratio:.4f}x of the parent's latency ({timing}), {f} epochs"

    def latency_run(out: Path) -> tuple[Path, dict]:
        final = recipe_run(
            timed_at(parent, LATENCY_IMGSZ, out), data, out, s,
            target_latency=f"{ratio:.4f}x", runtime="ort", threads=1,
        )  # fmt: skip
        history = json.loads((out / "run" / "history.json").read_text())
        return final, {"latency_target": f"{ratio:.4f}x", "history": history}

    arm("yoloprune-latency", what, e + f, latency_run)
    history = json.loads((work / "yoloprune" / "run" / "history.json").read_text())
    goals = [row["flops"] for row in history["steps"] if row["kind"] == "prune"]
    from importlib.metadata import version

    what = f"the same steps' FLOPs with Torch-Pruning {version('torch-pruning')}"
    arm("torch-pruning", what, e + f, lambda out: run_torch_pruning(parent, data, goals, out, s))

    start = time.perf_counter()
    checkpoints = [r["checkpoint"] for r in runs.values()]
    print("timing on ONNX Runtime (1 thread, all threads) and OpenVINO (FP32, INT8)", flush=True)
    ort = bench(checkpoints, imgsz=LATENCY_IMGSZ, runs=s.runs, warmup=3, tensorrt=False)
    ov = bench(
        checkpoints, imgsz=LATENCY_IMGSZ, runtime="openvino", int8=True, data=data, runs=s.runs, warmup=3
    )
    print("accuracy of every exported file at the training size", flush=True)
    ort_acc = bench(checkpoints, imgsz=s.imgsz, runtime="ort", data=data, runs=1, warmup=1)
    ov_acc = bench(checkpoints, imgsz=s.imgsz, runtime="openvino", int8=True, data=data, runs=1, warmup=1)
    for i, r in enumerate(runs.values()):
        r.update(params=ort.rows[i].params, flops=ort.rows[i].flops)
        r["latency"] = {k: t.as_json() for b in (ort, ov) for k, t in b.rows[i].latency.items() if t}
        r["accuracy"] = {
            k: e.accuracy for b in (ort_acc, ov_acc) for k, e in b.rows[i].exports.items() if e.accuracy
        }
    seconds = sum(r["seconds"] for r in runs.values()) + time.perf_counter() - start
    return {
        "setup": asdict(s), "target_flops": target, "latency_ratio": ratio, "depth": DEPTH, "runs": runs,
        "bench": {"ort": ort.settings, "openvino": ov.settings}, "seconds": round(seconds, 1),
    }  # fmt: skip


def point(r: dict, column: str) -> tuple[float | None, float | None]:
    """(median ms, mAP50-95 of the exported file) of a run on one runtime column."""
    lat_key, export, _ = RUNTIMES[column]
    t, acc = r["latency"].get(lat_key), r["accuracy"].get(export)
    return (t["median_ms"] if t else None), (acc["map50_95"] if acc else None)


def title(name: str, setup: dict) -> str:
    return TITLES[name].format(**setup)


def goals(doc: dict) -> list[str]:
    runs, out = doc["runs"], []
    ours, small = runs["yoloprune-latency"], runs["small"]
    for column, (_, _, name) in RUNTIMES.items():
        (t1, m1), (t0, m0) = point(ours, column), point(small, column)
        if m1 is None or m0 is None:
            out.append(f"{name}: not measured")
            continue
        verdict = "beats" if m1 > m0 else "does not beat (goal not met)"
        out.append(
            f"{name}: the latency-target prune {verdict} {doc['setup']['small']}: mAP50-95 {m1:.3f} vs "
            f"{m0:.3f} at {t1:.1f} vs {t0:.1f} ms."
        )
    for name in ("yoloprune", "yoloprune-depth", "yoloprune-latency"):
        (_, fp32), (_, int8) = point(runs[name], "openvino"), point(runs[name], "openvino-int8")
        if fp32 is None or int8 is None:
            continue
        met = "within" if fp32 - int8 <= 0.01 else "not within (goal not met)"
        out.append(f"{name}: INT8 {int8:.3f} vs FP32 {fp32:.3f} mAP50-95, {met} 1.0 point.")
    return out


def markdown(doc: dict, command: str) -> str:
    s, runs = doc["setup"], doc["runs"]
    head = (
        "| run | params | GFLOPs | "
        + " | ".join(f"{t} ms | mAP50-95" for _, _, t in RUNTIMES.values())
        + " |"
    )
    lines = [head, "|---|---|---|" + "---|---|" * len(RUNTIMES)]
    for name, r in runs.items():
        cells = [title(name, s), f"{r['params'] / 1e6:.2f} M", f"{r['flops'] / 1e9:.2f}"]
        for column in RUNTIMES:
            t, m = point(r, column)
            cells += [f"{t:.1f}" if t else "-", f"{m:.3f}" if m is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lat = runs["yoloprune-latency"].get("history", {}).get("steps", [])
    reached = next((row.get("latency") for row in lat if row.get("kind") == "prune"), None)
    reached = f"{reached:.3f}" if isinstance(reached, float) else "not recorded"
    return "\n".join(
        [
            f"# mAP against measured latency: {s['large']} pruned to {s['small']}'s FLOPs and latency",
            "",
            *lines,
            "",
            *(f"- {g}" for g in goals(doc)),
            "",
            f"Latency target: {doc['latency_ratio']:.3f}x of the parent's latency ({s['small']}'s over "
            f"{s['large']}'s, timed here first), the prune's own measured fraction: {reached}. "
            f"FLOPs target {doc['target_flops']:.3f}; depth run: `depth: {doc['depth']}`.",
            f"Digits ({s['images']} images at {s['imgsz']}), {s['epochs']} epochs for the parent, "
            f"{s['finetune']} of fine-tuning per pruned run; accuracy of each exported file at {s['imgsz']}. "
            f"ONNX Runtime: {doc['bench']['ort']['summary']} OpenVINO: {doc['bench']['openvino']['summary']}",
            f"Total {doc['seconds'] / 60:.1f} min on {os.cpu_count()} CPUs. Command: `{command}`.",
            "",
        ]
    )


def plot(doc: dict, path: Path) -> None:
    """One panel per runtime: mAP50-95 against latency, the Pareto front (no run both faster and
    more accurate) joined by a line."""
    plt = pyplot()
    runs = doc["runs"]
    fig, axes = plt.subplots(1, len(RUNTIMES), figsize=(4.2 * len(RUNTIMES), 4.2))
    colors = dict(zip(runs, plt.cm.tab10.colors, strict=False))
    for ax, (column, (_, _, name)) in zip(axes, RUNTIMES.items(), strict=True):
        pts = {n: point(r, column) for n, r in runs.items()}
        pts = {n: p for n, p in pts.items() if p[0] is not None and p[1] is not None}
        for n, (t, m) in pts.items():
            ax.scatter(t, m, s=45, color=colors[n], label=n)
        front = sorted(pts.values())
        best, line = -1.0, []
        for t, m in front:
            if m > best:
                line.append((t, m))
                best = m
        ax.plot(*zip(*line, strict=True), color="gray", lw=1, ls="--")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"ms at {LATENCY_IMGSZ}x{LATENCY_IMGSZ}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mAP50-95 of the exported file")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        f"{doc['setup']['large']} pruned to {doc['setup']['small']}'s FLOPs and latency "
        "(dashed: the Pareto front)"
    )
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the accuracy benchmark's quick setup")
    ap.add_argument("--smoke", action="store_true", help="a tiny setup that proves the code path, no results")
    args = ap.parse_args()
    mode = "smoke" if args.smoke else "quick" if args.quick else ""
    name = "-".join(filter(None, ("pareto", mode)))
    work = (WORK / "-".join(filter(None, ("accuracy", mode)))).resolve()
    torch.manual_seed(0)
    setups = {"smoke": replace(QUICK, images=40, epochs=1, finetune=1, runs=2), "quick": QUICK, "": FULL}
    doc = measure(setups[mode], work)
    command = "PYTHONPATH=src .venv/bin/python benchmarks/pareto.py" + (f" --{mode}" if mode else "")
    text = markdown(doc, command)
    write_results(name, doc, text)
    plot(doc, RESULTS / f"{name}.png")
    print(text)


if __name__ == "__main__":
    main()
