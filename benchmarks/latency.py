"""Latency realised: does a FLOPs cut become a CPU speed-up, on each CPU runtime? yolov8s at 640, pruned
to keep 70%, 50% and 30% of its FLOPs (30%, 50%, 70% reductions), with widths rounded to multiples of 8
and without (the goal), and with `round_to="auto"` (this machine's channel block: 16 with AVX-512F,
else 8), timed in ONNX Runtime (1 thread and all threads) and OpenVINO (FP32 and INT8, 1 thread and
all threads).

Scope: yolov8s is built from its YAML (untrained: latency does not depend on the values) and analysed
once; each variant is `PruneOptions(target_flops=T, allocation="global", round_to=R)` (l1 ranking). All ten
models go through `yoloprune.workflows.evaluate.bench` together, once per runtime: `runtime="ort"`
(Ultralytics' ONNX export, not simplified) and `runtime="openvino", int8=True` (Ultralytics' OpenVINO
export in FP32, and in INT8 by NNCF calibrated on 16 generated digit scenes: latency does not depend on
the calibration images), at batch 1, every model timed in turn within a setting (so load changes hit
them alike), median of `--runs` after `--warmup`. For each pruned model and setting:
    speed-up = latency(yolov8s) / latency(pruned);  FLOPs reduction = FLOPs(yolov8s) / FLOPs(pruned)
    realised = speed-up / FLOPs reduction  (1.0: latency falls exactly as FLOPs do; goal >= 0.9)
    padding = conv multiply-adds with every width padded up to the channel block, as ONNX Runtime's
              NCHWc layout runs them, over the model's own (1.00: nothing padded)
Latency targets (`--targets`, or after the rows above): the same model pruned with
`PruneOptions(target_latency=T, runtime=R, threads=N, allocation="global", round_to="auto")` for
T = 0.7x and 0.5x on ONNX Runtime (1 thread, all threads) and OpenVINO FP32 (1 thread), each then
timed by `bench` against the original in its own setting: target, the prune's own measured latency
(its last check) and `bench`'s, each as a fraction of the original's (goal: within 5%).
The machine's load average is recorded: on a shared machine compare only numbers from one run.
Results: benchmarks/results/latency.{json,md}, or latency_targets.{json,md} with `--targets`
(written atomically).

Run (from the repository root, with no other heavy job on the CPU meanwhile):
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/latency.py [--runs 30] [--warmup 5]
    PYTHONPATH=src .venv/bin/python benchmarks/latency.py --targets [--model yolov8n.yaml --imgsz 320]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
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
TARGETS = (0.7, 0.5)  # target_latency, fractions of the original's measured latency
TARGET_SETTINGS = (("ort", 1), ("ort", None), ("openvino", 1))  # (runtime, threads) of the target rows
SETTINGS = {  # latency key -> column title
    "ort_cpu_1_thread": "ORT 1 thread",
    "ort_cpu_all_threads": "ORT all threads",
    "openvino_cpu_fp32_1_thread": "OpenVINO FP32 1 thread",
    "openvino_cpu_fp32_all_threads": "OpenVINO FP32 all threads",
    "openvino_cpu_int8_1_thread": "OpenVINO INT8 1 thread",
    "openvino_cpu_int8_all_threads": "OpenVINO INT8 all threads",
}


def cpu() -> str:
    """The CPU's model name and whether it has AVX-512F (what sets ONNX Runtime's channel block)."""
    from yoloprune.channel_blocks import channel_multiple, cpuinfo, has_avx512f

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
    from yoloprune.channel_blocks import channel_multiple
    from yoloprune.workflows.data import make_digits
    from yoloprune.workflows.evaluate import bench
    from yoloprune.yolo.api import PruneOptions, analyze, prune

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
        calib = make_digits(Path(work) / "digits", images=20, imgsz=160).yaml
        runtimes = [
            bench(paths, imgsz=640, runs=runs, warmup=warmup, runtime="ort"),
            bench(paths, imgsz=640, runs=runs, warmup=warmup, runtime="openvino", int8=True, data=calib),
        ]
    b = runtimes[0]
    base = b.rows[0]
    latency = [{k: t for r in runtimes for k, t in r.rows[i].latency.items()} for i in range(len(paths))]
    rows = []
    for variant, row, timed in zip(variants, b.rows[1:], latency[1:], strict=True):
        flops_cut = base.flops / row.flops
        doc = {**variant, "flops": row.flops, "flops_reduction": round(flops_cut, 4), "params": row.params}
        for key in SETTINGS:
            speedup = latency[0][key].median_ms / timed[key].median_ms
            doc[key] = {
                "median_ms": round(timed[key].median_ms, 2),
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
            **{k: round(latency[0][k].median_ms, 2) for k in SETTINGS},
        },
        "variants": rows,
        "settings": [r.settings for r in runtimes],
        "cpu": cpu(),
        "channel_block": block,
        "goal": GOAL,
        "seconds": round(time.perf_counter() - start, 1),
    }


def measure_targets(model: str, imgsz: int, runs: int, warmup: int) -> dict:
    """Prune `model` at `imgsz` to each of `TARGETS` of its latency in each of `TARGET_SETTINGS`, and
    time every result with `bench` against the original in that setting."""
    from yoloprune.errors import YoloPruneError
    from yoloprune.runtimes import Precision, Runtime, Setting
    from yoloprune.workflows.evaluate import bench
    from yoloprune.yolo.api import PruneOptions, analyze, prune

    start = time.perf_counter()
    a = analyze(model)
    a = replace(
        a, ckpt={**(a.ckpt or {}), "train_args": {**((a.ckpt or {}).get("train_args") or {}), "imgsz": imgsz}}
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="yoloprune-latency-targets-") as work:
        for runtime, threads in TARGET_SETTINGS:
            setting = Setting(Runtime(runtime), Precision.FP32, threads)
            for target in TARGETS:
                row = {"setting": setting.title, "key": setting.key, "target": target}
                options = PruneOptions(
                    target_latency=f"{target}x", runtime=runtime, threads=threads, allocation="global",
                    round_to="auto",
                )  # fmt: skip
                began = time.perf_counter()
                try:
                    r = prune(model, options, analysis=a, check_onnx=False)
                except YoloPruneError as e:
                    rows.append({**row, "error": str(e), "seconds": round(time.perf_counter() - began, 1)})
                    continue
                path = Path(work) / f"{runtime}_{threads}_{target}.pt"
                r.save(path)
                b = bench(
                    [model, str(path)],
                    imgsz=imgsz,
                    runs=runs,
                    warmup=warmup,
                    runtime=runtime,
                    threads=threads,
                )
                original, pruned = (x.latency[setting.key].median_ms for x in b.rows)
                budget = r.plan.budget
                rows.append(
                    {
                        **row,
                        "original_ms": round(budget.original, 3),
                        "estimate": round(budget.estimate, 4),
                        "reached": round(budget.reached, 4),
                        "bench": round(pruned / original, 4),
                        "bench_ms": [round(original, 3), round(pruned, 3)],
                        "flops": round(r.flops[1] / r.flops[0], 4),
                        "seconds": round(time.perf_counter() - began, 1),
                    }
                )
    return {
        "model": model,
        "imgsz": imgsz,
        "targets": rows,
        "cpu": cpu(),
        "load": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.perf_counter() - start, 1),
    }


def targets_markdown(doc: dict) -> list[str]:
    """The latency-target table: target, the prune's measured fraction, `bench`'s, FLOPs kept."""
    lines = [
        f"## Latency targets: {doc['model']} at {doc['imgsz']}x{doc['imgsz']}",
        "",
        "`PruneOptions(target_latency=T, runtime=R, threads=N, allocation='global', round_to='auto')`; "
        "fractions of the original's latency in the same setting. prune: its own last check; bench: "
        "`bench` timing the saved model against the original afterwards (**outside 5%** in bold).",
        "",
        "| setting | target | original ms | estimate | prune measured | bench measured | FLOPs kept | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["targets"]:
        if "error" in r:
            lines.append(
                f"| {r['setting']} | {r['target']:.2f} | error: {r['error']} | | | | | {r['seconds']} |"
            )
            continue
        off = abs(r["bench"] - r["target"]) > 0.05 * r["target"]
        bench_cell = f"**{r['bench']:.3f}**" if off else f"{r['bench']:.3f}"
        lines.append(
            f"| {r['setting']} | {r['target']:.2f} | {r['original_ms']:.2f} | {r['estimate']:.3f} | "
            f"{r['reached']:.3f} | {bench_cell} | {r['flops']:.3f} | {r['seconds']} |"
        )
    lines += [
        "",
        f"CPU: {doc['cpu']}; load average {', '.join(map(str, doc['load']))} when it finished (a shared "
        f"machine: other jobs ran meanwhile). Total {doc['seconds']} s.",
        "",
    ]
    return lines


def markdown(doc: dict) -> str:
    base = doc["baseline"]
    lines = [
        "# Latency realised: CPU speed-up over FLOPs reduction, per runtime",
        "",
        f"{doc['model']} at {doc['imgsz']}x{doc['imgsz']}, batch 1: {base['flops'] / 1e9:.2f} GFLOPs; "
        + ", ".join(f"{title} {base[key]:.1f} ms" for key, title in SETTINGS.items())
        + ". Pruned with `PruneOptions(target_flops=T, allocation='global', round_to=R)`; realised = "
        f"speed-up / FLOPs reduction (goal >= {doc['goal']}, **below** it in bold); padding = conv work "
        f"with widths padded to the channel block ({doc['channel_block']}), as the CPU runtimes' blocked "
        "layouts run them, over the model's own. Each cell: speed-up over yolov8s in the same setting, "
        "then realised.",
        "",
        "| FLOPs cut | round-to | GFLOPs | FLOPs reduction | padding | "
        + " | ".join(SETTINGS.values())
        + " |",
        "|---|---|---|---|---|" + "---|" * len(SETTINGS),
    ]
    ms = [
        "| model | " + " | ".join(f"{t} ms" for t in SETTINGS.values()) + " |",
        "|---|" + "---|" * len(SETTINGS),
        f"| {doc['model']} | " + " | ".join(f"{base[k]:.1f}" for k in SETTINGS) + " |",
    ]
    for v in doc["variants"]:
        resolved = v["round_to_resolved"]
        rounding = str(resolved) if v["round_to"] == resolved else f"{v['round_to']} ({resolved})"
        cells = [
            f"{v['reduction']:.0%}",
            rounding,
            f"{v['flops'] / 1e9:.2f}",
            f"{v['flops_reduction']:.2f}x",
            f"{v['padding']:.3f}x",
        ]
        for key in SETTINGS:
            t = v[key]
            realised = f"{t['realised']:.3f}" if t["realised"] >= doc["goal"] else f"**{t['realised']:.3f}**"
            cells.append(f"{t['speedup']:.2f}x, {realised}")
        lines.append("| " + " | ".join(cells) + " |")
        name = f"{v['reduction']:.0%} cut, round-to {rounding}"
        ms.append(f"| {name} | " + " | ".join(f"{v[k]['median_ms']:.1f}" for k in SETTINGS) + " |")
    lines += [
        "",
        "Median latency, ms:",
        "",
        *ms,
        "",
        *(s["summary"] for s in doc["settings"]),
        f"CPU: {doc['cpu']}.",
        f"Total {doc['seconds']} s. Generated by benchmarks/latency.py.",
        "",
        *(targets_markdown(doc["latency_targets"]) if "latency_targets" in doc else []),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model (median kept)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs per model first")
    parser.add_argument("--targets", action="store_true", help="only the latency-target rows")
    parser.add_argument("--model", default=MODEL, help="the latency-target rows' model")
    parser.add_argument("--imgsz", type=int, default=640, help="the latency-target rows' image size")
    args = parser.parse_args()

    from _results import write_results

    if args.targets:
        doc = measure_targets(args.model, args.imgsz, args.runs, args.warmup)
        text = "\n".join([*targets_markdown(doc), "Generated by benchmarks/latency.py --targets.", ""])
        write_results("latency_targets", doc, text)
        print(text)
        return
    doc = measure(args.runs, args.warmup)
    doc["latency_targets"] = measure_targets(args.model, args.imgsz, args.runs, args.warmup)
    write_results("latency", doc, markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
