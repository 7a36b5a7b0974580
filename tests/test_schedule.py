"""Schedules end to end on a tiny trained baseline: recipes, every schedule, history files, resuming
after kill -9, and refusals before any training."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from tiny_training import TRAIN, relabelled, train_baseline

from yoloprune.cli import main
from yoloprune.errors import YoloPruneError
from yoloprune.pruning.count import count_params
from yoloprune.workflows import schedule
from yoloprune.workflows.finetune import conv_widths
from yoloprune.workflows.recipe import Schedule, load_recipe, recipe_from_cli, recipe_from_dict
from yoloprune.workflows.steps import step_depth, steps_of
from yoloprune.yolo.io import load_model, save_checkpoint
from yoloprune.yolo.validate import Metrics

BASE = {"version": 1, "model": "best.pt", "data": "data.yaml"}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[Path, Path]:
    return train_baseline(tmp_path_factory.mktemp("schedule"))


def _recipe(folder: Path, baseline: tuple[Path, Path], **fields) -> Path:
    model, data = baseline
    doc = {**BASE, "model": str(model), "data": str(data), "train": TRAIN, **fields}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


LAYERWISE = {"schedule": "layerwise", "ratio": 0.5, "layers": [1, 3], "epochs": 1, "final_epochs": 1}


@pytest.fixture(scope="module")
def layerwise(baseline, tmp_path_factory) -> dict:
    """One uninterrupted layerwise run through the CLI: blocks 1 and 3 at 50%, an epoch after each
    step and one at the end."""
    d = tmp_path_factory.mktemp("layerwise")
    recipe = _recipe(d, baseline, **LAYERWISE)
    out = d / "run"
    argv = ["run", str(recipe), "--out", str(out)]
    return {"recipe": recipe, "out": out, "argv": argv, "start": time.monotonic()}


def test_layerwise_run_end_to_end(layerwise, capsys) -> None:
    assert main(layerwise["argv"]) == 0
    captured = capsys.readouterr()
    out, log = captured.out, captured.err  # the history table is the document; the log goes to stderr
    run = layerwise["out"]
    assert "Checked before training" in log
    for k, what in enumerate(["baseline", "prune block 1, ratio 0.5", "prune block 3, ratio 0.5"]):
        assert f"[step {k}/3] {what}" in log
    assert "[step 3/3] final fine-tune, 1 epoch" in log
    assert "widths  block 1 (Conv) 32->16" in log and "widths  block 3 (Conv) 64->32" in log
    rows = json.loads((run / "history.json").read_text())["steps"]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(0 <= r[k] <= 1 for r in rows for k in ("map50_95", "map50", "precision", "recall"))
    params = [r["params"] for r in rows]
    assert params[0] > params[1] > params[2] == params[3]
    assert rows[1]["flops"] < rows[0]["flops"]
    with (run / "history.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [0, 1, 2, 3]
    assert (run / "history.png").read_bytes()[:4] == b"\x89PNG"
    final = load_model(run / "final.pt").model
    assert (count_params(final), conv_widths(final)) == (rows[3]["params"], rows[3]["widths"])
    assert conv_widths(final)["model.1.conv"] == 16 and conv_widths(final)["model.3.conv"] == 32
    assert (run / "train" / "step3" / "weights" / "best.pt").exists()
    args = {k: yaml.safe_load((run / "train" / f"step{k}" / "args.yaml").read_text()) for k in (1, 2, 3)}
    assert [args[k]["warmup_epochs"] for k in (1, 2, 3)] == [0, 0, 3.0]  # the last keeps Ultralytics' warm-up
    saved = load_recipe(run / "recipe.yaml")  # the recipe beside the results repeats the run
    assert (
        saved == load_recipe(layerwise["recipe"]) and json.loads((run / "state.json").read_text())["finished"]
    )
    for header in ("step", "what", "params", "GFLOPs", "mAP50-95", "mAP50"):
        assert header in out


@pytest.mark.slow
def test_kill_9_in_the_middle_then_resume_gives_the_same_run(layerwise, tmp_path, capsys) -> None:
    """Kill the CLI while step 2 trains, resume, and get the uninterrupted run's widths, every step
    exactly once."""
    if not (layerwise["out"] / "state.json").exists():
        assert main(layerwise["argv"]) == 0
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "yoloprune.cli", "run", str(layerwise["recipe"]), "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    state = out / "state.json"
    deadline = time.monotonic() + 300
    while not (out / "train" / "step2").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before step 2 trained"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [r["step"] for r in json.loads(state.read_text())["steps"]] == [0, 1]  # killed inside step 2
    assert main(["run", "--resume", "--out", str(out)]) == 0
    assert "Resuming" in capsys.readouterr().err  # the log goes to stderr, the history table to stdout
    rows = json.loads((out / "history.json").read_text())["steps"]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    reference = json.loads((layerwise["out"] / "history.json").read_text())["steps"]
    assert [r["widths"] for r in rows] == [r["widths"] for r in reference]
    assert conv_widths(load_model(out / "final.pt").model) == reference[-1]["widths"]
    assert main(["run", "--resume", "--out", str(out)]) == 0  # a finished run stays finished
    assert "already finished" in capsys.readouterr().err


@pytest.mark.slow  # the same rule, fast: test_a_run_whose_first_step_exceeds_max_drop_keeps_the_baseline_...
def test_iterative_run_stops_when_map_drops_more_than_max_drop(baseline, tmp_path, monkeypatch) -> None:
    """Steps without fine-tuning, with the validator replaced by falling scores: step 2 falls 0.2 below
    the baseline, so the run stops there, skips step 3 and keeps step 1's model."""
    scores = iter([0.5, 0.45, 0.3, 0.2])
    monkeypatch.setattr(schedule, "evaluate", lambda *a, **k: Metrics(next(scores), 0.9, 0.9, 0.9))
    recipe = load_recipe(
        _recipe(tmp_path, baseline, schedule="iterative", ratio=0.6, steps=3, max_drop=0.1, epochs=0)
    )
    lines: list[str] = []
    result = schedule.run(recipe, tmp_path / "run", log=lines.append)
    assert [(r["step"], r["accepted"]) for r in result.history] == [(0, True), (1, True), (2, False)]
    assert "step 2 lost 0.200 mAP50-95, more than max_drop 0.1" in result.stopped
    assert conv_widths(load_model(result.final).model) == result.history[1]["widths"]
    assert not any(line.startswith("[step 3/3]") for line in lines)


def _worse_finetune(checkpoint, data, epochs, **kwargs):
    """A stand-in fine-tune that writes its input with every weight halved, as a bad fine-tune would."""
    loaded = load_model(checkpoint)
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.mul_(0.5)
    best = Path(kwargs["project"]) / kwargs["name"] / "weights" / "best.pt"
    best.parent.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(best=save_checkpoint(loaded.model, best, source_ckpt=loaded.ckpt))


def _scores(monkeypatch, scores: dict[str, float]) -> None:
    """Replace the validator: each step's checkpoint (steps/stepK.pt) scores `scores["stepK"]`."""
    monkeypatch.setattr(
        schedule,
        "evaluate",
        lambda checkpoint, *a, **k: Metrics(scores[Path(checkpoint).stem], 0.9, 0.9, 0.9),
    )


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_model(a).model.state_dict(), load_model(b).model.state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_a_run_whose_first_step_exceeds_max_drop_keeps_the_baseline_and_exits_3(
    baseline, tmp_path, monkeypatch, capsys
) -> None:
    """Step 1 falls 0.3 below the baseline: nothing pruned is kept, so the final fine-tune (which would
    only make the unpruned baseline worse) is skipped, final.pt is the baseline's weights, the run says
    loudly that the target was not reached, exits 3, and a resume says the same."""
    _scores(monkeypatch, {"step0": 0.5, "step1": 0.2, "step2": 0.1, "step3": 0.01})
    monkeypatch.setattr(schedule, "finetune", _worse_finetune)
    fields = {
        "schedule": "iterative",
        "ratio": 0.5,
        "steps": 2,
        "epochs": 1,
        "final_epochs": 1,
        "max_drop": 0.1,
    }
    recipe, out = _recipe(tmp_path, baseline, **fields), tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 3
    captured = capsys.readouterr()
    text = captured.out + captured.err  # the log, the table and the warning, wherever each goes
    assert _same_weights(out / "final.pt", baseline[0])
    assert _same_weights(out / "final.pt", out / "steps/step0.pt")
    assert "target not reached: step 1 lost 0.300 mAP50-95, more than max_drop 0.1" in text
    assert "final.pt is step 0, the unpruned baseline" in text
    assert "[step 3/3] final fine-tune: skipped" in text
    assert "warning: target not reached (exit status 3)" in captured.err
    table = text[text.index("step  what") :]
    assert "\n  1*  prune" in table
    assert "* not kept: step 1 fell more than max_drop below the baseline's mAP50-95" in table
    history = json.loads((out / "history.json").read_text())
    assert history["outcome"] == {
        "result": "steps/step0.pt",
        "target_reached": False,
        "stopped": "step 1 lost 0.300 mAP50-95, more than max_drop 0.1",
    }
    state = json.loads((out / "state.json").read_text())
    assert (state["finished"], state["result"], state["target_reached"]) == (True, "steps/step0.pt", False)
    assert main(["run", "--resume", "--out", str(out)]) == 3  # a finished run reports the same outcome
    again = capsys.readouterr()
    assert "already finished" in again.out + again.err
    assert "target not reached: step 1 lost 0.300" in again.out + again.err
    assert "warning: target not reached (exit status 3)" in again.err


@pytest.mark.slow  # fast: test_a_run_whose_first_step_exceeds_max_drop_keeps_the_baseline_...
def test_a_final_fine_tune_that_lowers_the_map_is_not_kept(baseline, tmp_path, monkeypatch, capsys) -> None:
    _scores(monkeypatch, {"step0": 0.5, "step1": 0.45, "step2": 0.3})
    monkeypatch.setattr(schedule, "finetune", _worse_finetune)
    recipe = _recipe(tmp_path, baseline, schedule="oneshot", ratio=0.5, epochs=0, final_epochs=1)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    rows = json.loads((out / "history.json").read_text())["steps"]
    assert [(r["step"], r["accepted"]) for r in rows] == [(0, True), (1, True), (2, False)]
    assert _same_weights(out / "final.pt", out / "steps/step1.pt")
    assert "not kept: the fine-tune lowered mAP50-95 from 0.450 to 0.300; final.pt is step 1" in text
    assert "* not kept: step 2 lowered its input's mAP50-95" in text
    assert "target not reached" not in text


def test_run_help_names_the_exit_statuses(capsys) -> None:
    assert main(["run", "--help"]) == 0
    assert "3 the run finished but did not reach its target" in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow  # the rebuild through finetune, fast: tests/test_finetune.py, tests/test_transfer.py
def test_a_run_on_a_dataset_with_other_classes_ends_with_its_classes(baseline, tmp_path, capsys) -> None:
    """The 10-class baseline, pruned and fine-tuned on a 3-class dataset (as `compare` runs it too)."""
    data = relabelled(baseline[1], tmp_path / "three")
    recipe = _recipe(tmp_path, baseline, schedule="oneshot", ratio=0.5, epochs=1, data=str(data))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    layers = "model.22.cv3.0.2, model.22.cv3.1.2, model.22.cv3.2.2"
    assert f"(the dataset 3, the model 10): the first fine-tune rebuilds the class outputs ({layers})" in text
    assert f"    rebuilt the class outputs for 3 classes (was 10): {layers}; every other" in text
    final = load_model(tmp_path / "run" / "final.pt").model
    assert (final.names, final.model[-1].nc) == ({0: "c0", 1: "c1", 2: "c2"}, 3)


def test_a_run_on_a_dataset_with_other_classes_must_fine_tune(baseline, tmp_path) -> None:
    data = relabelled(baseline[1], tmp_path / "three")
    recipe = _recipe(tmp_path, baseline, schedule="oneshot", ratio=0.5, epochs=0, data=str(data))
    with pytest.raises(
        YoloPruneError,
        match=r"class count \(3\) differs from the one .* predicts \(10\), and the recipe never fine-tunes",
    ):
        schedule.run(load_recipe(recipe), tmp_path / "run", log=lambda line: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        # the default is also checked, on a real run's args.yaml, by test_layerwise_run_end_to_end
        pytest.param({}, [0, None], marks=pytest.mark.slow),
        ({"warmup_epochs": 1.5}, [1.5, 1.5]),
    ],
    ids=["default", "set"],
)
def test_only_the_last_fine_tune_keeps_the_warm_up(baseline, tmp_path, monkeypatch, train, expected) -> None:
    """Every fine-tune but the run's last trains without warm-up, unless `train:` sets it."""
    calls: list[dict] = []

    def fake_finetune(checkpoint, data, epochs, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(best=Path(checkpoint))

    monkeypatch.setattr(schedule, "finetune", fake_finetune)
    monkeypatch.setattr(schedule, "evaluate", lambda *a, **k: Metrics(0.5, 0.9, 0.9, 0.9))
    fields = {"schedule": "iterative", "ratio": 0.4, "steps": 2, "epochs": 1, "train": {**TRAIN, **train}}
    recipe = load_recipe(_recipe(tmp_path, baseline, **fields))
    schedule.run(recipe, tmp_path / "run", log=lambda line: None)
    assert [c.get("warmup_epochs") for c in calls] == expected


@pytest.mark.slow
def test_oneshot_run_meets_a_flops_target_with_distillation(baseline, tmp_path, capsys) -> None:
    recipe = _recipe(
        tmp_path, baseline, schedule="oneshot", target_flops=0.6, epochs=1, teacher=str(baseline[0])
    )
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    rows = json.loads((tmp_path / "run" / "history.json").read_text())["steps"]
    assert [r["kind"] for r in rows] == ["baseline", "prune"]
    assert rows[1]["flops"] / rows[0]["flops"] == pytest.approx(0.6, abs=0.02)
    results = (tmp_path / "run" / "train" / "step1" / "results.csv").read_text()
    assert "train/kd_loss" in results.splitlines()[0]


@pytest.mark.slow
def test_iterative_run_from_flags(baseline, tmp_path, capsys) -> None:
    model, data = baseline
    argv = ["run", "--schedule", "iterative", "--model", str(model), "--data", str(data), "--ratio", "0.5"]
    argv += ["--steps", "2", "--epochs", "1", *(f"{k}={v}" for k, v in TRAIN.items())]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    rows = json.loads((tmp_path / "run" / "history.json").read_text())["steps"]
    assert [r["step"] for r in rows] == [0, 1, 2]
    widths = [r["widths"]["model.3.conv"] for r in rows]
    assert widths == [64, 48, 32]  # 25% of the channels per step, 50% in all
    assert load_recipe(tmp_path / "run" / "recipe.yaml").train == TRAIN


def test_plan_splits_a_ratio_or_a_target_into_steps() -> None:
    ratio = steps_of(
        recipe_from_dict({**BASE, "schedule": "iterative", "ratio": 0.5, "steps": 2, "epochs": 3})
    )
    assert [(s.kind, s.epochs) for s in ratio] == [("baseline", 0), ("prune", 3), ("prune", 3)]
    assert [s.ratio for s in ratio[1:]] == pytest.approx([0.25, 1 / 3])  # of what the last step left
    target = steps_of(recipe_from_dict({**BASE, "schedule": "iterative", "target_flops": 0.5, "steps": 2}))
    assert [s.keep for s in target] == [None, pytest.approx(0.5**0.5), 0.5]  # 29% of what is left, twice
    layers = ["1", "model.2.cv1.conv:auto", {"block": 5, "ratio": 0.25}]
    lw = steps_of(
        recipe_from_dict({**BASE, "schedule": "layerwise", "ratio": 0.5, "layers": layers, "final_epochs": 9})
    )
    assert [(s.blocks, s.layers, s.ratio) for s in lw[1:4]] == [
        ((1,), None, 0.5),
        (None, ("model.2.cv1.conv",), "auto"),
        ((5,), None, 0.25),
    ]
    assert (lw[-1].kind, lw[-1].epochs) == ("finetune", 9)


def test_recipe_saves_every_field_and_reads_back_identically(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "r.yaml"
    path.write_text(yaml.safe_dump({**BASE, "schedule": "layerwise", "ratio": 0.5, "layers": [1, "3:0.25"]}))
    recipe = load_recipe(path)
    assert recipe.model == str(tmp_path / "sub" / "best.pt")  # relative to the recipe's folder
    assert [(s.block, s.ratio) for s in recipe.layers] == [(1, 0.5), (3, 0.25)]
    recipe.save(tmp_path / "saved.yaml")
    saved = yaml.safe_load((tmp_path / "saved.yaml").read_text())
    assert set(saved) == set(recipe.as_dict()) and saved["version"] == 1
    assert load_recipe(tmp_path / "saved.yaml") == recipe
    assert load_recipe(tmp_path / "saved.yaml").sha256() == recipe.sha256()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"epoch": 3}, "unknown recipe keys 'epoch' \\(did you mean 'epochs'\\?\\)"),
        ({"version": None}, "put `version: 1` first"),
        ({"version": 2}, "reads recipe version 1"),
        ({"schedule": "gradual"}, "unknown schedule='gradual'; choose one of oneshot, iterative, layerwise"),
        ({"schedule": "layerwise", "ratio": 0.5}, "needs layers:"),
        ({"schedule": "layerwise", "layers": [1], "target_flops": 0.5}, "remove target_flops"),
        ({"schedule": "layerwise", "layers": [1]}, "has no ratio"),
        ({"schedule": "layerwise", "layers": [{"block": 1, "layer": "model.1.conv"}]}, "exactly one of"),
        ({"schedule": "layerwise", "layers": ["1:half"]}, "ratio 'half' must be a fraction"),
        ({"schedule": "oneshot", "ratio": 0.5, "steps": 3}, "use schedule='iterative'"),
        ({"schedule": "oneshot", "ratio": 0.5, "max_drop": 0.05}, "oneshot and layerwise do not take it"),
        ({"schedule": "oneshot", "ratio": 1.5}, "outside \\[0, 1\\)"),
        ({"schedule": "oneshot", "ratio": 0.5, "target_flops": 0.5}, "give one of ratio, target_flops"),
        ({"schedule": "oneshot"}, "give ratio or a target"),
        ({"schedule": "oneshot", "ratio": 0.5, "epochs": True}, "epochs=True must be a whole number"),
        ({"schedule": "oneshot", "ratio": 0.5, "epochs": -1}, "must be 0 or more"),
        ({"schedule": "oneshot", "ratio": 0.5, "train": {"project": "x"}}, "set by the run itself"),
        ({"schedule": "oneshot", "ratio": 0.5, "importance": "l3"}, "unknown importance='l3'"),
        ({"schedule": "oneshot", "ratio": 0.5, "model": 3}, "model=3 must be a string"),
        ({"schedule": "oneshot", "ratio": 0.5, "train": [1]}, "train=\\[1\\] must be a mapping"),
    ],
)
def test_recipe_refusals_name_the_key(change, expected) -> None:
    with pytest.raises(YoloPruneError, match=expected):
        recipe_from_dict({**BASE, **change})


def test_a_run_started_by_an_earlier_yoloprune_resumes(tmp_path) -> None:
    """A run folder's recipe.yaml as an earlier yoloprune saved it (without the keys added since) and its
    state, hashed from that file: resuming reads it and matches the state."""
    recipe = recipe_from_dict({**BASE, "schedule": "oneshot", "ratio": 0.5})
    old = {k: v for k, v in recipe.as_dict().items() if k != "calib_imgsz"}  # what version 1 wrote
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    sha = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()
    state = {"version": 1, "recipe_sha256": sha, "imgsz": 64, "steps": [], "result": None}
    (run / "state.json").write_text(json.dumps({**state, "stopped": None, "finished": True}))
    assert schedule.run(None, run, resume=True).target_reached  # finished: nothing to do, no refusal
    assert schedule.run(recipe, run, resume=True).target_reached  # the same recipe, given again


def test_a_recipe_file_is_told_its_keys(tmp_path) -> None:
    """The same mistake in a recipe file names the key as the file writes it, not Python's keyword."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**BASE, "schedule": "oneshot", "ratio": 0.5, "max_ratio": 2}))
    with pytest.raises(YoloPruneError, match=r"r\.yaml: max_ratio: 2 is outside \(0, 1\]") as e:
        load_recipe(path)
    assert "max_ratio=" not in str(e.value)


def test_recipe_or_flags_not_both(tmp_path) -> None:
    assert recipe_from_cli([], {"schedule": None}) is None
    with pytest.raises(YoloPruneError, match="not both"):
        recipe_from_cli([str(tmp_path / "r.yaml"), "imgsz=64"], {"schedule": None})
    r = recipe_from_cli(
        ["imgsz=64"], {"schedule": "oneshot", "model": "m.pt", "data": "d.yaml", "ratio": 0.5}
    )
    assert (r.schedule, r.train, r.model) == (Schedule.ONESHOT, {"imgsz": 64}, str(Path.cwd() / "m.pt"))
    flags = {"schedule": "layerwise", "model": "m.pt", "data": "d.yaml", "layers": ["1", "3:0.25", "batch=8"]}
    r = recipe_from_cli([], {**flags, "ratio": 0.5})  # what argparse gives for `--layers 1 3:0.25 batch=8`
    assert ([(s.block, s.ratio) for s in r.layers], r.train) == ([(1, 0.5), (3, 0.25)], {"batch": 8})


def _no_labels(baseline: tuple[Path, Path], tmp_path: Path) -> str:
    copy = tmp_path / "nolabels"
    shutil.copytree(baseline[1].parent, copy, ignore=shutil.ignore_patterns("*.cache"))
    shutil.rmtree(copy / "labels")
    return str(copy / "data.yaml")


def _segment_model(baseline: tuple[Path, Path], tmp_path: Path) -> str:
    return str(save_checkpoint(load_model("yolov8n-seg.yaml").model, tmp_path / "seg.pt"))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"target_flops": 0.001}, "step 1 \\(prune every block to 0% of the original FLOPs\\)"),
        ({"ratio": 0.5, "data": "missing.yaml"}, "no such dataset YAML"),
        ({"ratio": 0.5, "data": _no_labels}, "no labelled boxes"),
        ({"ratio": 0.5, "train": {**TRAIN, "lr": 0.1}}, "'lr' is not a valid YOLO argument"),
        ({"ratio": 0.5, "model": "missing.pt"}, "never downloads"),
        ({"ratio": 0.5, "teacher": _segment_model}, "must be the unpruned detect model"),
    ],
)
def test_bad_input_fails_before_any_training(baseline, tmp_path, capsys, fields, expected) -> None:
    fields = {k: v(baseline, tmp_path) if callable(v) else v for k, v in fields.items()}
    recipe = _recipe(tmp_path, baseline, schedule="oneshot", epochs=1, **fields)
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    assert any(line.startswith("error: ") for line in capsys.readouterr().err.splitlines())
    with pytest.raises(YoloPruneError, match=expected):
        schedule.run(load_recipe(recipe), tmp_path / "run", log=lambda line: None)
    assert not (tmp_path / "run").exists()  # nothing written, nothing trained


def test_resume_refusals(baseline, tmp_path) -> None:
    recipe = load_recipe(_recipe(tmp_path, baseline, schedule="oneshot", ratio=0.5))
    with pytest.raises(YoloPruneError, match="Nothing to resume"):
        schedule.run(None, tmp_path / "none", resume=True)
    with pytest.raises(YoloPruneError, match="Give a recipe"):
        schedule.run(None, tmp_path / "none")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(YoloPruneError, match="not an empty folder"):
        schedule.run(recipe, tmp_path / "busy")
    run = tmp_path / "run"
    run.mkdir()
    recipe.save(run / "recipe.yaml")
    state = {"version": 1, "recipe_sha256": recipe.sha256(), "imgsz": 64, "steps": []}
    (run / "state.json").write_text(json.dumps({**state, "result": None, "stopped": None, "finished": False}))
    with pytest.raises(YoloPruneError, match="already holds a run"):
        schedule.run(recipe, run)
    other = recipe_from_dict({**recipe.as_dict(), "ratio": 0.25})
    with pytest.raises(
        YoloPruneError, match=r"differs from the one .*: ratio: 0.5 there, 0.25 here\. Resume"
    ):
        schedule.run(other, run, resume=True)
    elsewhere = recipe_from_dict({**recipe.as_dict(), "round_to": 16 if recipe.options.round_to == 8 else 8})
    with pytest.raises(
        YoloPruneError, match=r"round_to: .* there, .* here; \(`round_to: auto` is the channel"
    ):
        schedule.run(elsewhere, run, resume=True)  # a recipe with round_to: auto, read on another machine
    (run / "recipe.yaml").write_text((run / "recipe.yaml").read_text().replace("ratio: 0.5", "ratio: 0.4"))
    with pytest.raises(YoloPruneError, match="was the recipe edited"):
        schedule.run(None, run, resume=True)


@pytest.mark.parametrize("depth", [0.3, 0.5, 1.0])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_an_iterative_run_spreads_depth_over_its_steps(depth, steps):
    left = 1.0
    for k in range(1, steps + 1):
        left *= 1 - step_depth(depth, k, steps)
        assert left == pytest.approx(1 - depth * k / steps)


def test_each_iterative_step_prunes_with_its_share_of_depth(monkeypatch):
    recipe = recipe_from_dict(
        {"version": 1, "schedule": "iterative", "model": "best.pt", "data": "d.yaml", "ratio": 0.4,
         "steps": 2, "epochs": 1, "depth": 0.5}
    )  # fmt: skip
    asked = []
    monkeypatch.setattr(schedule.api, "prune", lambda source, options, data=None: asked.append(options.depth))
    for step in steps_of(recipe)[1:]:
        schedule._prune(step, Path("best.pt"), recipe, (1, 1), (1, 1))
    assert asked == [pytest.approx(0.25), pytest.approx(1 / 3)]
