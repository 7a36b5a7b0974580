"""Hostile and broken inputs, through the Python API and the command line.

Every case must end in a clear error: a YoloPruneError naming what was wrong in Python; on the command
line exit code 2 and an `error:` paragraph without a traceback. And it must leave no file, not even a
temporary one, in the output folder. Fuzz tests (hypothesis) corrupt checkpoints, model YAMLs and plans
at random and require the same: a clear error or a correct result, never another exception.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import FAST

from yoloprune.cli import main
from yoloprune.errors import YoloPruneError
from yoloprune.pruning.options import PruneOptions
from yoloprune.yolo.api import Analysis, analyze, excited_copy, prune
from yoloprune.yolo.io import load_model, save_checkpoint

TINY = (Path(__file__).parent / "data" / "tiny.yaml").read_text()
HOSTILE_VALUES = (None, -3, 0, 2.5, True, "abc", "nn.Conv2d", [], [1, "x"], {"a": 1})


def hostile(draw: st.DrawFn, *more: object) -> object:
    return copy.deepcopy(draw(st.sampled_from((*HOSTILE_VALUES, *more))))


@dataclass(frozen=True)
class Inputs:
    """A world-readable folder (a test below drops root's privileges) holding the tiny model as a
    checkpoint of signal-carrying weights (`tiny.pt`) and a valid plan for it; and its analysis."""

    folder: Path
    analysis: Analysis

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing case
        return f"Inputs({self.folder})"


@pytest.fixture(scope="module")
def inputs():
    folder = Path(tempfile.mkdtemp(prefix="yoloprune-hostile-"))
    folder.chmod(0o755)
    (folder / "tiny.yaml").write_text(TINY)
    save_checkpoint(excited_copy(load_model(folder / "tiny.yaml").model), folder / "tiny.pt")
    a = analyze(folder / "tiny.pt")
    (folder / "plan.json").write_text(prune(None, PruneOptions(0.5), analysis=a).plan_json())
    yield Inputs(folder, a)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def out(inputs):
    folder = inputs.folder / f"out-{os.urandom(4).hex()}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def assert_refused(argv: list[str], out: Path, capsys) -> str:
    """Run the CLI, require exit 2 with a one-paragraph error, and an untouched output folder."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "Traceback" not in err, err
    assert os.listdir(out) == [], "the output folder is not empty"
    return err


def prune_argv(model: Path | str, out: Path, *extra: str, fmt: str = "pt") -> list[str]:
    target = out / ("pruned.pt" if fmt == "pt" else "pruned.safe")
    return ["prune", str(model), *extra, "--out", str(target), "--plan", str(out / "plan.json"),
            "--no-onnx-check", "--save-format", fmt]  # fmt: skip


# -- checkpoints ----------------------------------------------------------------------------------
def _zip_of_text(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", "not a pickle")


CORRUPTIONS = {
    "empty": lambda data, path: path.write_bytes(b""),
    "truncated to half": lambda data, path: path.write_bytes(data[: len(data) // 2]),
    "truncated to 10 bytes": lambda data, path: path.write_bytes(data[:10]),
    "zip directory damaged": lambda data, path: path.write_bytes(data[:-60] + bytes(60)),
    "random bytes": lambda data, path: path.write_bytes(os.urandom(4096)),
    "text": lambda data, path: path.write_text("yolov8n weights, trust me"),
    "zip without a pickle": lambda data, path: _zip_of_text(path),
    "a bare tensor": lambda data, path: torch.save(torch.zeros(3), path),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_broken_checkpoints_are_refused(kind, inputs, out, capsys):
    bad = out.parent / f"{kind.replace(' ', '-')}.pt"
    CORRUPTIONS[kind]((inputs.folder / "tiny.pt").read_bytes(), bad)
    with pytest.raises(YoloPruneError, match=str(bad)):
        load_model(bad)
    assert str(bad) in assert_refused(prune_argv(bad, out, "--ratio", "0.5"), out, capsys)
    bad.unlink()


def test_a_folder_named_like_a_checkpoint_is_refused(out, capsys):
    folder = out.parent / f"{out.name}.pt"
    folder.mkdir()
    assert "is a directory" in assert_refused(prune_argv(folder, out, "--ratio", "0.5"), out, capsys)


@settings(FAST, max_examples=40)
@given(st.data())
def test_fuzzed_checkpoints_load_or_fail_clearly(inputs, data):
    original = (inputs.folder / "tiny.pt").read_bytes()
    blob = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4), label="corruptions")):
        at = data.draw(st.integers(0, len(blob) - 1), label="offset")
        blob[at : at + 8] = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
    blob = blob[: data.draw(st.integers(1, len(blob)), label="length")]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "fuzzed.pt")
        path.write_bytes(bytes(blob))
        try:
            model = load_model(path).model
        except YoloPruneError as e:
            assert str(path) in str(e)
            return
        model.eval()(torch.zeros(1, 3, 64, 64))  # whatever loads is a working model


# -- model YAMLs ----------------------------------------------------------------------------------
BROKEN_YAMLS = {
    "empty file": "",
    "a list": "- Conv\n- C2f\n",
    "no head": "nc: 3\nbackbone:\n  - [-1, 1, Conv, [8, 3, 2]]\n",
    "nc is a word": TINY.replace("nc: 3", "nc: three"),
    "backbone is a string": "nc: 3\nbackbone: Conv\nhead: []\n",
    "row of three fields": TINY.replace("[-1, 1, Conv, [16, 3, 2]]", "[-1, 1, Conv]"),
    "args not a list": TINY.replace("[-1, 1, Conv, [16, 3, 2]]", "[-1, 1, Conv, 16]"),
    "width is a word": TINY.replace("[-1, 1, Conv, [16, 3, 2]]", "[-1, 1, Conv, [sixteen, 3, 2]]"),
    "negative width": TINY.replace("[-1, 1, Conv, [16, 3, 2]]", "[-1, 1, Conv, [-16, 3, 2]]"),
    "from out of range": TINY.replace("[[2, 3], 1, Detect", "[[2, 9], 1, Detect"),
    "unknown module": TINY.replace("C2f", "C9000"),
    "not YAML": "nc: 3\nbackbone: [[-1, 1, Conv\n  x: : y\n",
    "binary": "\x00\x01\x02 garbage \xff",
}


@pytest.mark.parametrize("kind", BROKEN_YAMLS)
def test_broken_yamls_are_refused(kind, out, capsys):
    bad = out.parent / f"{kind.replace(' ', '-')}.yaml"
    bad.write_text(BROKEN_YAMLS[kind])
    with pytest.raises(YoloPruneError, match="does not build") as e:
        load_model(bad)
    assert str(bad) in str(e.value)
    assert str(bad) in assert_refused(prune_argv(bad, out, "--ratio", "0.5"), out, capsys)
    bad.unlink()


@st.composite
def mutated_yamls(draw: st.DrawFn) -> dict:
    """The tiny YAML with one to three of its values replaced by values of other types."""
    doc = yaml.safe_load(TINY)
    for _ in range(draw(st.integers(1, 3))):
        row = draw(st.sampled_from([*doc["backbone"], *doc["head"]]))
        where = draw(st.sampled_from(["field", "arg", "nc"]))
        value = hostile(draw)
        if where == "nc":
            doc["nc"] = value
        elif where == "arg" and isinstance(row[3], list) and row[3]:
            row[3][draw(st.integers(0, len(row[3]) - 1))] = value
        else:
            row[draw(st.integers(0, 3))] = value
    return doc


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@settings(FAST, max_examples=40)
@given(mutated_yamls())
def test_fuzzed_yamls_build_or_fail_clearly(doc):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "fuzzed.yaml")
        path.write_text(yaml.safe_dump(doc))
        try:
            analyze(path, run_probe=False)
        except YoloPruneError as e:
            assert str(path) in str(e)


# -- plans ----------------------------------------------------------------------------------------
def _plan_edit(edit):
    def make(text: str) -> str:
        doc = json.loads(text)
        edit(doc)
        return json.dumps(doc)

    return make


def _first(doc: dict) -> dict:
    return doc["convs"]["model.1.conv"]


BROKEN_PLANS = {
    "not JSON": (lambda t: t[: len(t) // 2], "is not a yoloprune plan"),
    "a JSON list": (lambda t: "[1, 2, 3]", "is not a yoloprune plan"),
    "no convs": (_plan_edit(lambda d: d.pop("convs")), "is not a yoloprune plan"),
    "convs is a list": (_plan_edit(lambda d: d.update(convs=[])), "is not a yoloprune plan"),
    "index out of range": (
        _plan_edit(lambda d: _first(d).update(keep_out=[0, 99])),
        "distinct channel indices",
    ),
    "negative index": (_plan_edit(lambda d: _first(d).update(keep_out=[-1, 0])), "distinct channel indices"),
    "duplicate index": (
        _plan_edit(lambda d: _first(d).update(keep_out=[0, 0, 1])),
        "distinct channel indices",
    ),
    "no index kept": (_plan_edit(lambda d: _first(d).update(keep_out=[])), "distinct channel indices"),
    "fractional index": (_plan_edit(lambda d: _first(d).update(keep_out=[0.5])), "distinct channel indices"),
    "entry not an object": (_plan_edit(lambda d: d["convs"].update({"model.1.conv": 3})), "distinct channel"),
    "unknown layer": (
        _plan_edit(lambda d: d["convs"].update({"model.99.conv": _first(d)})),
        "'model.99.conv'",
    ),
    "wrong width": (_plan_edit(lambda d: _first(d).update(out_before=64)), "had 64 output channels"),
    "another model": (_plan_edit(lambda d: d.update(fingerprint="0123456789abcdef")), "different model"),
    "round_to a word": (_plan_edit(lambda d: d["options"].update(round_to="x")), "have the wrong type"),
    "importance a list": (
        _plan_edit(lambda d: d["options"].update(importance=["l1"])),
        "have the wrong type",
    ),
    "unknown importance": (_plan_edit(lambda d: d["options"].update(importance="l7")), "unknown importance"),
    "coupled layers differ": (
        _plan_edit(lambda d: d["convs"]["model.2.cv1.conv"].update(keep_out=[0, 1, 2, 3, 4, 5])),
        "without the layers coupled to them",
    ),
}


@pytest.mark.parametrize("kind", BROKEN_PLANS)
def test_broken_plans_are_refused(kind, inputs, out, capsys):
    folder, a = inputs.folder, inputs.analysis
    make, message = BROKEN_PLANS[kind]
    text = make((folder / "plan.json").read_text())
    with pytest.raises(YoloPruneError, match=message):
        prune(None, plan=text, analysis=a)
    bad = out.parent / f"{kind.replace(' ', '-')}.json"
    bad.write_text(text)
    assert message.strip("'") in assert_refused(
        prune_argv(folder / "tiny.pt", out, "--plan-in", str(bad)), out, capsys
    )
    bad.unlink()


def test_a_plan_for_another_model_is_refused_even_without_its_fingerprint(inputs, out, capsys):
    doc = json.loads((inputs.folder / "plan.json").read_text())
    doc.pop("fingerprint")
    other = prune("yolov8n.yaml", PruneOptions(0.5, blocks=[1])).plan_json()
    with pytest.raises(YoloPruneError, match="different model"):
        prune(None, plan=other, analysis=inputs.analysis)
    doc["convs"] = {k: {**v, "out_before": v["out_before"] * 2} for k, v in doc["convs"].items()}
    with pytest.raises(YoloPruneError, match="output channels when the plan was made"):
        prune(None, plan=json.dumps(doc), analysis=inputs.analysis)


@st.composite
def mutated_plans(draw: st.DrawFn, text: str) -> str:
    """A valid plan with one to three values (an option, a conv entry, a field of one, a kept index, or
    the whole document's) replaced by hostile ones."""
    doc = json.loads(text)
    for _ in range(draw(st.integers(1, 3))):
        node = doc
        for _ in range(draw(st.integers(0, 3))):  # walk down from the root, to an option or an index
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            child = node[draw(st.sampled_from(keys))] if keys else None
            if not isinstance(child, (dict, list)):
                break
            node = child
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if keys:
            node[draw(st.sampled_from(keys))] = hostile(draw, 10**9, -(10**9), 1e308, "NaN")
    return json.dumps(doc)


@settings(FAST, max_examples=40)
@given(st.data())
def test_fuzzed_plans_replay_or_fail_clearly(inputs, data):
    text = data.draw(mutated_plans((inputs.folder / "plan.json").read_text()))
    try:
        r = prune(None, plan=text, analysis=inputs.analysis, check_onnx=False)  # replay, not export
    except YoloPruneError:
        return
    assert r.ok and r.equivalence.ok and r.structural.ok


# -- ratios and other numbers ---------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [float("nan"), float("inf"), -0.1, 1.0, 1.5, 1e300, "abc", "", True])
def test_absurd_ratios_are_refused_by_the_api(ratio, inputs):
    with pytest.raises(YoloPruneError, match="ratio"):
        prune(None, PruneOptions(ratio), analysis=inputs.analysis)


@pytest.mark.parametrize(
    "flags",
    [
        ["--ratio", ""],
        ["--ratio", "nan"],
        ["--ratio", "inf"],
        ["--ratio", "-1"],
        ["--ratio", "1"],
        ["--ratio", "half"],
        ["--ratio", "0.5", "--round-to", "0"],
        ["--ratio", "0.5", "--round-to", "-8"],
        ["--ratio", "0.5", "--max-ratio", "nan"],
        ["--target-flops", "0"],
        ["--target-flops", "-1"],
        ["--target-flops", "nan"],
        ["--target-params", "7"],
    ],
    ids=" ".join,
)
def test_absurd_numbers_are_refused_by_the_cli(flags, inputs, out, capsys):
    assert_refused(prune_argv(inputs.folder / "tiny.pt", out, *flags), out, capsys)


# -- the output folder ----------------------------------------------------------------------------
@contextlib.contextmanager
def read_only(folder: Path):
    """Make `folder` read-only for this process; as root (whom permissions do not stop), drop to an
    unprivileged user meanwhile."""
    folder.chmod(0o555)
    root = os.geteuid() == 0
    try:
        if root:
            os.seteuid(65534)
        yield
    finally:
        if root:
            os.seteuid(0)
        folder.chmod(0o777)


@pytest.mark.parametrize("fmt", ["pt", "safe"])
def test_read_only_output_folder(fmt, inputs, out, capsys):
    with read_only(out):
        if os.access(out, os.W_OK, effective_ids=True):
            pytest.skip("this process can write into a read-only folder")
        err = assert_refused(
            prune_argv(inputs.folder / "tiny.pt", out, "--ratio", "0.5", fmt=fmt), out, capsys
        )
    assert f"directory {out} is not writable; choose another folder" in err  # checked before pruning
    r = prune(None, PruneOptions(0.5), analysis=inputs.analysis)
    with read_only(out), pytest.raises(YoloPruneError, match=r"Permission denied|not writable"):
        r.save(out / f"pruned.{fmt}", format=fmt)
    assert os.listdir(out) == []


def _disk_full(obj, f, *args, **kwargs):
    Path(f).write_bytes(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fmt", ["pt", "safe"])
def test_full_disk_while_writing_the_model(fmt, inputs, out, capsys, monkeypatch):
    monkeypatch.setattr(torch.serialization, "save", _disk_full)
    monkeypatch.setattr("yoloprune.yolo.safe.save_file", _disk_full)
    argv = prune_argv(inputs.folder / "tiny.pt", out, "--ratio", "0.5", fmt=fmt)
    assert "No space left on device" in assert_refused(argv, out, capsys)  # the plan written first is removed


def test_full_disk_while_writing_the_plan(inputs, out, capsys, monkeypatch):
    write_text = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(".plan.json"):
            _disk_full(None, self)
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    assert "No space left" in assert_refused(
        prune_argv(inputs.folder / "tiny.pt", out, "--ratio", "0.5"), out, capsys
    )


def test_output_path_that_is_a_folder(inputs, out, capsys):
    (out / "pruned.pt").mkdir()
    argv = prune_argv(inputs.folder / "tiny.pt", out, "--ratio", "0.5")
    assert main(argv) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert os.listdir(out) == ["pruned.pt"] and os.listdir(out / "pruned.pt") == []


def test_an_interrupted_write_leaves_no_temporary_file(inputs, out, monkeypatch):
    def interrupted(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise KeyboardInterrupt

    r = prune(None, PruneOptions(0.5), analysis=inputs.analysis)  # its ONNX check saves a checkpoint too
    monkeypatch.setattr(torch.serialization, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        r.save(out / "pruned.pt")
    assert os.listdir(out) == []


class _Payload:
    """Unpickling this makes a folder: a stand-in for code a malicious checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_restricted_loading_runs_no_code_even_while_explaining_the_error(out, monkeypatch):
    marker = out / "code-ran"
    evil = out.parent / "evil.pt"
    torch.save({"model": _Payload(marker)}, evil)
    monkeypatch.setattr("ultralytics.nn.tasks.SAFE_LOAD", True)  # as ULTRALYTICS_SAFE_LOAD=1 does
    with pytest.raises(YoloPruneError, match=r"pickles posix\.mkdir, which restricted loading"):
        load_model(evil)
    assert not marker.exists()
