"""Memory of yoloprune: peak for a large model, and growth over repeated prune-verify cycles.

Scope: every measurement runs in its own fresh subprocess, so one cannot inflate another.
- peak: `analyze` (trace, groups, probe) then `prune` at ratio 0.5 with both verifications, on yolov8x
  built from its YAML; peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) in total and
  above the size after the model was built. The trace runs on a 64x64 input whatever the training size
  (channel coupling does not depend on the image size), so the peak is set by copies of the weights.
- cycles, same model: `--cycles` times, `analyze` + `prune` (ratio 0.5, verified) of the same yolov8n;
  the current RSS (VmRSS) after each cycle, after `gc.collect()`. A leak shows as a positive slope of the
  least-squares line through cycles 5..N (the first cycles warm up allocator pools and caches).
- cycles, iterative: `--cycles` steps, each analyzing the previous step's pruned model and pruning 5% of
  every prunable group more; the model shrinks, so RSS should fall or stay flat.
Results: benchmarks/results/memory.{json,md} (written atomically).

Run (from the repository root):
    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/memory.py [--peak-model yolov8x.yaml]
        [--cycle-model yolov8n.yaml] [--cycles 50]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported, here and in children
os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/yoloprune-bench/ultralytics")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/yoloprune-bench/matplotlib")

MARKER = "MEMORY-RESULT "
LIMIT_MB = 2048


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def rss_mb() -> float:
    """The current resident set size (VmRSS), after a garbage collection."""
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS in /proc/self/status")


def slope(ys: list[float], skip: int = 5) -> float:
    """Least-squares slope of ys[skip:] per step (MB per cycle)."""
    ys = ys[skip:] if len(ys) > skip + 2 else ys
    n = len(ys)
    mx, my = (n - 1) / 2, sum(ys) / n
    den = sum((x - mx) ** 2 for x in range(n))
    return sum((x - mx) * (y - my) for x, y in enumerate(ys)) / den if den else 0.0


def measure_peak(config: str) -> dict:
    import torch

    from yoloprune.yolo.api import PruneOptions, analyze, prune
    from yoloprune.yolo.io import load_model

    imports = rss_mb()  # torch alone is ~650 MB of this
    start = time.perf_counter()
    model = load_model(config).model
    built = peak_rss_mb()
    a = analyze(model)
    analyzed = peak_rss_mb()
    r = prune(model, PruneOptions(0.5), analysis=a)
    return {
        "model": config,
        "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "rss_imports_mb": imports,
        "rss_built_mb": built,
        "peak_after_analyze_mb": analyzed,
        "peak_mb": peak_rss_mb(),
        "ok": r.equivalence.ok and r.structural.ok,
        "params_after": r.params[1],
        "seconds": round(time.perf_counter() - start, 1),
    }


def measure_cycles(config: str, cycles: int, iterative: bool) -> dict:
    from yoloprune.yolo.api import PruneOptions, analyze, prune
    from yoloprune.yolo.io import load_model

    model = load_model(config).model
    rss, seconds, params = [rss_mb()], [], []
    for _ in range(cycles):
        start = time.perf_counter()
        result = prune(model, PruneOptions(0.05 if iterative else 0.5), analysis=analyze(model))
        assert result.equivalence.ok and result.structural.ok
        params.append(result.params[1])
        if iterative:
            model = result.model
        del result
        seconds.append(time.perf_counter() - start)
        rss.append(rss_mb())
    return {
        "model": config,
        "mode": "iterative 5% steps" if iterative else "same model, ratio 0.5",
        "cycles": cycles,
        "rss_mb": rss,
        "slope_mb_per_cycle": round(slope(rss[1:]), 3),
        "growth_mb": round(rss[-1] - rss[1], 1),
        "params": [params[0], params[-1]],
        "seconds_per_cycle": round(sum(seconds) / len(seconds), 2),
        "peak_mb": peak_rss_mb(),
    }


def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if lines:
        return json.loads(lines[-1][len(MARKER) :])
    return {"error": f"exit {done.returncode}: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"}


def markdown(doc: dict) -> str:
    p = doc["peak"]
    rows = [
        "| measurement | model | result |",
        "|---|---|---|",
        f"| peak RSS, analyze + prune 0.5 + both verifications | {p.get('model')} ({p.get('params', 0):,} "
        f"params) | {p.get('peak_mb')} MB (after the imports: {p.get('rss_imports_mb')} MB; model built: "
        f"{p.get('rss_built_mb')} MB; after analyze: {p.get('peak_after_analyze_mb')} MB; limit "
        f"{LIMIT_MB} MB: {'ok' if p.get('peak_mb', LIMIT_MB + 1) < LIMIT_MB else 'EXCEEDED'}; "
        f"{p.get('seconds')} s) |",
    ]
    for c in doc["cycles"]:
        rss = c.get("rss_mb") or [0]
        rows.append(
            f"| RSS over {c.get('cycles')} analyze + prune-verify cycles, {c.get('mode')} | {c.get('model')} "
            f"| {rss[1] if len(rss) > 1 else '-'} MB after cycle 1, {rss[-1]} MB after the last; slope "
            f"{c.get('slope_mb_per_cycle')} MB/cycle (cycles 5..N); {c.get('seconds_per_cycle')} s/cycle; "
            f"params {c.get('params')} |"
        )
    errors = [f"- {d['error']}" for d in (p, *doc["cycles"]) if "error" in d]
    return "\n".join(
        [
            "# Memory: peak and growth over repeated cycles",
            "",
            f"{doc['cpu_count']} CPU cores; total {doc['total_seconds']} s; every row measured in its own "
            "fresh subprocess. Peak = ru_maxrss; per-cycle RSS = VmRSS after gc.collect(). A leak would "
            "show as a steady positive slope.",
            "Generated by benchmarks/memory.py.",
            "",
            *rows,
            "",
            *errors,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak-model", default="yolov8x.yaml")
    parser.add_argument("--cycle-model", default="yolov8n.yaml")
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # one measurement
    args = parser.parse_args()
    if args.child:
        kind, config, *rest = args.child
        try:
            out = (
                measure_peak(config)
                if kind == "peak"
                else measure_cycles(config, int(rest[0]), kind == "iter")
            )
        except Exception as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        print(MARKER + json.dumps(out), flush=True)
        return
    from _results import write_results

    start = time.perf_counter()
    peak = run_child("peak", args.peak_model)
    print(f"peak: {peak}", flush=True)
    cycles = []
    for kind in ("same", "iter"):
        cycles.append(run_child(kind, args.cycle_model, str(args.cycles)))
        print(f"{kind}: { ({k: v for k, v in cycles[-1].items() if k != 'rss_mb'}) }", flush=True)
    doc = {"cpu_count": os.cpu_count(), "total_seconds": round(time.perf_counter() - start, 1)}
    doc.update(peak=peak, cycles=cycles)
    write_results("memory", doc, markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
