"""Latency realised: does a FLOPs cut become a CPU speed-up? yolov8s at 640, pruned to keep 70%, 50% and
30% of its FLOPs (30%, 50%, 70% reductions), with widths rounded to multiples of 8 and without (the
goal), and with `round_to="auto"` (this machine's channel block: 16 with AVX-512F, else 8).

Scope: yolov8s is built from its YAML (untrained: latency does not depend on the values) and analysed
once; each variant is `PruneOptions(target_flops=T, allocation="global", round_to=R)` (l1 ranking). All ten
models go through `yoloprune.yolo.evaluate.bench` together: Ultralytics' ONNX export (not simplified),
ONNX Runtime on the CPU at batch 1, 1 thread and all threads, every model timed in turn (so load changes
hit them alike), median of `--runs` after `--warmup`. For each pruned model:
    speed-up = latency(yolov8s) / latency(pruned);  FLOPs reduction = FLOPs(yolov8s) / FLOPs(pruned)
    realised = speed-up / FLOPs reduction  (1.0: latency falls exactly as FLOPs do; goal >= 0.9)
    padding = conv multiply-adds with every width padded up to the channel block, as ONNX Runtime's
              NCHWc layout runs them, over the model's own (1.00: nothing padded)
The machine's load average is recorded: on a shared machine compare only numbers from one run.
Results: benchmarks/results/latency.{json,md} (written atomically).

Run (from the repository root, with no other heavy job on the CPU meanwhile):
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/latency.py [--runs 30] [--warmup 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported
os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/yoloprune-bench/ultralytics")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/yoloprune-bench/matplotlib")

MODEL = "yolov8s.yaml"
KEEP = (0.7, 0.5, 0.3)  # fraction of FLOPs kept: 30%, 50%, 70% reductions
ROUND_TO = (1, 8, "auto")
GOAL = 0.9
SETTINGS = {"ort_cpu_1_thread": "1 thread", "ort_cpu_all_threads": "all threads"}


def cpu() -> str:
    """The CPU's model name and whether it has AVX-512F (what sets ONNX Runtime's channel block)."""
    from yoloprune._hardware import channel_multiple, cpuinfo, has_avx512f

    isa = "AVX-512F" if has_avx512f() else "no AVX-512F"
    return f"{cpuinfo().get('model name', 'unknown CPU')}, {isa} (channel block {channel_multiple()})"


def padding(model: nn.Module, imgsz: int, block: int) -> float:
    """Conv multiply-adds at `imgsz` with each conv's widths padded up to `block` (an input narrower
    than a block stays as it is), over the unpadded ones: the extra work ONNX Runtime's NCHWc layout does."""
    out_hw: dict[nn.Conv2d, int] = {}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks = [
        c.register_forward_hook(lambda m, i, o: out_hw.__setitem__(m, o.shape[-2:].numel())) for c in convs
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, imgsz, imgsz))
    finally:
        for h in hooks:
            h.remove()
    own = padded = 0
    for c in convs:
        out, inp = c.out_channels, c.in_channels // c.groups
        per = c.kernel_size[0] * c.kernel_size[1] * out_hw[c]  # multiply-adds per (out, in) pair
        own += out * inp * per
        padded += -(-out // block) * block * (inp if inp < block else -(-inp // block) * block) * per
    return padded / own


def measure(runs: int, warmup: int) -> dict:
    from yoloprune._hardware import channel_multiple
    from yoloprune.yolo.api import PruneOptions, analyze, prune
    from yoloprune.yolo.evaluate import bench

    start = time.perf_counter()
    a = analyze(MODEL)
    block = channel_multiple()
    variants = []
    with tempfile.TemporaryDirectory(prefix="yoloprune-latency-") as work:
        paths = [MODEL]
        for round_to in ROUND_TO:
            for keep in KEEP:
                options = PruneOptions(target_flops=keep, allocation="global", round_to=round_to)
                r = prune(MODEL, options, analysis=a)
                path = Path(work) / f"keep{keep}_round{round_to}.pt"
                r.save(path)
                paths.append(str(path))
                variants.append(
                    {
                        "keep": keep,
                        "reduction": round(1 - keep, 2),
                        "round_to": round_to,
                        "round_to_resolved": r.options.round_to,
                        "padding": round(padding(r.model, 640, block), 4),
                    }
                )
        b = bench(paths, imgsz=640, runs=runs, warmup=warmup, tensorrt=False)
    base = b.rows[0]
    rows = []
    for variant, row in zip(variants, b.rows[1:], strict=True):
        flops_cut = base.flops / row.flops
        doc = {**variant, "flops": row.flops, "flops_reduction": round(flops_cut, 4), "params": row.params}
        for key in SETTINGS:
            speedup = base.latency[key].median_ms / row.latency[key].median_ms
            doc[key] = {
                "median_ms": round(row.latency[key].median_ms, 2),
                "speedup": round(speedup, 4),
                "realised": round(speedup / flops_cut, 4),
            }
        rows.append(doc)
    return {
        "model": MODEL,
        "imgsz": 640,
        "baseline": {
            "flops": base.flops,
            "params": base.params,
            **{k: round(base.latency[k].median_ms, 2) for k in SETTINGS},
        },
        "variants": rows,
        "settings": b.settings,
        "cpu": cpu(),
        "channel_block": block,
        "goal": GOAL,
        "seconds": round(time.perf_counter() - start, 1),
    }


def markdown(doc: dict) -> str:
    base = doc["baseline"]
    lines = [
        "# Latency realised: ONNX Runtime CPU speed-up over FLOPs reduction",
        "",
        f"{doc['model']} at {doc['imgsz']}x{doc['imgsz']}, batch 1: {base['flops'] / 1e9:.2f} GFLOPs, "
        f"{base['ort_cpu_1_thread']:.1f} ms on 1 thread, {base['ort_cpu_all_threads']:.1f} ms on all "
        "threads. "
        "Pruned with `PruneOptions(target_flops=T, allocation='global', round_to=R)`; realised = speed-up / "
        "FLOPs "
        f"reduction (goal >= {doc['goal']}); padding = conv work with widths padded to the channel block "
        f"({doc['channel_block']}), as ONNX Runtime's NCHWc layout runs them, over the model's own.",
        "",
        "| FLOPs cut | round-to | GFLOPs | FLOPs reduction | padding | 1 thread ms | speed-up | realised "
        "| all threads ms | speed-up | realised |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in doc["variants"]:
        resolved = v["round_to_resolved"]
        cells = [
            f"{v['reduction']:.0%}",
            str(resolved) if v["round_to"] == resolved else f"{v['round_to']} ({resolved})",
            f"{v['flops'] / 1e9:.2f}",
            f"{v['flops_reduction']:.2f}x",
            f"{v['padding']:.3f}x",
        ]
        for key in SETTINGS:
            t = v[key]
            mark = "" if t["realised"] >= doc["goal"] else " (below goal)"
            cells += [f"{t['median_ms']:.1f}", f"{t['speedup']:.2f}x", f"**{t['realised']:.3f}**{mark}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        doc["settings"]["summary"],
        f"CPU: {doc['cpu']}.",
        f"Total {doc['seconds']} s. Generated by benchmarks/latency.py.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model (median kept)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs per model first")
    args = parser.parse_args()

    from _results import write_results

    doc = measure(args.runs, args.warmup)
    write_results("latency", doc, markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
