"""What the `yoloprune` command line writes where: stdout carries only the command's document (a table,
JSON, Markdown, DOT, a report), so a script can pipe it into another tool; Ultralytics' warnings,
progress and "wrote FILE" lines go to stderr.

The commands run in a fresh Python process through `yoloprune.cli.main`, each with fd 1 and fd 2
pointed at files of their own, so Ultralytics' logger writes where it does in a real run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
WARNING = "no model scale passed"  # what Ultralytics logs for a YAML with scales but no scale letter

DRIVER = textwrap.dedent(
    """
    import json, os, sys, tempfile
    from yoloprune.cli import main

    results = []
    for argv in json.loads(sys.argv[1]):
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush(), sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
            try:
                code = main(argv)
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            out.seek(0), err.seek(0)
            results.append([code, out.read().decode(), err.read().decode()])
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)
    """
)


def run_cli(argvs: list[list[str]], tmp_path: Path) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each command line, run one after another in one fresh process."""
    results = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(argvs), str(results)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "settings")},  # a first run: Ultralytics logs
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return [tuple(r) for r in json.loads(results.read_text())]


def unscaled_yaml(folder: Path) -> Path:
    """tests/data/tiny.yaml with a `scales` key, under a name without a scale letter: Ultralytics warns
    that it assumes scale n when it builds it (as for yolov8.yaml), and the model stays tiny."""
    text = (DATA / "tiny.yaml").read_text().replace("nc: 3", "nc: 10")  # 10 classes: the digits dataset
    path = folder / "tinyscaled.yaml"
    path.write_text(f"{text}\nscales:\n  n: [1.0, 1.0, 1024]\n")
    return path


def is_markdown(text: str) -> bool:
    """Only headings, paragraphs, list items and tables whose rows have the header's column count."""
    lines = text.strip().splitlines()
    tables = [line for line in lines if line.startswith("|")]
    return bool(tables) and all(line.count("|") == tables[0].count("|") for line in tables[:2])


def check(results: dict[str, tuple[int, str, str]]) -> dict[str, str]:
    """Assert that every command succeeded and that its stdout holds no Ultralytics warning and no
    "wrote" line while its stderr keeps the warning; return each command's stdout."""
    for name, (code, out, err) in results.items():
        assert code == 0, f"{name}: {err[-2000:]}"
        assert WARNING not in out and "wrote" not in out, f"{name} printed more than its document:\n{out}"
        assert WARNING in err, name  # the warning is kept, on stderr
    return {name: out for name, (_, out, _) in results.items()}


def test_inspect_analyze_and_dry_run_print_only_their_document(tmp_path):
    m = str(unscaled_yaml(tmp_path))
    argvs = {
        "inspect text": ["inspect", m],
        "inspect md": ["inspect", m, "--format", "md"],
        "inspect json": ["inspect", m, "--format", "json"],
        "analyze md": ["analyze", m],
        "analyze json": ["analyze", m, "--format", "json"],
        "analyze dot": ["analyze", m, "--format", "dot"],
        "prune dry run": ["prune", m, "--ratio", "0.5", "--dry-run"],
        "analyze svg": ["analyze", m, "--format", "svg"],
    }
    results = dict(zip(argvs, run_cli(list(argvs.values()), tmp_path), strict=True))
    svg_code, svg, svg_err = results.pop("analyze svg")
    out = check(results)
    assert "Creating new Ultralytics Settings" in results["inspect text"][2]  # the first import's log
    assert out["inspect text"].splitlines()[0].split() == ["block", "type", "from", "in", "out", "params"]
    assert is_markdown(out["inspect md"]) and is_markdown(out["analyze md"])
    assert json.loads(out["inspect json"])["source"] == m
    assert {"blocks", "groups", "naive"} <= json.loads(out["analyze json"]).keys()
    assert out["analyze dot"].startswith("digraph") and out["analyze dot"].rstrip().endswith("}")
    assert out["prune dry run"].startswith(f"Dry run: would prune {m} ")
    if svg_code == 0:
        assert ET.fromstring(svg).tag.endswith("svg") and WARNING in svg_err
    else:  # no Graphviz here: refused, and nothing on stdout
        assert (svg_code, svg) == (2, "") and "Graphviz" in svg_err


@pytest.mark.slow
def test_prune_verify_data_bench_and_sensitivity_print_only_their_document(tmp_path):
    m, pruned, plan = str(unscaled_yaml(tmp_path)), str(tmp_path / "p.pt"), str(tmp_path / "plan.json")
    digits = tmp_path / "d"
    sensitivity = ["sensitivity", m, "--data", str(digits / "data.yaml"), "--ratios", "0.5", "--images", "2"]
    sensitivity += ["--imgsz", "64", "--csv", str(tmp_path / "s.csv"), "--target-flops", "0.9"]
    argvs = {
        "data digits": ["data", "digits", "--out", str(digits), "--images", "10", "--imgsz", "64"],
        "prune": ["prune", m, "--ratio", "0.5", "--out", pruned, "--plan", plan],
        "verify": ["verify", m, pruned, "--plan", plan],
        "bench": ["bench", m, pruned, "--imgsz", "64", "--runs", "1", "--warmup", "0"],
        "sensitivity": [*sensitivity, "--plan", str(tmp_path / "s.json")],
    }
    results = dict(zip(argvs, run_cli(list(argvs.values()), tmp_path), strict=True))
    code, out, err = results.pop("data digits")
    assert (code, out) == (0, "") and f"wrote {digits / 'data.yaml'}" in err  # a note, not a document
    out = check(results)
    assert out["prune"].startswith(f"Pruned {m} ") and f"wrote {pruned}" in results["prune"][2]
    assert out["verify"].startswith(f"Verifying {pruned} ") and "all checks passed" in out["verify"]
    assert is_markdown(out["bench"]) and "bench [1/" in results["bench"][2]  # progress on stderr
    assert "replay it with: yoloprune prune" in results["sensitivity"][2]
    assert (tmp_path / "s.csv").read_text().count("\n") > 1


def test_a_command_keeps_stdout_for_its_document(capsys):
    """Inside `document_on_stdout`, print() and Ultralytics' logger go to stderr and `_print` to
    stdout; afterwards the logger writes where it wrote before."""
    from ultralytics.utils import LOGGER

    from yoloprune.cli import commands as _commands

    before = [getattr(h, "stream", None) for h in LOGGER.handlers]  # pytest may add a stream-less one
    with _commands.document_on_stdout():
        print("a note")
        LOGGER.warning("a warning")
        _commands._print("the document")
        _commands._log("[step 1/2] prune")  # the progress of run and compare
    captured = capsys.readouterr()
    assert captured.out == "the document\n"
    assert captured.err.splitlines() == ["a note", "WARNING ⚠️ a warning", "[step 1/2] prune"]
    assert [getattr(h, "stream", None) for h in LOGGER.handlers] == before


@pytest.mark.parametrize(
    "unbuffered", [pytest.param("1", marks=pytest.mark.slow), ""], ids=["unbuffered", "buffered"]
)
def test_a_reader_that_stops_early_ends_the_command_quietly(unbuffered):
    """`yoloprune prune m.yaml --ratio 0.5 --dry-run | head -1`: the reader of stdout is gone before
    the command writes (here before it starts, so the test does not depend on timing); it exits with
    141 (128 + SIGPIPE, as a shell shows for `cat`) and no traceback, whether stdout is buffered or not."""
    argv = ["prune", str(DATA / "tiny.yaml"), "--ratio", "0.5", "--dry-run"]
    read, write = os.pipe()
    os.close(read)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "yoloprune.cli", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": unbuffered},
            timeout=300,
        )
    finally:
        os.close(write)
    assert run.returncode == 141, run.stderr
    assert "Traceback" not in run.stderr and "BrokenPipeError" not in run.stderr, run.stderr
