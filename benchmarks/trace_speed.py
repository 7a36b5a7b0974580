"""Trace and prune speed of yoloprune against Torch-Pruning 1.6.1 on yolov8n/s/m/l/x (built from YAML).

Scope: per model, one subprocess times both tools, interleaved op by op over `--repeats` rounds
after a warm-up round (so both see the same load from other jobs on the cores), and reports the
median and minimum of each op; then one fresh subprocess per tool runs each op once and reports
its peak memory, i.e. the peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`),
in total and above the size after the model was built. Ops:
- yoloprune, on its own example input (1, 3, 64, 64): `trace` + `build_groups` (no probe);
  `analyze` (with the probe); `prune(..., analysis=a)` (choose, apply, both verifications, params
  and FLOPs); and the bare step `choose` + `apply_plan` + `fix_attributes`.
- Torch-Pruning, on (1, 3, 640, 640) as in its YOLOv8 example: first on the stock model
  (`DependencyGraph().build_dependency`, then a MagnitudePruner 50% step; errors are recorded),
  then as its example does it: every C2f rewritten without its split, the Detect head ignored,
  group L2 magnitude importance; timed are the DependencyGraph build (also at 64x64, yoloprune's
  input size, for reference), the pruner's construction (which builds its own graph) and `step()`.
Both use L2 magnitude importance and ratio 0.5. Results: benchmarks/results/trace_speed.{json,md}
(written atomically).

Run (from the repository root; needs the `bench` extra: pip install torch-pruning==1.6.1):
    PYTHONPATH=src .venv/bin/python benchmarks/trace_speed.py [--repeats 5] [--models yolov8n.yaml ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported, here and in children
os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/yoloprune-bench/ultralytics")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/yoloprune-bench/matplotlib")

import torch
from _torch_pruning import magnitude_pruner, split_free
from torch import nn

from yoloprune.errors import first_line

MODELS = tuple(f"yolov8{s}.yaml" for s in "nsmlx")
MARKER = "TRACE-SPEED-RESULT "
TP_INPUT = (1, 3, 640, 640)


Op = tuple[Callable[[object], object], Callable[[], object]]  # (timed fn, untimed setup giving its arg)


def run_ops(ops: dict[str, Op], repeats: int) -> dict[str, float]:
    """Run every op once per round, interleaved, for a warm-up round plus `repeats` timed rounds;
    returns `NAME_s` (median seconds) and `NAME_min_s` (least disturbed run) per op."""
    times: dict[str, list[float]] = {name: [] for name in ops}
    for round_ in range(repeats + 1):
        for name, (fn, setup) in ops.items():
            arg = setup()
            start = time.perf_counter()
            fn(arg)
            if round_:
                times[name].append(time.perf_counter() - start)
            del arg  # free this run's copies before the next setup, so peak memory is one run's
    out = {}
    for name, ts in times.items():
        if ts:
            out[f"{name}_s"], out[f"{name}_min_s"] = round(statistics.median(ts), 4), round(min(ts), 4)
    return out


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def build(config: str) -> nn.Module:
    from yoloprune.yolo.io import load_model

    torch.manual_seed(0)
    return load_model(config).model


def _none() -> None:
    return None


def yoloprune_ops(model: nn.Module) -> tuple[dict[str, Op], Callable[[], dict]]:
    """yoloprune's timed ops on `model`, and a function describing its 50% result."""
    from yoloprune.graph.groups import build_groups
    from yoloprune.graph.trace import trace
    from yoloprune.pruning.apply import apply_plan
    from yoloprune.pruning.choose import choose, select_groups
    from yoloprune.pruning.plan import PruneOptions
    from yoloprune.yolo.adapter import ULTRALYTICS
    from yoloprune.yolo.api import analyze, prune

    inputs = ULTRALYTICS.example_inputs(model)
    a = analyze(model)

    def step(pruned: nn.Module) -> None:
        plan = choose(a.graph, a.model, select_groups(a.graph, None), PruneOptions(0.5, importance="l2"))
        apply_plan(pruned, a.graph, plan.removed)
        ULTRALYTICS.fix_attributes(pruned)

    ops = {
        "trace_groups": (
            lambda _: build_groups(trace(model, inputs, ULTRALYTICS)),
            _none,
        ),
        "analyze": (lambda _: analyze(model), _none),
        "prune": (lambda _: prune(model, PruneOptions(0.5, importance="l2"), analysis=a), _none),
        "step": (step, lambda: copy.deepcopy(model)),
    }

    def info() -> dict:
        result = prune(model, PruneOptions(0.5, importance="l2"), analysis=a)
        return {
            "input": list(inputs[0].shape),
            "groups": len(a.graph.groups),
            "prunable": sum(g.prunable for g in a.graph.groups),
            "params": list(result.params),
            "ok": result.equivalence.ok and result.structural.ok,
        }

    return ops, info


def _error(e: Exception) -> str:
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"
    return f"{first_line(e)} (at {where})"


def _attempt(fn: Callable[[], object]) -> str:
    try:
        fn()
    except Exception as e:
        return _error(e)
    return "ok"


def torch_pruning_ops(stock: nn.Module) -> tuple[dict[str, Op], Callable[[], dict]]:
    """Torch-Pruning's timed ops, following its YOLOv8 example, and a function describing what
    it does on the stock model and the 50% result of the example's recipe."""
    import torch_pruning as tp

    x = torch.randn(*TP_INPUT, generator=torch.Generator().manual_seed(0))

    def pruner(model: nn.Module) -> tp.pruner.MetaPruner:
        return magnitude_pruner(model, x, 0.5)

    def graph(model: nn.Module, inputs: torch.Tensor) -> None:
        tp.DependencyGraph().build_dependency(model, example_inputs=inputs, verbose=False)

    model = split_free(copy.deepcopy(stock))
    with torch.no_grad():
        same = (stock.eval()(x)[0] - model.eval()(x)[0]).abs().max().item()
    assert same < 1e-3, f"the split-free C2f rewrite changed the outputs by {same}"
    stock.train(), model.train()  # as in the example: train mode, every parameter trainable
    ops = {
        "graph": (lambda _: graph(model, x), _none),
        "graph_64": (lambda _: graph(model, torch.zeros(1, 3, 64, 64)), _none),
        "pruner": (pruner, lambda: copy.deepcopy(model)),
        "step": (lambda p: p.step(), lambda: pruner(copy.deepcopy(model))),
    }

    def info() -> dict:
        out = {"input": list(TP_INPUT), "version": version("torch-pruning")}
        out["stock_graph"] = _attempt(lambda: graph(stock, x))
        out["stock_step"] = _attempt(lambda: pruner(copy.deepcopy(stock)).step())
        pruned = copy.deepcopy(model)
        pruner(pruned).step()
        with torch.no_grad():
            pruned.eval()(x)  # the pruned model runs
        out["params"] = [sum(p.numel() for p in m.parameters()) for m in (model, pruned)]
        return out

    return ops, info


TOOLS = {"yoloprune": yoloprune_ops, "torch_pruning": torch_pruning_ops}


def child(mode: str, config: str, repeats: int) -> dict:
    """`time`: both tools' ops, interleaved, by tool; else (a tool's name): its memory and info."""
    model = build(config)
    if mode == "time":
        made = {tool: factory(copy.deepcopy(model)) for tool, factory in TOOLS.items()}
        ops = {f"{tool}:{name}": op for tool, (tool_ops, _) in made.items() for name, op in tool_ops.items()}
        times = run_ops(ops, repeats)
        return {
            tool: {k.split(":", 1)[1]: v for k, v in times.items() if k.startswith(tool + ":")}
            for tool in TOOLS
        }
    rss_model = peak_rss_mb()
    ops, info = TOOLS[mode](model)
    run_ops(ops, 0)  # each op once
    return {"rss_model_mb": rss_model, "peak_rss_mb": peak_rss_mb(), **info()}


def run_child(mode: str, config: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, config, "--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if lines:
        return json.loads(lines[-1][len(MARKER) :])
    return {"error": f"exit {done.returncode}: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"}


def _ratio(y: dict, t: dict, y_keys: tuple[str, ...], t_keys: tuple[str, ...]) -> str:
    """yoloprune / Torch-Pruning for summed median times, with the ratio of minimum times in parentheses."""
    out = []
    for suffix in ("_s", "_min_s"):
        a, b = (sum(d.get(k + suffix) or 0 for k in keys) for d, keys in ((y, y_keys), (t, t_keys)))
        out.append(f"{a / b:.2f}" if a and b else "-")
    return f"{out[0]} ({out[1]})"


def table(rows: list[dict]) -> str:
    lines = [
        "| model | yp trace+groups s | yp analyze s | yp prune s | yp step s | TP graph s (at 64²) "
        "| TP pruner s | TP step s | graph ratio | analyze / pruner | step ratio | end-to-end ratio "
        "| peak RSS MB yp / TP (Δ) | load |",
        "|" + "---|" * 14,
    ]
    for r in rows:
        y, t = r["yoloprune"], r["torch_pruning"]
        mem = (
            f"{y.get('peak_rss_mb', '-')} / {t.get('peak_rss_mb', '-')} "
            f"({y.get('peak_rss_mb', 0) - y.get('rss_model_mb', 0):.0f} / "
            f"{t.get('peak_rss_mb', 0) - t.get('rss_model_mb', 0):.0f})"
        )
        cells = [
            r["model"],
            *(y.get(k, "-") for k in ("trace_groups_s", "analyze_s", "prune_s", "step_s")),
            f"{t.get('graph_s', '-')} ({t.get('graph_64_s', '-')})",
            t.get("pruner_s", "-"),
            t.get("step_s", "-"),
            _ratio(y, t, ("trace_groups",), ("graph",)),
            _ratio(y, t, ("analyze",), ("pruner",)),
            _ratio(y, t, ("step",), ("step",)),
            _ratio(y, t, ("analyze", "prune"), ("pruner", "step")),
            mem,
            f"{r['load'][0]:.1f}–{r['load'][1]:.1f}",
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def markdown(rows: list[dict], total: float, repeats: int) -> str:
    notes = []
    for r in rows:
        y, t = r["yoloprune"], r["torch_pruning"]
        notes.append(
            f"- **{r['model']}**: Torch-Pruning on the stock model: graph {t.get('stock_graph', '-')}; "
            f"50% step {t.get('stock_step', '-')}. Params before, after 50%: yoloprune "
            f"{y.get('params', '-')} (verified: {y.get('ok', '-')}; {y.get('prunable', '-')} of "
            f"{y.get('groups', '-')} groups prunable), Torch-Pruning {t.get('params', '-')} (Detect "
            f"ignored). {y.get('error', '')} {t.get('error', '')}"
        )
    y0, t0 = rows[0]["yoloprune"], rows[0]["torch_pruning"]
    return "\n".join(
        [
            "# Trace and prune speed: yoloprune vs Torch-Pruning",
            "",
            f"Median of {repeats} rounds after a warm-up round, both tools' ops interleaved in one "
            f"process; {os.cpu_count()} CPU cores, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads; total {total:.0f} s. Inputs: yoloprune "
            f"{tuple(y0.get('input', ()))}, Torch-Pruning {tuple(t0.get('input', ()))} (its graph also "
            "timed at 64x64 in parentheses). Ratios are yoloprune / Torch-Pruning (below 1: yoloprune "
            "faster) of median times, with the ratio of minimum times in parentheses: graph = "
            "trace+groups / DependencyGraph build; analyze / pruner = analyze with probe / pruner "
            "construction; step = choose+apply / pruner.step(); end-to-end = (analyze + prune with "
            "verification) / (pruner construction + step). Memory: peak RSS (ru_maxrss) of each tool's "
            "own subprocess, each op run once; Δ = above the RSS after the model was built. Load: the "
            "1-minute load average before and after the timing (above ~2, other jobs shared the 2 "
            "cores).",
            "Generated by benchmarks/trace_speed.py.",
            "",
            table(rows),
            "",
            *notes,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # MODE CONFIG: one measurement
    args = parser.parse_args()
    if args.child:
        try:
            out = child(*args.child, args.repeats)
        except Exception as e:
            out = {"error": _error(e)}
        print(MARKER + json.dumps(out), flush=True)
        return
    from _results import write_results

    rows, start = [], time.perf_counter()
    for config in args.models:
        row = {"model": config, "load": [os.getloadavg()[0]]}
        t = time.perf_counter()
        times = run_child("time", config, args.repeats)
        row["load"].append(os.getloadavg()[0])
        for tool in TOOLS:
            row[tool] = {**times.get(tool, times), **run_child(tool, config, args.repeats)}
        print(f"{config}: {time.perf_counter() - t:.0f} s {times.get('error', '')}", flush=True)
        rows.append(row)
    total = time.perf_counter() - start
    doc = {
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "total_seconds": round(total, 1),
        "rows": rows,
    }
    write_results("trace_speed", doc, markdown(rows, total, args.repeats))
    print(table(rows))
    print(f"\ntotal {total:.0f} s")


if __name__ == "__main__":
    main()
