"""Progress of long phases: the reporter's rules (delay, throttling, time left, nesting, off by
default) on a fake clock, then every slow phase of a prune, a verify and the checks reporting."""

from __future__ import annotations

import ast
import io
import time
from pathlib import Path

import pytest

import yoloprune
from yoloprune import progress
from yoloprune.cli import main
from yoloprune.progress import phase, reporting
from yoloprune.pruning.options import PruneOptions
from yoloprune.workflows.data import make_digits
from yoloprune.yolo.api import analyze, prune, verify
from yoloprune.yolo.check import onnx_check, train_step_check


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_off_by_default_in_the_library(capsys):
    with phase("quiet", total=3, unit="steps") as p:
        p.advance(3)
    assert p.done == 3
    assert capsys.readouterr() == ("", "")


def test_a_phase_shorter_than_the_delay_prints_nothing():
    out, clock = io.StringIO(), Clock()
    with reporting(out, delay=2, interval=5, clock=clock), phase("short", total=4, unit="steps") as p:
        for _ in range(4):
            clock.now += 0.4
            p.advance()
    assert out.getvalue() == ""


def test_a_phase_says_what_it_does_once_past_the_delay_then_throttles_with_time_left():
    out, clock = io.StringIO(), Clock()
    with reporting(out, delay=2, interval=5, clock=clock), phase("ranking", total=20, unit="groups") as p:
        for _ in range(20):
            clock.now += 1
            p.advance()
    assert lines(out) == [
        "ranking (20 groups) ...",  # at 2 s
        "ranking: 7/20 groups (elapsed 0:07, about 0:13 left)",  # 5 s after the last line, not before
        "ranking: 12/20 groups (elapsed 0:12, about 0:08 left)",
        "ranking: 17/20 groups (elapsed 0:17, about 0:03 left)",
        "ranking: done in 0:20",
    ]


def test_a_phase_without_steps_is_announced_by_the_timer_and_unknown_totals_count_up():
    out = io.StringIO()
    with reporting(out, delay=0.05), phase("loading big.pt"):
        time.sleep(0.3)  # no step to report at: the delay's timer says it
    first, last = lines(out)
    assert first == "loading big.pt ..." and last.startswith("loading big.pt: done in 0:0")
    out, clock = io.StringIO(), Clock()
    with reporting(out, delay=0, interval=1, clock=clock), phase("probe", unit="checks") as p:
        clock.now = 3
        p.advance(2)
    assert lines(out) == ["probe ...", "probe: 2 checks (elapsed 0:03)", "probe: done in 0:03"]


def test_nested_phases_are_indented_and_announce_their_parents_first():
    out, clock = io.StringIO(), Clock()
    with reporting(out, delay=2, clock=clock), phase("prune"):
        with phase("calibration", total=8, unit="images") as inner:
            clock.now = 3
            inner.advance(8)
        with phase("quick"):  # ends within the delay: silent
            pass
    assert lines(out) == [
        "prune ...",
        "  calibration (8 images) ...",
        "  calibration: done in 0:03",
        "prune: done in 0:03",
    ]


def test_a_failing_phase_reports_no_end_and_reporting_is_restored_afterwards(capsys):
    out = io.StringIO()
    with pytest.raises(ValueError), reporting(out, delay=0), phase("export"):
        raise ValueError("broken")
    assert lines(out) == ["export ..."]
    assert progress._reporter is None
    progress.enable(delay=0)  # a Python caller's switch; stderr, never stdout
    try:
        with phase("search"):
            pass
    finally:
        progress.disable()
    assert capsys.readouterr() == ("", "search ...\nsearch: done in 0:00\n")


def test_engine_packages_neither_print_nor_import_ultralytics():
    root = Path(yoloprune.__file__).parent
    for package in ("graph", "importance", "pruning"):
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                    pytest.fail(f"{path.name}:{node.lineno} prints; report with yoloprune.progress.phase")
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                assert not any(n.split(".")[0] == "ultralytics" for n in names), path


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_digits(tmp_path_factory.mktemp("data") / "digits", images=16, imgsz=64).yaml


def test_every_slow_phase_of_prune_verify_and_the_checks_reports(digits, tmp_path):
    out = io.StringIO()
    calibration = {"calib_images": 8, "calib_imgsz": 64}
    act_options = PruneOptions("auto", importance="act-maxweight", blocks=[1, 2], **calibration)
    taylor_options = PruneOptions(importance="taylor", target_flops=0.95, **calibration)
    with reporting(out, delay=0):
        a = analyze("yolov8n.yaml")
        act = prune(None, act_options, data=digits, analysis=a)
        taylor = prune(None, taylor_options, data=digits, analysis=a)
        train_step_check(taylor.model)
        onnx_check(act.model)
        act.save(tmp_path / "act.pt")
        verify("yolov8n.yaml", tmp_path / "act.pt", act.plan_json())
    text = out.getvalue()
    for expected in (
        "loading yolov8n.yaml ...",
        "tracing channel dependencies ...",
        "probe: pruning each of 51 groups for real ...",
        "calibration: activations at box centres at 64x64 (8 images) ...",
        "ranking channels by act-maxweight (",  # separability, t-SNE and k-medoids of each group
        "calibration: Taylor importance (loss gradients) at 64x64 (8 images) ...",
        "ranking channels by taylor (",
        "searching for the flops target ...",
        "verification: the pruned model against the masked original ...",
        "train-step check (forward, loss, backward) ...",
        "ONNX check (export, then ONNX Runtime against torch) ...",
        "verification: the pruned file against its original and plan ...",
        "  loading yolov8n.yaml ...",  # verify loads both models inside its own phase
    ):
        assert expected in text, f"{expected!r} missing from:\n{text}"


def test_the_cli_reports_phases_on_stderr_and_keeps_stdout_for_the_result(digits, monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY", 0.0)  # every phase, however short
    argv = ["prune", "yolov8n.yaml", "--importance", "act-maxweight", "--ratio", "auto", "--blocks", "1"]
    assert (
        main([*argv, "--data", str(digits), "--calib-imgsz", "64", "--calib-images", "8", "--dry-run"]) == 0
    )
    out, err = capsys.readouterr()
    assert "calibration: activations at box centres" in err and "ranking channels by act-maxweight" in err
    assert "calibration" not in out and "ranking" not in out and "Dry run" in out
    assert progress._reporter is None  # the CLI's reporting ends with the command
