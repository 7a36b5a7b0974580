"""Does pruning pay? A larger model pruned to a smaller one's FLOPs against that smaller model trained
from scratch, against Torch-Pruning 1.6.1, and against masking, on the generated digits set.

Scope: eight runs on the same data, each with its training budget in epochs written beside it:
- `large`: the larger model trained from scratch for E epochs (the parent of every pruned run);
- `small`: the smaller reference model trained from scratch for E + F epochs (as many epochs as
  the parent and its fine-tuning together: the bar a pruned model has to clear);
- `yoloprune*`: the parent pruned by `yoloprune run` (`round_to: auto`, the README's setting for
  CPU deployment: widths in multiples of the CPU's channel block, 16 or 8) to the small
  model's FLOPs and fine-tuned F epochs in all: `yoloprune`, its recommended setting (Taylor
  criterion, global allocation, one-shot; its steps set the FLOPs every other pruned run aims at);
  `yoloprune-l2` with Torch-Pruning's L2 magnitude and one ratio for every group (so what differs
  from Torch-Pruning is what each tool can prune); `yoloprune-distill`, the recommended setting with
  yoloprune's head distillation from the parent; `yoloprune-iterative`, the recommended setting in
  S steps with F / S epochs after each;
- `torch-pruning`: the same schedule and fine-tuning as `yoloprune` with Torch-Pruning 1.6.1
  following its YOLOv8 example (C2f rewritten without its split, group L2 magnitude, one uniform
  ratio, Detect ignored); each step's ratio is bisected to reach the same FLOPs as yoloprune's;
- `masked`: the seed's approach: the parent with the channels a one-shot yoloprune plan removes
  zeroed instead of removed (not fine-tuned); it shows what masking gives at run time.
Every run trains with the same Ultralytics arguments (`train_args`: AdamW at lr0 0.002; for runs
this short Ultralytics' automatic choice is AdamW at 0.002 x 5 / (4 + classes), 0.0007 here, which
left both the from-scratch and the fine-tuned runs well behind, docs/decisions.md section 15), and
fine-tuning is Ultralytics' trainer for both pruning tools (yoloprune's `finetune`). Accuracy (mAP50-95,
mAP50, P, R) is Ultralytics validation on the val split at the training size; params, FLOPs and
ONNX Runtime CPU latency (1 thread and all threads, models timed in turn) at 640x640, where
deployment happens. Each finished run is kept in the work folder, so an interrupted benchmark
continues where it stopped. Results: benchmarks/results/accuracy{,-quick}.{json,md,png}.

`--pair yolo11`: yolo11s pruned to yolo11n's FLOPs, with the same setup and only `large`, `small`,
`yoloprune` and `yoloprune-l2`: no Torch-Pruning (its YOLOv8 example is written for YOLOv8's C2f and
does not cover YOLO11's C3k2 and C2PSA blocks) and no masking. Its pruned runs also report each
attention module's widths, parent -> pruned (qkv's output channels, q/k and v dims per head).
Results: benchmarks/results/accuracy-yolo11{,-quick}.{json,md,png}.

Run (from the repository root; needs the `bench` extra: pip install torch-pruning==1.6.1):
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy.py [--quick] [--pair yolo11]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported
os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/yoloprune-bench/ultralytics")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/yoloprune-bench/matplotlib")

import torch
from _results import RESULTS, write_results
from _torch_pruning import magnitude_pruner, merge_back, split_free
from torch import nn
from ultralytics.nn.modules.block import Attention

from yoloprune import PruneOptions, prune
from yoloprune.atomic import atomic_write
from yoloprune.pruning.count import count_flops
from yoloprune.pruning.options import resolve_round_to
from yoloprune.pruning.verify import masked_copy
from yoloprune.reports.plots import pyplot, save_figure
from yoloprune.workflows.data import make_digits
from yoloprune.workflows.evaluate import bench
from yoloprune.workflows.finetune import finetune
from yoloprune.workflows.recipe import recipe_from_dict
from yoloprune.workflows.schedule import CONTINUED, run
from yoloprune.yolo.io import load_model, save_checkpoint
from yoloprune.yolo.quiet import quiet
from yoloprune.yolo.validate import evaluate

WORK = Path(__file__).parent / "work"


@dataclass(frozen=True)
class Setup:
    """Everything that sizes the benchmark."""

    large: str
    small: str
    images: int  # generated digits scenes, 20% of them val
    imgsz: int  # training and validation size
    epochs: int  # E: the parent's training from scratch
    finetune: int  # F: fine-tuning epochs of each pruned run, in all
    steps: int  # S: pruning steps of the iterative run, F / S fine-tuning epochs after each
    batch: int
    runs: int  # timed ONNX Runtime runs per model (median kept)


FULL = Setup("yolov8s.yaml", "yolov8n.yaml", 1000, 96, 40, 20, 4, 16, 30)
QUICK = Setup("yolov8s.yaml", "yolov8n.yaml", 400, 96, 12, 8, 4, 16, 10)


@dataclass(frozen=True)
class Variant:
    """One of yoloprune's runs: criterion, allocation, distilled from the parent, iterative."""

    importance: str
    allocation: str
    distill: bool = False
    iterative: bool = False

    def setting(self, steps: int) -> str:
        extras = [", distilled"] * self.distill + [f", {steps} steps"] * self.iterative
        return f"{self.importance}, {self.allocation}" + "".join(extras)


# The first is the recommended setting and sets the FLOPs of every step; `yoloprune-l2` uses
# Torch-Pruning's criterion and allocation, so what differs is what each tool can prune (C2f
# natively, the Detect head's inner convs); then the first with head distillation (the parent as
# teacher), and the first in steps.
VARIANTS = {
    "yoloprune": Variant("taylor", "global"),
    "yoloprune-l2": Variant("l2", "local"),
    "yoloprune-distill": Variant("taylor", "global", distill=True),
    "yoloprune-iterative": Variant("taylor", "global", iterative=True),
}
LATENCY_IMGSZ = 640
ROUND_TO = resolve_round_to("auto")  # yoloprune's widths: multiples of this CPU's channel block


@dataclass(frozen=True)
class Pair:
    """A larger model pruned to a smaller one's FLOPs: its setups and which runs it makes."""

    full: Setup
    quick: Setup
    variants: tuple[str, ...]  # yoloprune's runs (keys of VARIANTS)
    rivals: bool  # Torch-Pruning and masking as well


YOLO11 = {"large": "yolo11s.yaml", "small": "yolo11n.yaml"}
PAIRS = {
    "yolov8": Pair(FULL, QUICK, tuple(VARIANTS), rivals=True),
    "yolo11": Pair(
        replace(FULL, **YOLO11), replace(QUICK, **YOLO11), ("yoloprune", "yoloprune-l2"), rivals=False
    ),
}
NO_TORCH_PRUNING = (
    "No Torch-Pruning run for this pair: its YOLOv8 example is written for YOLOv8's C2f and does not "
    "cover YOLO11's C3k2 and C2PSA (attention) blocks."
)


def train_args(s: Setup) -> dict:
    """Ultralytics training arguments shared by every run."""
    return {
        "imgsz": s.imgsz,
        "batch": s.batch,
        "workers": 2,
        "seed": 0,
        "deterministic": True,
        "plots": False,
        "optimizer": "AdamW",
        "lr0": 0.002,
    }


def from_scratch(cfg: str, data: Path, epochs: int, folder: Path, s: Setup) -> Path:
    """Train the YAML `cfg` from scratch; return its best checkpoint."""
    from ultralytics import YOLO

    args = {**train_args(s), "project": str(folder), "name": "train", "exist_ok": True}
    with quiet():
        YOLO(cfg).train(data=str(data), epochs=epochs, **args)
    return folder / "train" / "weights" / "best.pt"


def run_yoloprune(parent: Path, data: Path, target: float, folder: Path, s: Setup, variant: str) -> Path:
    """`yoloprune run` as `variant` says (one-shot or iterative), widths rounded for this CPU."""
    v = VARIANTS[variant]
    steps = s.steps if v.iterative else 1
    recipe = recipe_from_dict(
        {
            "version": 1,
            "schedule": "iterative" if v.iterative else "oneshot",
            "model": str(parent),
            "data": str(data),
            "target_flops": target,
            "steps": steps,
            "epochs": s.finetune // steps,
            "importance": v.importance,
            "allocation": v.allocation,
            "round_to": ROUND_TO,
            "train": train_args(s),
            "teacher": str(parent) if v.distill else None,
        }
    )
    out = folder / "run"
    return run(recipe, out, resume=out.exists(), log=lambda line: print("   ", line, flush=True)).final


def tp_step(model: torch.nn.Module, ratio: float, inputs: torch.Tensor) -> torch.nn.Module:
    """One Torch-Pruning step at a uniform `ratio`, on a copy, back in stock Ultralytics modules."""
    rewritten = split_free(copy.deepcopy(model)).train()
    for p in rewritten.parameters():
        p.requires_grad_(True)  # as the example does: every parameter trainable
    magnitude_pruner(rewritten, inputs, ratio).step()
    x = torch.rand(inputs.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        split = rewritten.eval()(x)[0]
        merged = merge_back(rewritten)
        assert torch.allclose(merged(x)[0], split, atol=1e-4), "merging C2f's halves back changed the outputs"
    return merged


def tp_to_flops(model: torch.nn.Module, goal: int, inputs: torch.Tensor) -> tuple[torch.nn.Module, float]:
    """The Torch-Pruning step whose ratio, bisected, lands closest to `goal` FLOPs."""
    lo, hi, best = 0.0, 0.95, None
    for _ in range(12):
        mid = (lo + hi) / 2
        pruned = tp_step(model, mid, inputs)
        flops = count_flops(pruned, (inputs,))
        if best is None or abs(flops - goal) < abs(best[1] - goal):
            best = (pruned, flops, mid)
        lo, hi = (mid, hi) if flops > goal else (lo, mid)
    return best[0], best[2]


def run_torch_pruning(
    parent: Path, data: Path, goals: list[int], folder: Path, s: Setup
) -> tuple[Path, dict[str, list]]:
    """Torch-Pruning's recipe, step by step to the FLOPs of yoloprune's steps, the same fine-tuning."""
    inputs = torch.zeros(1, 3, s.imgsz, s.imgsz)
    current, ratios = parent, []
    for i, goal in enumerate(goals, 1):
        loaded = load_model(current)
        pruned, ratio = tp_to_flops(loaded.model, goal, inputs)
        ratios.append(round(ratio, 4))
        step = save_checkpoint(pruned, folder / f"step{i}.pt", source_ckpt=loaded.ckpt)
        print(f"    step {i}/{len(goals)}: uniform ratio {ratio:.3f}, then fine-tuning", flush=True)
        tuned = finetune(
            step, data, s.finetune // len(goals), verbose=False, project=str(folder), name=f"step{i}",
            exist_ok=True, **(CONTINUED if i < len(goals) else {}), **train_args(s),
        )  # fmt: skip
        current = tuned.best
    return current, {"ratios": ratios}


def run_masked(parent: Path, data: Path, target: float, folder: Path, s: Setup) -> Path:
    """The parent with a one-shot yoloprune plan's channels zeroed, not removed."""
    v = VARIANTS["yoloprune"]
    options = PruneOptions(
        target_flops=target, importance=v.importance, allocation=v.allocation, round_to=ROUND_TO,
        calib_imgsz=s.imgsz,
    )  # fmt: skip
    result = prune(str(parent), options, data=data)
    masked = masked_copy(result.original, result.analysis.graph, result.plan.removed)
    return save_checkpoint(masked, folder / "masked.pt", source_ckpt=result.analysis.ckpt)


def cached(folder: Path, key: dict, make: Callable[[], dict]) -> dict:
    """`make()` once: its result is kept as folder/done.json with `key`, and read back on later runs
    with the same key; a different key (the benchmark changed) makes it again in an emptied folder."""
    done = folder / "done.json"
    if done.exists():
        result = json.loads(done.read_text())
        if result.get("key") == key:
            return result
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = {**make(), "key": key}
    result["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write(done, lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    return result


def flops_of(checkpoint: str | Path, imgsz: int) -> int:
    return count_flops(load_model(checkpoint).model, (torch.zeros(1, 3, imgsz, imgsz),))


def attention_widths(parent: nn.Module, pruned: nn.Module) -> dict[str, dict[str, list[int]]]:
    """Each YOLO11 `Attention` module's widths, [parent, pruned], by module path: qkv's output channels,
    heads, q/k dims per head (`key_dim`) and v dims per head (`head_dim`). Empty without attention."""
    after = dict(pruned.named_modules())
    widths = {}
    for name, m in parent.named_modules():
        if type(m) is Attention:
            both = (m, after[name])
            widths[name] = {
                "qkv": [a.qkv.conv.out_channels for a in both],
                "heads": [a.num_heads for a in both],
                "key_dim": [a.key_dim for a in both],
                "head_dim": [a.head_dim for a in both],
            }
    return widths


@dataclass
class Arms:
    """The runs of one benchmark: each made once and kept in `work/NAME` (`cached`), keyed by what it
    is and the setup, so a benchmark that makes the same run with the same words reads it back."""

    work: Path
    s: Setup
    total: int
    runs: dict[str, dict] = field(default_factory=dict)

    def __call__(
        self, name: str, what: str, epochs: int, make: Callable[[Path], Path | tuple[Path, dict]]
    ) -> None:
        print(f"[{len(self.runs) + 1}/{self.total}] {name}: {what}", flush=True)

        def record() -> dict:
            made = make(self.work / name)
            checkpoint, extra = made if isinstance(made, tuple) else (made, {})
            return {"checkpoint": str(checkpoint), "epochs": epochs, **extra}

        key = {"what": what, "setup": asdict(self.s), "train": train_args(self.s)}
        self.runs[name] = cached(self.work / name, key, record)
        print(f"    done in {self.runs[name]['seconds']:.0f} s", flush=True)

    def from_scratch(self, data: Path) -> tuple[Path, float]:
        """The parent and the smaller model, trained from scratch: (the parent's checkpoint, the FLOPs
        target, the smaller model's FLOPs over the parent's at the training size)."""
        s, e, f = self.s, self.s.epochs, self.s.finetune
        self(
            "large",
            f"{s.large} from scratch, {e} epochs",
            e,
            lambda out: from_scratch(s.large, data, e, out, s),
        )
        self(
            "small",
            f"{s.small} from scratch, {e + f} epochs",
            e + f,
            lambda out: from_scratch(s.small, data, e + f, out, s),
        )
        parent = Path(self.runs["large"]["checkpoint"])
        return parent, flops_of(self.runs["small"]["checkpoint"], s.imgsz) / flops_of(parent, s.imgsz)


def digits(s: Setup, work: Path) -> Path:
    """The benchmark's dataset in `work` (generated once); its data YAML."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "digits").exists():
        make_digits(work / "digits", images=s.images, imgsz=s.imgsz, seed=0)
    return work / "digits" / "data.yaml"


def measure(s: Setup, work: Path, pair: Pair) -> dict:
    """Train, prune and fine-tune every run of `pair` (or read the finished ones back), then time them."""
    data = digits(s, work)
    e, f = s.epochs, s.finetune
    arm = Arms(work, s, 2 + len(pair.variants) + 2 * pair.rivals)
    runs = arm.runs
    parent, target = arm.from_scratch(data)
    for variant in pair.variants:
        what = f"{VARIANTS[variant].setting(s.steps)}: to {target:.3f} of the FLOPs, {f} epochs"
        what += f", widths in multiples of {ROUND_TO}"
        arm(variant, what, e + f, lambda out, v=variant: run_yoloprune(parent, data, target, out, s, v))
    history = json.loads((work / "yoloprune" / "run" / "history.json").read_text())
    if pair.rivals:
        goals = [row["flops"] for row in history["steps"] if row["kind"] == "prune"]
        what = f"the same steps' FLOPs with Torch-Pruning {version('torch-pruning')}"
        arm("torch-pruning", what, e + f, lambda out: run_torch_pruning(parent, data, goals, out, s))
        what = "the parent with a one-shot plan's channels zeroed (no fine-tuning)"
        arm("masked", what, e, lambda out: run_masked(parent, data, target, out, s))

    print("validating every run, then timing them in ONNX Runtime", flush=True)
    start = time.perf_counter()
    for r in runs.values():
        r["accuracy"] = asdict(evaluate(r["checkpoint"], data, imgsz=s.imgsz))
    parent_model = load_model(parent).model
    for variant in pair.variants:
        if widths := attention_widths(parent_model, load_model(runs[variant]["checkpoint"]).model):
            runs[variant]["attention"] = widths
    checkpoints = [r["checkpoint"] for r in runs.values()]
    b = bench(checkpoints, imgsz=LATENCY_IMGSZ, runs=s.runs, warmup=3, tensorrt=False)
    for r, row in zip(runs.values(), b.rows, strict=True):
        r.update(params=row.params, flops=row.flops)
        r["latency"] = {k: t.as_json() for k, t in row.latency.items() if t}
    seconds = sum(r["seconds"] for r in runs.values()) + time.perf_counter() - start  # every arm, as it ran
    return {
        "setup": asdict(s), "target_flops": target, "runs": runs, "bench": b.settings, "history": history,
        "seconds": round(seconds, 1),
    }  # fmt: skip


TITLES = {
    "large": "{large} from scratch",
    "small": "{small} from scratch",
    **{name: "{large} pruned by yoloprune ({" + name + "})" for name in VARIANTS},
    "torch-pruning": "{large} pruned by Torch-Pruning",
    "masked": "{large} masked (seed approach)",
}


def title(name: str, setup: dict) -> str:
    return TITLES[name].format(**setup, **{n: v.setting(setup["steps"]) for n, v in VARIANTS.items()})


def _ms(r: dict, key: str) -> float | None:
    return r["latency"][key]["median_ms"] if key in r.get("latency", {}) else None


def markdown(doc: dict, command: str) -> str:
    s, runs = doc["setup"], doc["runs"]
    base = runs["large"]
    stepped = any(v.iterative for n, v in VARIANTS.items() if n in runs)
    one, every = (_ms(base, k) for k in ("ort_cpu_1_thread", "ort_cpu_all_threads"))
    lines = [
        "| run | epochs | mAP50-95 | mAP50 | P | R | params | GFLOPs | FLOPs cut | 1 thread ms | speed-up "
        "| all threads ms | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        a, t1, ta = r["accuracy"], _ms(r, "ort_cpu_1_thread"), _ms(r, "ort_cpu_all_threads")
        cells = [
            title(name, s), str(r["epochs"]),
            *(f"{a[k]:.3f}" for k in ("map50_95", "map50", "precision", "recall")),
            f"{r['params'] / 1e6:.2f} M", f"{r['flops'] / 1e9:.2f}", f"{base['flops'] / r['flops']:.2f}x",
            f"{t1:.1f}", f"{one / t1:.2f}x", f"{ta:.1f}", f"{every / ta:.2f}x",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(
        [
            f"# Accuracy at equal FLOPs: {s['large']} pruned to {s['small']}'s FLOPs"
            + (" (quick mode)" if doc["quick"] else ""),
            "",
            *lines,
            "",
            *(f"- {line}" for line in goals(doc)),
            "",
            f"Digits detection set ({s['images']} images, 20% val, {s['imgsz']}x{s['imgsz']}); training and "
            f"validation at {s['imgsz']}; epochs are each run's training budget in all (the pruned runs: "
            f"{s['epochs']} for the parent plus {s['finetune']} of fine-tuning after a one-shot prune"
            + (f", or {s['finetune'] // s['steps']} after each of {s['steps']} steps" if stepped else "")
            + "; yoloprune's widths in "
            f"multiples of {doc['round_to']}). Every run: optimizer AdamW, lr0 0.002. Params, FLOPs and "
            "latency at 640x640. " + doc["bench"]["summary"],
            *notes(doc),
            f"Total {doc['seconds'] / 60:.1f} min on {os.cpu_count()} CPUs (every run's own time, measured "
            f"when it ran, and the final validation and timing). Command: `{command}`.",
            "",
        ]
    )


def notes(doc: dict) -> list[str]:
    """Lines on the rival runs (Torch-Pruning's ratios, or why there are none), the attention widths
    the pruned runs kept, and a busy machine while timing."""
    runs, cpus = doc["runs"], doc["bench"]["cpus"]
    if "torch-pruning" in runs:
        ratios = runs["torch-pruning"]["ratios"]
        lines = [f"Torch-Pruning {doc['torch_pruning']}'s uniform ratio in each step: {ratios}."]
    else:
        lines = [NO_TORCH_PRUNING]
    for name, r in runs.items():
        for module, widths in r.get("attention", {}).items():
            w = {key: f"{before} -> {after}" for key, (before, after) in widths.items()}
            lines.append(
                f"Attention pruned by {name}, {module} (parent -> pruned): qkv {w['qkv']} output channels, "
                f"q/k dims per head {w['key_dim']}, v dims per head {w['head_dim']}, heads {w['heads']}."
            )
    load = max(doc["bench"]["load_average"])
    if load > cpus:  # more runnable than CPUs, the timing itself included
        lines.append(
            f"The machine was shared while timing (load average up to {load:.2f} on {cpus} CPUs): the "
            "latency columns are noisy; FLOPs are the stable measure of cost."
        )
    return lines


def goals(doc: dict) -> list[str]:
    """The benchmark's goals for the runs present (each pruned run against the small model and
    Torch-Pruning), each met or not, with the numbers."""
    runs = doc["runs"]
    out = []
    variants = [n for n in VARIANTS if n in runs]
    for variant, rival in itertools.product(variants, [n for n in ("small", "torch-pruning") if n in runs]):
        yp, r = runs[variant], runs[rival]
        ours, theirs = yp["accuracy"]["map50_95"], r["accuracy"]["map50_95"]
        verdict = "beats" if ours > theirs else "does not beat (goal not met)"
        us, them = (title(k, doc["setup"]) for k in (variant, rival))
        out.append(
            f"{us} {verdict} {them}: mAP50-95 {ours:.3f} vs {theirs:.3f} "
            f"at {yp['flops'] / 1e9:.2f} vs {r['flops'] / 1e9:.2f} GFLOPs."
        )
    return out


def plot(doc: dict, path: Path) -> None:
    """Left: mAP50-95 of every run; right: mAP50-95 against 1-thread latency (up and to the left wins).
    Both zoom on the trained runs, the small model's score dashed: a run far below (masking) is
    written beside its clipped bar and left off the scatter."""
    plt = pyplot()
    runs = doc["runs"]
    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.1, 1]})
    colors = dict(zip(runs, plt.cm.tab10.colors, strict=False))
    score = {name: r["accuracy"]["map50_95"] for name, r in runs.items()}
    bar = score["small"]
    shown = [name for name in runs if score[name] >= bar / 2]
    lo = round(min(score[n] for n in shown) - 0.03, 2)
    names = list(runs)[::-1]
    bars.barh(names, [score[n] - lo for n in names], left=lo, color=[colors[n] for n in names])
    for y, name in enumerate(names):
        bars.text(max(score[name], lo) + 0.002, y, f"{score[name]:.3f}", va="center")
    bars.set_xlim(lo, max(score.values()) + 0.02)
    bars.set_xlabel(f"mAP50-95 (val), axis from {lo}")
    for name in shown:
        r = runs[name]
        label = f"{name} ({r['flops'] / 1e9:.1f} GFLOPs)"
        scatter.scatter(_ms(r, "ort_cpu_1_thread"), score[name], s=50, color=colors[name], label=label)
    left_off = [
        f"{n}: {score[n]:.3f} at {_ms(runs[n], 'ort_cpu_1_thread'):.0f} ms" for n in runs if n not in shown
    ]
    scatter.set_xlabel(
        "ms at 640x640, ONNX Runtime CPU, 1 thread" + "".join(f"\n(off the chart: {t})" for t in left_off)
    )
    scatter.set_ylabel("mAP50-95 (val)")
    scatter.legend(fontsize=8, loc="best")
    for ax in (bars, scatter):
        ax.grid(alpha=0.3)
    bars.axvline(bar, color="gray", ls="--", lw=1)
    scatter.axhline(bar, color="gray", ls="--", lw=1)
    large, small = doc["setup"]["large"], doc["setup"]["small"]
    fig.suptitle(f"{large} pruned to {small}'s FLOPs, digits set (dashed: {small} from scratch)")
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small setup that finishes in about 10 minutes")
    ap.add_argument(
        "--pair", choices=PAIRS, default="yolov8", help="yolov8s -> yolov8n (default) or yolo11s -> yolo11n"
    )
    ap.add_argument(
        "--work", type=Path, help="folder for datasets and runs (benchmarks/work/accuracy[-quick][-yolo11])"
    )
    ap.add_argument("--fresh", action="store_true", help="delete the work folder first instead of continuing")
    args = ap.parse_args()
    pair = PAIRS[args.pair]
    other = args.pair != "yolov8"
    flags = f" --pair {args.pair}" * other + " --quick" * args.quick
    name = "accuracy" + f"-{args.pair}" * other + "-quick" * args.quick
    work = (args.work or WORK / name).resolve()
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    doc = measure(pair.quick if args.quick else pair.full, work, pair)
    doc["quick"] = args.quick
    if pair.rivals:
        doc["torch_pruning"] = version("torch-pruning")
    doc["round_to"] = ROUND_TO
    command = "PYTHONPATH=src .venv/bin/python benchmarks/accuracy.py" + flags
    text = markdown(doc, command)
    write_results(name, doc, text)
    plot(doc, RESULTS / f"{name}.png")
    print(text)


if __name__ == "__main__":
    main()
