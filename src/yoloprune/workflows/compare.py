"""Compare importance criteria: one recipe (model, data, layers, ratio or target, schedule, fine-tuning)
run once per criterion, one after another, then one benchmark of the baseline and every result.

A comparison folder holds:
    recipe.yaml            the shared recipe (each run's own recipe.yaml names its criterion)
    compare-state.json     the recipe's sha256 and the criteria; `resume` refuses anything else
    CRITERION/             one run folder per criterion (`schedule.run`, resumable)
    compare.md .json .png  the table and plot, written once every criterion has finished

Every criterion's recipe is checked (with a dry run of its pruning) before the first one trains.
Resuming skips the finished runs and continues a half-finished one from its last recorded step. The
benchmark is always measured again at the end, so its models are timed together, under one load.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from yoloprune.atomic import atomic_write
from yoloprune.errors import OptionError, YoloPruneError, prefixed, unmarked
from yoloprune.importance import CRITERIA
from yoloprune.progress import format_duration
from yoloprune.pruning.options import PruneOptions
from yoloprune.reports.measurements import SPEED_KEY, Bench
from yoloprune.text import plural
from yoloprune.workflows import schedule
from yoloprune.workflows.evaluate import bench, check_timing
from yoloprune.workflows.recipe import Recipe, check_new_folder, check_same, check_state_belongs, load_recipe

# The seed's "4 methods comparison": the three activation-clustering variants and BatchNorm gamma.
DEFAULT_CRITERIA = ("act-maxweight", "act-medoid", "act-maxgamma", "bn")
STATE_FILE = "compare-state.json"
STATE_VERSION = 1
OUTPUTS = ("compare.md", "compare.json", "compare.png")
_DEFAULT_IMPORTANCE = PruneOptions().importance


@dataclass(frozen=True)
class Comparison:
    """A finished comparison: the shared recipe, one run per criterion, and the benchmark whose rows
    are the baseline (`recipe.model`) and then each criterion's result, in `criteria` order."""

    folder: Path
    recipe: Recipe
    criteria: tuple[str, ...]
    runs: tuple[schedule.RunResult, ...]
    bench: Bench

    @property
    def labels(self) -> tuple[str, ...]:
        return ("baseline", *self.criteria)

    def rows(self) -> list[dict[str, Any]]:
        """One row per model, baseline first: criterion, model file, box accuracy, 1-thread ONNX Runtime
        latency, the gains over the baseline (`Bench.gains`), params and FLOPs."""
        rows = []
        for label, m in zip(self.labels, self.bench.rows, strict=True):
            t = m.latency.get(SPEED_KEY)
            rows.append(
                {
                    "criterion": label,
                    "model": m.name,
                    **(m.accuracy or {}),
                    "latency_ms": t.median_ms if t else None,
                    **self.bench.gains(m),
                    "params": m.params,
                    "flops": m.flops,
                }
            )
        return rows

    def to_markdown(self) -> str:
        """The gains table with its legend, then every measurement of the benchmark with its settings."""
        recipe = self.folder / "recipe.yaml"
        lines = [
            f"### Criteria compared: {self.recipe.schedule.value} schedule on `{self.recipe.model}`",
            "",
            self.bench.gains_markdown(self.labels, "criterion").rstrip("\n"),
            f"Every criterion ran the same recipe ({recipe}) with its own importance. Measured as below.",
        ]
        stopped = [(c, r.stopped) for c, r in zip(self.criteria, self.runs, strict=True) if r.stopped]
        lines += [
            f"- {c} did not reach the target: {why}; the row is its last step kept" for c, why in stopped
        ]
        lines += ["", "#### Every measurement", "", self.bench.to_markdown()]
        return "\n".join(lines)

    def to_json(self) -> str:
        doc = {
            "version": STATE_VERSION,
            "recipe": self.recipe.as_dict(),
            "criteria": list(self.criteria),
            "rows": self.rows(),
            "stopped": {c: r.stopped for c, r in zip(self.criteria, self.runs, strict=True) if r.stopped},
            "bench": self.bench.as_dict(),
        }
        return json.dumps(doc, indent=1)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """mAP50-95 against speed-up per criterion, and bars of mAP and of the gains (`Bench.plot_gains`)."""
        return self.bench.plot_gains(path, self.labels)


def compare_criteria(
    recipe: Recipe | None,
    criteria: list[str] | tuple[str, ...] | None,
    folder: str | os.PathLike[str],
    *,
    resume: bool = False,
    imgsz: int | None = None,
    runs: int = 50,
    warmup: int = 10,
    log: schedule.Log = print,
    verbose: bool = False,
) -> Comparison:
    """Run `recipe` once per importance criterion in `criteria` (default `DEFAULT_CRITERIA`) into the
    new folder `folder`, or continue the comparison there (`resume=True`; `recipe` and `criteria` may
    then be None). Then benchmark the baseline and every result at `imgsz` (default: the runs' image
    size) with `runs` timed runs after `warmup`, and write compare.md, compare.json and compare.png.
    Progress goes to `log`; `verbose` also shows Ultralytics' training output.

    Example:
        >>> c = compare_criteria(load_recipe("recipe.yaml"), ["l1", "bn"], "runs/compare")  # doctest: +SKIP
        >>> [(r["criterion"], round(r["speed_up"], 2)) for r in c.rows()]  # doctest: +SKIP
        [('baseline', 1.0), ('l1', 1.71), ('bn', 1.69)]
    """
    folder = Path(folder)
    check_timing(runs, warmup)
    if resume:
        recipe, names = _resume(recipe, criteria, folder)
        sizes: dict[str, int] = {}  # criteria not started yet are checked by their run
    else:
        recipe, names, sizes = _start(recipe, criteria, folder, log)
    n, began, spent = len(names), time.monotonic(), []
    results = []
    for k, name in enumerate(names, 1):
        head, sub = f"[criterion {k}/{n}] {name}:", folder / name
        state = schedule.finished(sub)
        if state:
            result = schedule.run(_with(recipe, name), sub, resume=True, log=lambda line: None)
            log(f"{head} finished before; skipped ({_outcome(result)})")
            results.append(result)
            continue
        if state is None:
            shutil.rmtree(sub, ignore_errors=True)  # a start killed before its state file was written
        left = f", about {format_duration(statistics.mean(spent) * (n - k + 1))} left" if spent else ""
        elapsed = format_duration(time.monotonic() - began)
        log(f"{head} {'resume' if state is False else 'run'} {sub} (elapsed {elapsed}{left})")
        start = time.monotonic()
        result = schedule.run(
            _with(recipe, name),
            sub,
            resume=state is False,
            log=lambda line: log(f"    {line}"),
            verbose=verbose,
            checked=sizes.get(name),
        )
        spent.append(time.monotonic() - start)
        log(f"{head} done in {format_duration(spent[-1])} ({_outcome(result)})")
        results.append(result)
    size = imgsz or results[0].history[0]["imgsz"]
    log(
        f"[bench] the baseline and {plural(n, 'result')} at {size}x{size}: export, validate, time "
        f"({plural(runs, 'run')} each)"
    )
    measured = bench(
        [recipe.model, *(r.final for r in results)], imgsz=size, data=recipe.data, runs=runs, warmup=warmup
    )
    comparison = Comparison(folder, recipe, names, tuple(results), measured)
    _write(comparison)
    _save_state(folder, recipe, names, finished=True)
    log(f"wrote {', '.join(str(folder / f) for f in OUTPUTS)}")
    return comparison


def _criteria(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The criteria, checked: known, each once, no two names for one criterion."""
    names = tuple(names)
    if not names:
        raise OptionError(f"`criteria`: give at least one criterion, e.g. {' '.join(DEFAULT_CRITERIA)}.")
    unknown = [n for n in names if n not in CRITERIA]
    if unknown:
        raise OptionError(
            f"`criteria`: unknown criterion {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(sorted(CRITERIA))}."
        )
    for i, a in enumerate(names):
        for b in names[:i]:
            if CRITERIA[a] is CRITERIA[b]:
                same = f"{a} is listed twice" if a == b else f"{b} and {a} are two names of one criterion"
                raise OptionError(f"`criteria`: {same}; list each criterion once.")
    return names


def _with(recipe: Recipe, criterion: str) -> Recipe:
    """`recipe` with `criterion` as its importance, validated again (e.g. `ratio: auto` needs act-*)."""
    try:
        return replace(recipe, options=replace(recipe.options, importance=criterion))
    except YoloPruneError as e:
        raise prefixed(f"criterion {criterion}: ", e) from e


def _start(
    recipe: Recipe | None, criteria: list[str] | tuple[str, ...] | None, folder: Path, log: schedule.Log
) -> tuple[Recipe, tuple[str, ...], dict[str, int]]:
    """Check everything, every criterion's recipe with a dry run, and create the comparison; return
    the recipe, the criteria and each one's image size (so its run does not check it again)."""
    recipe = check_new_folder(recipe, folder, STATE_FILE, "comparison")
    names = _criteria(DEFAULT_CRITERIA if criteria is None else criteria)
    recipes = [_with(recipe, name) for name in names]
    note = ""
    if recipe.options.importance != _DEFAULT_IMPORTANCE:
        note = f"; the recipe's importance {recipe.options.importance} is replaced by each criterion in turn"
    log(
        f"Comparing {plural(len(names), 'criterion', 'criteria')} ({', '.join(names)}) on one "
        f"{recipe.schedule.value} recipe{note}."
    )
    sizes = {}
    for k, (name, r) in enumerate(zip(names, recipes, strict=True), 1):
        try:
            sizes[name] = schedule.check_recipe(
                r, log=lambda line, k=k, name=name: log(f"[check {k}/{len(names)}] {name}: {line}")
            )
        except YoloPruneError as e:
            raise prefixed(f"criterion {name}: ", e) from e
    folder.mkdir(parents=True, exist_ok=True)
    recipe.save(folder / "recipe.yaml")
    _save_state(folder, recipe, names, finished=False)
    return recipe, names, sizes


def _resume(
    recipe: Recipe | None, criteria: list[str] | tuple[str, ...] | None, folder: Path
) -> tuple[Recipe, tuple[str, ...]]:
    path = folder / STATE_FILE
    if not path.exists():
        raise OptionError(
            f"Nothing to resume: {unmarked(str(folder))} has no {STATE_FILE}. Start the comparison "
            "without `resume=True`."
        )
    saved = load_recipe(folder / "recipe.yaml")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        names = tuple(state["criteria"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise YoloPruneError(f"Cannot read {path}: {e}. Start the comparison again in a new folder.") from e
    check_state_belongs(path, state, STATE_VERSION, "comparison")
    check_same(recipe, saved, folder, "comparison")
    if criteria is not None and tuple(criteria) != names:
        raise OptionError(
            f"`criteria={list(criteria)!r}` differs from the criteria {unmarked(str(folder))} was started "
            f"with ({' '.join(names)}); resume without `criteria`, or start a new comparison in another "
            "folder."
        )
    return saved, names


def _save_state(folder: Path, recipe: Recipe, names: tuple[str, ...], finished: bool) -> None:
    doc = {
        "version": STATE_VERSION,
        "recipe_sha256": recipe.sha256(),
        "criteria": list(names),
        "finished": finished,
    }
    text = json.dumps(doc, indent=1)
    atomic_write(folder / STATE_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _outcome(result: schedule.RunResult) -> str:
    """ "mAP50-95 0.412, params 3,011,043 -> 1,234,567" for a run's result (its last accepted step)."""
    first, last = result.history[0], [r for r in result.history if r["accepted"]][-1]
    return f"mAP50-95 {last['map50_95']:.3f}, params {first['params']:,} -> {last['params']:,}"


def _write(comparison: Comparison) -> None:
    """compare.png, .json and .md, each atomically; on a failure none of them is left behind."""
    folder = comparison.folder
    markdown, doc = comparison.to_markdown(), comparison.to_json()
    written: list[Path] = []
    try:
        written.append(comparison.plot(folder / "compare.png"))
        written.append(
            atomic_write(folder / "compare.json", lambda tmp: tmp.write_text(doc, encoding="utf-8"))
        )
        written.append(
            atomic_write(folder / "compare.md", lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
        )
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
