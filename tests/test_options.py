"""One request type: `PruneOptions` is declared once (type, default, help, check per field), round-trips
through JSON, generates the command line's flags, and its errors name fields. The engine (graph/,
importance/, pruning/) never speaks the command line's words; only the CLI turns fields into flags."""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import re
from pathlib import Path

import pytest

import yoloprune
from yoloprune.cli import main
from yoloprune.cli import parser as cli
from yoloprune.declare import spec_of
from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.pruning.options import Allocation, PruneOptions
from yoloprune.pruning.plan import plan_options
from yoloprune.workflows import schedule
from yoloprune.workflows.compare import compare_criteria
from yoloprune.workflows.recipe import KEYS, recipe_from_dict
from yoloprune.yolo.api import prune  # loads Ultralytics before any output is captured

ROOT = Path(yoloprune.__file__).parent
ENGINE = [ROOT / name for name in ("graph", "importance", "pruning")]
# Outside the engine the library speaks Python too: the Ultralytics seam and the workflows. reports/
# is left out: the analysis report is the `analyze` command's document and suggests commands to run.
LIBRARY = [path for package in ("yolo", "workflows") for path in sorted((ROOT / package).rglob("*.py"))]
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def _commands() -> dict:
    return next(a for a in cli._parser()._actions if a.dest == "command").choices


@functools.cache
def _command_pattern() -> re.Pattern:
    return re.compile(rf"\byoloprune ({'|'.join(_commands())})\b")


def cli_words(text: str) -> list[str]:
    """The lines of `text` that name a command-line flag or a `yoloprune COMMAND`."""
    command = _command_pattern()
    return [line for line in text.splitlines() if FLAG.search(line) or command.search(line)]


def _strings(path: Path) -> list[tuple[int, str]]:
    """Every string literal of a Python file (docstrings and f-string parts too), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_the_engine_names_no_flag_and_no_command():
    found = [
        f"{path.relative_to(path.parents[2])}:{line}: {words}"
        for package in ENGINE
        for path in sorted(package.rglob("*.py"))
        for line, text in _strings(path)
        for words in cli_words(text)
    ]
    assert not found, "the engine names fields, the CLI flags:\n" + "\n".join(found)


def test_the_seam_and_the_workflows_name_no_flag_and_no_command():
    """A Python caller of `compare_criteria`, `schedule.run` or `bench` is told about its arguments;
    only cli/ words them as flags or names a shell command."""
    found = [
        f"{path.relative_to(ROOT)}:{line}: {words}"
        for path in LIBRARY
        for line, text in _strings(path)
        for words in cli_words(text)
    ]
    assert len(LIBRARY) > 15 and not found, "the library names arguments, the CLI flags:\n" + "\n".join(found)


def test_the_scan_finds_flags_and_commands_in_any_string(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Run `yoloprune prune`."""\n'
        'x = f"--max-ratio {1}"\n'
        'y = "a -- b, x--y, max_ratio=2, pip install yoloprune[activation]"\n'
    )
    assert [words for _, text in _strings(sample) for words in cli_words(text)] == [
        "Run `yoloprune prune`.",
        "--max-ratio ",
    ]


def test_a_python_caller_sees_fields_a_cli_user_flags(capsys):
    with pytest.raises(OptionError) as e:
        PruneOptions(0.5, max_ratio=2)
    assert str(e.value) == "max_ratio=2 is outside (0, 1]: it is the most any group may lose, e.g. 0.9."
    assert e.value.fields == ("max_ratio",)
    assert main(["prune", "yolov8n.yaml", "--ratio", "0.5", "--max-ratio", "2", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: --max-ratio 2.0 is outside (0, 1]: it is the most") and "max_ratio" not in err
    )


def test_a_switch_is_named_as_the_switch(capsys):
    with pytest.raises(OptionError, match=r"combined with allocation='global'.*drop allocation='global'"):
        PruneOptions("auto", allocation="global")
    assert main(["prune", "yolov8n.yaml", "--ratio", "auto", "--global", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--ratio auto lets the criterion" in err and "combined with --global" in err
    assert "drop --global" in err and "allocation" not in err


def test_an_engine_error_is_worded_for_each_caller(capsys):
    """The allocator's error names `target_flops` and the limits; the CLI shows them as flags."""
    with pytest.raises(OptionError) as e:
        prune("yolov8n.yaml", PruneOptions(target_flops=0.01, blocks=[1]))
    assert str(e.value).startswith("target_flops=0.01 cannot be reached")
    assert "max_ratio=0.9, min_channels=1, round_to=1" in str(e.value) and "--" not in str(e.value)
    assert main(["prune", "yolov8n.yaml", "--target-flops", "0.01", "--blocks", "1", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "error: --target-flops 0.01 cannot be reached" in err  # after the progress lines
    assert "(--max-ratio 0.9, --min-channels 1, --round-to 1)" in err and "(--blocks, --layers)" in err


def test_prune_takes_options_or_a_plan(tmp_path):
    with pytest.raises(TypeError, match=r"options must be a PruneOptions, e.g. PruneOptions\(ratio=0.5\)"):
        prune("yolov8n.yaml", 0.5)
    with pytest.raises(YoloPruneError, match="give options or a plan, not both"):
        prune("yolov8n.yaml", PruneOptions(0.3), plan="{}")


def test_option_error_wordings():
    e = OptionError("`blocks=[1, 2]` and `ratio='auto'` need `data`; `x` stays.")
    assert str(e) == "blocks=[1, 2] and ratio='auto' need data; x stays."
    assert e.fields == ("blocks", "ratio", "data", "x")
    words = cli.flag_words({"blocks": "--blocks", "ratio": "--ratio", "data": "--data"})
    assert e.worded(words) == "--blocks 1 2 and --ratio auto need --data; x stays."


@pytest.mark.parametrize(
    "options",
    [
        PruneOptions(),
        PruneOptions("auto", importance="act-medoid", calib_images=8, calib_imgsz=64),
        PruneOptions(target_flops=0.5, allocation="global", round_to=16, blocks=[1, 2], exclude=["m.1"]),
        PruneOptions(target_params=0.7, aggregation="sum", max_ratio=1, min_channels=4, layers=["a.b"]),
    ],
)
def test_options_round_trip_through_json(options):
    doc = json.loads(json.dumps(options.to_json()))
    assert PruneOptions.from_json(doc) == options
    assert doc["allocation"] in ("local", "global") and isinstance(doc["exclude"], list)


def test_options_are_held_in_their_types():
    o = PruneOptions(0, allocation="global", blocks=[1, 2], exclude=("a",), max_ratio=1)
    assert (o.ratio, o.allocation, o.blocks, o.exclude, o.max_ratio) == (
        0.0,
        Allocation.GLOBAL,
        (1, 2),
        ("a",),
        1.0,
    )
    assert isinstance(o.ratio, float) and isinstance(o.max_ratio, float)
    assert PruneOptions().ratio == 0.5 and PruneOptions(target_params=0.5).ratio is None
    hash(o)  # frozen, tuples: usable as a key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": float("nan")}, r"ratio=nan is outside \[0, 1\)"),
        ({"ratio": True}, "ratio=True must be a fraction such as 0.5, or auto"),
        ({"target_flops": 10**400}, "target_flops=.* must be a number"),
        ({"seed": -1}, r"seed=-1 is outside \[0, 4294967295\]"),
        ({"blocks": [1, -2]}, "blocks=-2 must be 0 or more"),
        ({"blocks": "12"}, "blocks='12' must be a list of whole numbers"),
        ({"exclude": "model.1"}, "exclude='model.1' must be a list of strings"),
        ({"importance": "l3"}, "unknown importance='l3'; choose one of act-maxgamma"),
        ({"calib_images": 0}, "calib_images=0 must be 1 or more"),
    ],
)
def test_every_field_is_checked_where_it_is_declared(kwargs, message):
    with pytest.raises(OptionError, match=message):
        PruneOptions(**kwargs)


def test_plans_made_before_read_their_scope_as_layers():
    """Older plans record `scope` (module paths) and a sensitivity plan's `sensitivity` entry among
    the options; both still read."""
    old = {"ratio": None, "target_flops": 0.5, "importance": "l1", "round_to": 8, "seed": 0}
    old |= {"scope": ["model.1", "model.2.cv1.conv"], "exclude": [], "sensitivity": {"metric": "loss"}}
    options = plan_options(json.dumps({"version": 1, "options": old, "convs": {}}))
    assert options == PruneOptions(target_flops=0.5, round_to=8, layers=("model.1", "model.2.cv1.conv"))
    assert plan_options("not json") == PruneOptions()
    with pytest.raises(
        YoloPruneError, match=r"options have the wrong type or value \(max_ratio=2 is outside"
    ):
        plan_options(json.dumps({"options": {"max_ratio": 2}}))


def test_from_json_refuses_unknown_keys_with_a_suggestion():
    with pytest.raises(
        YoloPruneError, match=r"unknown option keys 'max_ration' \(did you mean 'max_ratio'\?\)"
    ):
        PruneOptions.from_json({"max_ration": 0.5})


def test_every_option_has_help_and_a_generated_flag():
    """A new option is one field: the prune command and the run/compare recipe flags follow."""
    commands = _commands()
    prune = {a.dest: a for a in commands["prune"]._actions}
    for f in dataclasses.fields(PruneOptions):
        assert spec_of(f).help, f"{f.name} has no help text"
        assert f.name in prune and prune[f.name].help.startswith(spec_of(f).help.replace("%", "%%"))
        assert prune[f.name].default is None  # not given: the field's own default applies
    for name in ("run", "compare"):
        dests = {a.dest for a in commands[name]._actions}
        assert KEYS - {"version", "train"} <= dests
    assert prune["allocation"].option_strings == ["--global"]
    assert cli._parser().parse_args(["prune", "m.pt", "--ratio", "auto", "--blocks", "1", "2"]).blocks == [
        1,
        2,
    ]


def test_a_workflow_error_reads_as_a_keyword_in_python_and_a_flag_on_the_command_line(tmp_path, capsys):
    """`compare_criteria` and `schedule.run` name their arguments (`criteria`, `folder`, `resume`); the
    run and compare commands word the same errors as --criteria, --out and --resume."""
    recipe = {"version": 1, "schedule": "oneshot", "model": "best.pt", "data": "d.yaml", "ratio": 0.5}
    flags = ["--schedule", "oneshot", "--model", "best.pt", "--data", "d.yaml", "--ratio", "0.5"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")

    with pytest.raises(OptionError) as e:
        compare_criteria(recipe_from_dict(recipe), ["l1", "nope"], tmp_path / "c")
    python = str(e.value)
    assert python.startswith("criteria: unknown criterion 'nope'; choose from ") and "--" not in python
    assert main(["compare", *flags, "--criteria", "l1", "nope", "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.startswith("error: --criteria: unknown criterion 'nope'; choose from ")

    with pytest.raises(OptionError) as e:
        schedule.run(recipe_from_dict(recipe), busy)
    assert (
        str(e.value)
        == f"folder={str(busy)!r} exists and is not an empty folder; choose a new folder for the run."
    )
    assert main(["run", *flags, "--out", str(busy)]) == 2
    assert (
        capsys.readouterr().err
        == f"error: --out {busy} exists and is not an empty folder; choose a new folder for the run.\n"
    )

    with pytest.raises(OptionError) as e:
        schedule.run(None, tmp_path / "new")
    assert str(e.value) == "Give a recipe to start a run, or resume=True to continue one."
    assert main(["run", "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Give a recipe (a YAML or the schedule flags) to start a run, or --resume ")

    with pytest.raises(OptionError, match=r"Start the run without resume=True\.$"):
        schedule.run(None, tmp_path / "new", resume=True)
    assert main(["run", "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert capsys.readouterr().err.endswith("Start the run without --resume.\n")
    assert not (tmp_path / "c").exists() and not (tmp_path / "new").exists()  # nothing written


def test_an_argument_without_a_flag_reads_as_a_key_word():
    """`finetune` takes data=DATA.yaml, not --data: a field a command has no flag for is worded as the
    KEY=VALUE word it takes; a switch as itself only for the value it sets."""
    words = cli.flag_words({"resume": "--resume"}, {"resume": "True"})
    e = OptionError("`data='digits/data.yaml'`: no such dataset YAML; `resume=True` or `resume=False`.")
    assert e.worded(words) == "data=digits/data.yaml: no such dataset YAML; --resume or resume False."
