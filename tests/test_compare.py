"""`yoloprune compare`: one recipe run once per criterion, resumably, then one table of accuracy,
latency, speed-up, FLOPs reduction, params and sparsity; and its refusals."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from tiny_training import TRAIN, train_baseline

from yoloprune.cli import main
from yoloprune.errors import YoloPruneError
from yoloprune.pruning.count import count_params
from yoloprune.reports.measurements import Bench, Measurement
from yoloprune.timing import Timing
from yoloprune.workflows import compare as compare_module
from yoloprune.workflows.compare import DEFAULT_CRITERIA, compare_criteria
from yoloprune.workflows.recipe import load_recipe, recipe_from_dict
from yoloprune.workflows.schedule import RunResult
from yoloprune.yolo.io import load_model

BENCH = ["--runs", "2", "--warmup", "0"]
COLUMNS = ["criterion", "mAP50-95", "mAP50", "P", "R", "ORT CPU 1 thread ms", "speed-up", "FLOPs reduction"]
COLUMNS += ["params", "sparsity"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[Path, Path]:
    return train_baseline(tmp_path_factory.mktemp("compare"))


@pytest.fixture(scope="module")
def compared(baseline, tmp_path_factory) -> dict:
    """l1 against bn through the CLI, from flags: oneshot, 50% of every group, no fine-tuning (the
    schedule's fine-tuning is tested in test_schedule), the recipe's own importance overridden."""
    model, data = baseline
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    argv = ["compare", "--schedule", "oneshot", "--model", str(model), "--data", str(data), "--ratio", "0.5"]
    argv += ["--epochs", "0", "--importance", "fpgm", *(f"{k}={v}" for k, v in TRAIN.items())]
    argv += ["--criteria", "l1", "bn", "--out", str(out), *BENCH]
    printed, logged = io.StringIO(), io.StringIO()  # stdout: the table; stderr: the progress
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(logged):
        code = main(argv)
    return {
        "argv": argv,
        "out": out,
        "code": code,
        "printed": printed.getvalue(),
        "logged": logged.getvalue(),
    }


def test_two_criteria_end_to_end(compared) -> None:
    assert compared["code"] == 0, compared["logged"]
    out = compared["out"]
    doc = json.loads((out / "compare.json").read_text())
    rows = doc["rows"]
    assert [r["criterion"] for r in rows] == ["baseline", "l1", "bn"]
    base, *pruned = rows
    assert (base["speed_up"], base["flops_reduction"], base["sparsity"]) == (1.0, 1.0, 0.0)
    for r in pruned:
        assert r["sparsity"] == pytest.approx(1 - r["params"] / base["params"])
        assert (
            r["flops_reduction"] == pytest.approx(base["flops"] / r["flops"]) and r["flops_reduction"] > 1.5
        )
        assert r["speed_up"] == pytest.approx(base["latency_ms"] / r["latency_ms"])
        assert all(0 <= r[k] <= 1 for k in ("map50_95", "map50", "precision", "recall"))
        assert r["params"] == count_params(load_model(out / r["criterion"] / "final.pt").model)
    assert pruned[0]["params"] == pruned[1]["params"]  # the same ratio of the same groups: the same widths
    for name in ("l1", "bn"):  # each criterion is a complete run folder with its own importance
        assert load_recipe(out / name / "recipe.yaml").options.importance == name
        assert json.loads((out / name / "state.json").read_text())["finished"]
    assert load_recipe(out / "recipe.yaml").options.importance == "fpgm"  # the shared recipe, as given
    table = (out / "compare.md").read_text()
    header, _, *lines = [line for line in table.splitlines() if line.startswith("|")]
    assert [c.strip() for c in header.strip("|").split("|")] == COLUMNS
    assert [line.split("|")[1].strip() for line in lines[:3]] == ["baseline", "l1", "bn"]
    assert f"| {pruned[0]['flops_reduction']:.2f}x |" in lines[1]
    assert f"| {pruned[0]['sparsity']:.1%} |" in lines[1]
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert doc["bench"]["settings"]["runs"] == 2 and doc["recipe"]["ratio"] == 0.5
    checks = [line for line in compared["logged"].splitlines() if "Checked before training" in line]
    assert [line.split(":")[0] for line in checks] == ["[check 1/2] l1", "[check 2/2] bn"]  # each once


def test_progress_names_each_criterion_k_of_n_and_the_time_left(compared) -> None:
    lines = compared["logged"].splitlines()  # progress on stderr, the table alone on stdout
    told = [line for line in lines if line.startswith("[") or "the recipe's importance" in line]
    assert "the recipe's importance fpgm is replaced by each criterion" in told[0]  # not the phases' lines
    assert told[1].startswith("[check 1/2] l1: Checked before training")
    assert told[2].startswith("[check 2/2] bn: Checked before training")
    heads = [line for line in lines if line.startswith("[criterion ")]
    assert heads[0].startswith("[criterion 1/2] l1: run ") and "left" not in heads[0]  # nothing to go by yet
    assert heads[1].startswith("[criterion 1/2] l1: done in ")
    assert re.match(r"\[criterion 2/2\] bn: run .*\(elapsed \d+:\d\d, about \d+:\d\d left\)$", heads[2])
    assert "    [step 1/1] prune every block, ratio 0.5" in lines  # the run's own progress, indented
    assert compared["printed"].splitlines()[
        -1
    ] == "Speed-up: baseline's latency over the model's; FLOPs reduction: baseline's FLOPs " + (
        "over the model's; sparsity: the fraction of baseline's params removed."
    )


def test_resume_skips_finished_criteria_and_continues_a_half_finished_one(compared, tmp_path) -> None:
    """bn's run as if killed after its baseline step: resuming leaves l1 alone and redoes bn's prune."""
    out = tmp_path / "cmp"
    shutil.copytree(compared["out"], out)
    for name in ("compare.md", "compare.json", "compare.png", "bn/final.pt"):
        (out / name).unlink()
    state = json.loads((out / "bn" / "state.json").read_text())
    state.update(steps=state["steps"][:1], result=state["steps"][0]["checkpoint"], finished=False)
    (out / "bn" / "state.json").write_text(json.dumps(state))
    l1_final = (out / "l1" / "final.pt").stat().st_mtime_ns
    lines: list[str] = []
    c = compare_criteria(None, None, out, resume=True, runs=2, warmup=0, log=lines.append)
    assert any(line.startswith("[criterion 1/2] l1: finished before; skipped") for line in lines)
    assert any(line.startswith("[criterion 2/2] bn: resume") for line in lines)
    assert "    Resuming" in "\n".join(lines) and "[step 1/1]" in "\n".join(lines)
    assert not any("[step 0/1]" in line for line in lines)  # neither baseline was measured again
    assert (out / "l1" / "final.pt").stat().st_mtime_ns == l1_final
    assert [r["criterion"] for r in c.rows()] == ["baseline", "l1", "bn"]
    assert all((out / name).exists() for name in ("compare.md", "compare.json", "compare.png", "bn/final.pt"))


def test_resume_refusals(compared, tmp_path) -> None:
    out = compared["out"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(
        YoloPruneError, match=r"criteria=\['l1', 'random'\] differs from the criteria .* \(l1 bn\)"
    ):
        compare_criteria(None, ["l1", "random"], out, resume=True)
    saved = load_recipe(out / "recipe.yaml")
    other = recipe_from_dict({**saved.as_dict(), "ratio": 0.25})
    with pytest.raises(YoloPruneError, match="recipe differs from the one"):
        compare_criteria(other, None, out, resume=True)
    with pytest.raises(YoloPruneError, match="already holds a comparison; pass resume=True"):
        compare_criteria(saved, ["l1"], out)
    with pytest.raises(YoloPruneError, match="Nothing to resume"):
        compare_criteria(None, None, tmp_path / "none", resume=True)
    with pytest.raises(YoloPruneError, match="Give a recipe"):
        compare_criteria(None, ["l1"], tmp_path / "none")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(YoloPruneError, match="not an empty folder"):
        compare_criteria(saved, ["l1"], tmp_path / "busy")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing touched


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (["l1", "l3"], r"unknown criterion 'l3'; choose from act-maxgamma, act-maxweight, .*, taylor\."),
        (["l1", "bn", "l1"], "l1 is listed twice"),
        (["bn", "gamma"], "bn and gamma are two names of one criterion"),
        ([], "give at least one criterion"),
    ],
)
def test_bad_criteria_are_refused_before_anything_is_written(baseline, tmp_path, criteria, expected) -> None:
    recipe = recipe_from_dict(
        {
            "version": 1,
            "schedule": "oneshot",
            "model": str(baseline[0]),
            "data": str(baseline[1]),
            "ratio": 0.5,
        }
    )
    with pytest.raises(YoloPruneError, match=expected):
        compare_criteria(recipe, criteria, tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


def test_a_criterion_the_recipe_does_not_suit_fails_before_any_run(baseline, tmp_path, capsys) -> None:
    """`ratio: auto` is only for the act-* criteria: l1 is refused, naming it, before act-medoid runs."""
    model, data = baseline
    recipe = tmp_path / "r.yaml"
    doc = {
        "version": 1,
        "schedule": "layerwise",
        "model": str(model),
        "data": str(data),
        "layers": ["1:auto"],
    }
    recipe.write_text(yaml.safe_dump(doc))
    argv = ["compare", str(recipe), "--criteria", "act-medoid", "l1", "--out", str(tmp_path / "cmp")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "\nerror: criterion l1: " in err and "auto" in err  # after the check log lines
    assert not (tmp_path / "cmp").exists()


@pytest.mark.slow  # fast: test_resume_skips_finished_criteria_and_continues_a_half_finished_one
def test_cli_resume_of_a_finished_comparison_measures_again(compared, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    shutil.copytree(compared["out"], out)
    assert main(["compare", "--resume", "--out", str(out), *BENCH]) == 0
    printed = capsys.readouterr()
    assert "[criterion 1/2] l1: finished before; skipped" in printed.err
    assert "[criterion 2/2] bn: finished before; skipped" in printed.err
    assert printed.out.startswith("| criterion | mAP50-95 |") and "| bn |" in printed.out


def test_run_and_compare_share_the_recipe_flags() -> None:
    from yoloprune.cli.parser import _parser
    from yoloprune.workflows.recipe import KEYS

    sub = next(a for a in _parser()._actions if a.dest == "command").choices
    dests = {name: {a.dest for a in sub[name]._actions} for name in ("run", "compare")}
    flagged = KEYS - {"version", "train"}  # train: the KEY=VALUE words
    assert flagged <= dests["run"] and flagged <= dests["compare"]
    assert "".join(DEFAULT_CRITERIA) in "".join(sub["compare"].format_help().split())  # its default


def test_gains_invert_the_ratios_against_the_first_model() -> None:
    def row(name: str, params: int, flops: int, ms: float | None) -> Measurement:
        t = None if ms is None else Timing(ms, ms, ms, 1)
        return Measurement(name, params, flops, 1, 1, {"ort_cpu_1_thread": t}, {"map50_95": 0.5})

    b = Bench((row("a", 400, 1000, 8.0), row("b", 100, 250, 2.0), row("c", 300, 500, None)))
    assert b.gains(b.rows[1]) == {"speed_up": 4.0, "flops_reduction": 4.0, "sparsity": 0.75}
    assert b.gains(b.rows[2]) == {"speed_up": None, "flops_reduction": 2.0, "sparsity": 0.25}
    lines = b.gains_markdown(["base", "half", "quarter"], "criterion").splitlines()
    assert lines[3] == "| half | 0.500 | n/a | n/a | n/a | 2.0 | 4.00x | 4.00x | 0.00 M | 75.0% |"
    assert lines[4] == "| quarter | 0.500 | n/a | n/a | n/a | n/a | n/a | 2.00x | 0.00 M | 25.0% |"


def test_compare_exits_3_when_a_criterion_did_not_reach_its_target(monkeypatch, capsys) -> None:
    """A criterion whose run stopped at max_drop gives exit status 3, naming it and why on stderr."""
    stopped = "step 1 lost 0.300 mAP50-95, more than max_drop 0.1"
    runs = tuple(
        RunResult(Path(c), Path(c) / "final.pt", [], why) for c, why in (("l1", None), ("bn", stopped))
    )
    table = SimpleNamespace(gains_markdown=lambda labels, what: "| criterion |\n")
    done = SimpleNamespace(criteria=("l1", "bn"), runs=runs, labels=("baseline", "l1", "bn"), bench=table)
    monkeypatch.setattr(compare_module, "compare_criteria", lambda *a, **k: done)
    argv = ["compare", "--schedule", "iterative", "--model", "m.pt", "--data", "d.yaml", "--ratio", "0.5"]
    assert main([*argv, "--max-drop", "0.1", "--out", "cmp"]) == 3
    assert f"target not reached (exit status 3) by bn: {stopped}" in capsys.readouterr().err
    assert "3 the run finished but did not reach its target" in " ".join(_help("compare").split())


def _help(command: str) -> str:
    from yoloprune.cli.parser import _parser

    return next(a for a in _parser()._actions if a.dest == "command").choices[command].format_help()
