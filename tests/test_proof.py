"""The library owns the proof: `prune` runs every check the CLI runs, `save` writes only when all
pass, and a check the original already fails the same way is not blamed on pruning."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from yoloprune.cli import main
from yoloprune.errors import YoloPruneError
from yoloprune.pruning.options import PruneOptions
from yoloprune.yolo import check
from yoloprune.yolo.api import PruneResult, analyze, check_outputs, excited_copy, prune, verify
from yoloprune.yolo.check import ORIGINAL_FACTOR, ChecksFailed, export_checks
from yoloprune.yolo.io import load_model, save_checkpoint

TINY = Path(__file__).parent / "data" / "tiny.yaml"
RTDETR_ONNX_ERROR = 0.0068  # what ONNX Runtime gave on rtdetr-l.yaml itself before detections were matched


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny detection model as a checkpoint of signal-carrying weights."""
    return save_checkpoint(excited_copy(load_model(TINY).model), tmp_path_factory.mktemp("proof") / "tiny.pt")


@pytest.fixture(scope="module")
def result(tiny) -> PruneResult:
    return prune(tiny, PruneOptions(0.5))


def _by_size(monkeypatch, name: str, original: float | str, pruned: float | str, big: int) -> None:
    """Replace check.`name` with one that answers `original` for models of more than `big`
    parameters and `pruned` for the others; a string is the error it raises."""

    def fake(model: nn.Module) -> float:
        value = original if sum(p.numel() for p in model.parameters()) > big else pruned
        if isinstance(value, str):
            raise YoloPruneError(value)
        return value

    monkeypatch.setattr(check, name, fake)


# -- the rule: the pruned model against the original's own result ---------------------------------
@pytest.fixture(scope="module")
def pair(result) -> tuple[nn.Module, nn.Module, int]:
    """(pruned, original, a size between theirs)."""
    small = sum(p.numel() for p in result.model.parameters())
    return result.model, result.original, small


@pytest.mark.parametrize(
    ("original", "pruned", "ok"),
    [
        (0.0, 5e-4, True),  # within the tolerance: the original is not even run
        (RTDETR_ONNX_ERROR, RTDETR_ONNX_ERROR * 1.5, True),  # as bad as the original, roughly
        (RTDETR_ONNX_ERROR, RTDETR_ONNX_ERROR * ORIGINAL_FACTOR * 1.01, False),
        (1e-6, 0.05, False),  # pruning broke the export
        ("the original does not export", "nor does the pruned one", True),
        (1e-6, "the pruned model does not export", False),
        ("the original does not export", 0.05, True),
    ],
)
def test_the_onnx_check_holds_the_pruned_model_against_the_original(
    pair, monkeypatch, original, pruned, ok
) -> None:
    model, source, small = pair
    _by_size(monkeypatch, "onnx_check", original, pruned, small)
    onnx = export_checks(model, source)[1]
    assert onnx.name == "ONNX" and onnx.ok is ok and onnx.tolerance == check.ONNX_TOLERANCE
    assert onnx.value == (pruned if isinstance(pruned, float) else None)
    if isinstance(pruned, float) and pruned <= check.ONNX_TOLERANCE:
        assert onnx.original is None  # not needed, not run
    elif isinstance(original, float):
        assert onnx.original == original and f"{original:.2g}" in onnx.detail
    if isinstance(pruned, str):
        assert pruned in onnx.detail or original in onnx.detail


@pytest.mark.parametrize(
    ("original", "pruned", "ok"),
    [(5.0, 6.0, True), ("KeyError: 'x'", "KeyError: 'x'", True), (5.0, "KeyError: 'masks'", False)],
)
def test_the_train_step_fails_only_where_the_original_passes(pair, monkeypatch, original, pruned, ok):
    model, source, small = pair
    _by_size(monkeypatch, "train_step_check", original, pruned, small)
    (step,) = export_checks(model, source, onnx=False)
    assert step.name == "train step" and step.ok is ok
    if not ok:
        assert "KeyError: 'masks'" in step.detail and step.original == original


# -- prune records, save refuses ------------------------------------------------------------------
def test_prune_records_every_check(result) -> None:
    names = [c.name for c in result.checks]
    assert names == ["equivalence", "structural", "train step", "ONNX"]
    assert result.ok and result.failed == () and all(c.detail for c in result.checks)
    eq = result.checks[0]
    assert (eq.value, eq.tolerance) == (result.equivalence.max_rel_error, result.equivalence.tolerance)


def test_the_onnx_check_can_be_left_out(tiny) -> None:
    assert [c.name for c in prune(tiny, PruneOptions(0.5), check_onnx=False).checks][-1] == "train step"


def test_save_refuses_a_failed_check_and_writes_nothing(tiny, tmp_path, monkeypatch) -> None:
    size = sum(p.numel() for p in load_model(tiny).model.parameters())
    _by_size(monkeypatch, "onnx_check", 1e-6, 0.05, size - 1)
    r = prune(tiny, PruneOptions(0.5))
    assert not r.ok and [c.name for c in r.failed] == ["ONNX"]
    with pytest.raises(ChecksFailed, match=r"failed the ONNX check, so nothing was written") as e:
        r.save(tmp_path / "pruned.pt", plan=tmp_path / "plan.json")
    assert "check_onnx=False" in str(e.value) and "plan_json()" in str(e.value)
    assert e.value.checks == r.failed
    assert os.listdir(tmp_path) == []


def test_save_writes_model_and_plan_or_neither(result, tmp_path, monkeypatch) -> None:
    out, plan = tmp_path / "pruned.pt", tmp_path / "plan.json"
    assert result.save(out, plan=plan) == out
    assert plan.read_text() == result.plan_json() and load_model(out).model is not None

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.serialization, "save", full)
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(YoloPruneError, match="No space left"):
        result.save(again / "pruned.pt", plan=again / "plan.json")
    assert os.listdir(again) == []  # the plan written first is removed again


@pytest.mark.parametrize(
    ("out", "plan", "fmt", "message"),
    [
        ("missing/pruned.pt", None, "pt", "directory missing does not exist"),
        ("pruned.pt", "missing/plan.json", "pt", "directory missing does not exist"),
        ("pruned.safe", None, "pt", "Ultralytics reads checkpoints named"),
        ("pruned.pt", None, "safe", "writes a folder, not a .pt file"),
        ("pruned.pt", None, "onnx", "Unknown save format 'onnx'"),
        ("pruned.pt", "pruned.pt", "pt", "both the model and its plan"),
    ],
)
def test_outputs_are_checked_before_any_work(tmp_path, monkeypatch, out, plan, fmt, message) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(YoloPruneError, match=message):
        check_outputs(out, plan, fmt)


def test_save_checks_its_outputs_too(result, tmp_path) -> None:
    with pytest.raises(YoloPruneError, match="does not exist"):
        result.save(tmp_path / "missing" / "pruned.pt")
    with pytest.raises(YoloPruneError, match="does not exist"):
        result.save(tmp_path / "pruned.pt", plan=tmp_path / "missing" / "plan.json")
    assert os.listdir(tmp_path) == []


def test_verify_returns_every_row(result, tiny, tmp_path) -> None:
    out = result.save(tmp_path / "pruned.pt")
    v = verify(tiny, out, result.plan_json())
    names = ["shapes", "weights", "equivalence", "structural", "train step", "ONNX"]
    assert [c.name for c in v.checks] == names and v.ok and v.failed == ()
    assert [c.name for c in verify(tiny, out, result.plan_json(), check_onnx=False).checks] == names[:-1]


# -- the CLI prints what the library proved -------------------------------------------------------
def test_a_model_that_onnx_already_rounds_differently_is_written(tiny, tmp_path, monkeypatch, capsys):
    """Issue 11 item 3: RT-DETR's original was 0.0068 off in ONNX Runtime, and nothing was written."""
    size = sum(p.numel() for p in load_model(tiny).model.parameters())
    _by_size(monkeypatch, "onnx_check", RTDETR_ONNX_ERROR, RTDETR_ONNX_ERROR * 1.5, size - 1)
    out = tmp_path / "pruned.pt"
    assert main(["prune", str(tiny), "--ratio", "0.5", "--out", str(out)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("ONNX"))
    assert "the original's own 0.0068" in row and row.endswith(": ok")
    assert out.exists()


def test_a_check_the_pruned_model_fails_alone_says_what_to_do(tiny, tmp_path, monkeypatch, capsys):
    size = sum(p.numel() for p in load_model(tiny).model.parameters())
    _by_size(monkeypatch, "onnx_check", 1e-6, 0.05, size - 1)
    argv = ["prune", str(tiny), "--ratio", "0.5", "--out", str(tmp_path / "p.pt")]
    assert main([*argv, "--plan", str(tmp_path / "plan.json")]) == 2
    captured = capsys.readouterr()
    assert "ONNX        max rel diff 0.05" in captured.out and captured.out.rstrip().endswith("FAIL")
    err = captured.err
    assert "failed the ONNX check, so nothing was written" in err and "the original's own 1e-06" in err
    assert "rerun with --no-onnx-check" in err and "this command line" in err
    assert "--plan)" not in err and "check_onnx" not in err  # no plan file that was never written
    assert os.listdir(tmp_path) == []


def test_a_dry_run_runs_the_same_checks(tiny, capsys) -> None:
    assert main(["prune", str(tiny), "--ratio", "0.5", "--dry-run", "--no-onnx-check"]) == 0
    out = capsys.readouterr().out
    assert "train step  loss" in out and "ONNX" not in out and "dry run: nothing written" in out


def test_the_train_step_error_asks_for_no_missing_file() -> None:
    model = load_model(TINY).model
    model.model[0].conv.weight = nn.Parameter(model.model[0].conv.weight.detach()[:4])
    with pytest.raises(YoloPruneError, match="so it cannot be fine-tuned") as e:
        check.train_step_check(model)
    assert "--plan" not in str(e.value)


# -- ONNX: detections ranked by score are compared as a set -------------------------------------
def test_tied_detections_may_come_in_either_order() -> None:
    want = np.array([[[0.5, 0.5, 0.1, 0.1, 0.04, 3], [0.9, 0.4, 0.1, 0.1, 0.04, 3], [0, 0, 1, 1, 0.01, 1]]])
    swapped = want[:, [1, 0, 2]]
    assert check._unordered_difference(swapped, want) == 0.0
    moved = swapped.copy()
    moved[0, 2, 0] += 0.25
    assert check._unordered_difference(moved, want) == pytest.approx(0.25)


@pytest.mark.slow
def test_rtdetr_prunes_with_every_default_check(tmp_path, capsys) -> None:
    """Issue 11 item 3, as reported: `yoloprune prune rtdetr-l.yaml --ratio 0.3 --out r.pt`."""
    out = tmp_path / "r.pt"
    assert main(["prune", "rtdetr-l.yaml", "--ratio", "0.3", "--out", str(out)]) == 0
    assert out.exists() and "ONNX" in capsys.readouterr().out
    assert check.onnx_check(analyze("rtdetr-l.yaml", run_probe=False).model) < check.ONNX_TOLERANCE
