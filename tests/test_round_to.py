"""`--round-to auto`: resolved once to this machine's channel block (CPU flags mocked here), recorded in
plans and recipes as the number, and accepted by the API, the CLI and recipes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from yoloprune import channel_blocks
from yoloprune.cli import main
from yoloprune.cli.parser import _parser
from yoloprune.errors import YoloPruneError
from yoloprune.pruning.allocate import Limits
from yoloprune.pruning.options import PruneOptions, resolve_round_to
from yoloprune.pruning.plan import plan_options
from yoloprune.workflows.recipe import load_recipe, recipe_from_cli, recipe_from_dict
from yoloprune.yolo.api import analyze, prune

AVX512 = "fpu sse2 avx avx2 fma avx512f avx512bw avx512vl"
AVX2 = "fpu sse2 avx avx2 fma"
BASE = {"version": 1, "schedule": "oneshot", "model": "best.pt", "data": "data.yaml", "ratio": 0.5}


@pytest.fixture
def cpu(monkeypatch):
    """Pretend this machine's first processor reports these Linux flags."""

    def pretend(flags: str) -> None:
        monkeypatch.setattr(channel_blocks, "cpuinfo", lambda: {"model name": "Test CPU", "flags": flags})

    return pretend


def test_cpuinfo_reads_the_first_processor(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(
        f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {AVX512}\n\nprocessor\t: 1\nflags\t: sse2\n"
    )
    info = channel_blocks.cpuinfo(path)
    assert info["model name"] == "AMD EPYC" and info["flags"] == AVX512
    assert channel_blocks.cpuinfo(tmp_path / "missing") == {}


@pytest.mark.parametrize(
    ("flags", "multiple"),
    [
        (AVX512, 16),  # MLAS's NCHWc block with AVX-512F
        ("avx2 avx512bw avx512vl", 8),  # no AVX-512F, no 16-wide kernels
        (AVX2, 8),
        ("", 8),  # e.g. ARM: /proc/cpuinfo says "Features", not "flags"
    ],
)
def test_auto_is_the_runtime_channel_block(flags, multiple, cpu):
    assert channel_blocks.channel_multiple(flags=frozenset(flags.split())) == multiple
    cpu(flags)
    assert resolve_round_to("auto") == multiple


@pytest.mark.parametrize(("capability", "multiple"), [("AVX512", 16), ("AVX2", 8), ("DEFAULT", 8)])
def test_without_proc_cpuinfo_pytorch_reads_the_cpu(capability, multiple, monkeypatch):
    monkeypatch.setattr(channel_blocks, "cpuinfo", lambda: {})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert channel_blocks.channel_multiple() == multiple


@pytest.mark.parametrize("value", [0, -8, 1.5, 8.0, "8", "AUTO", "fast", True, None])
def test_round_to_refuses_anything_but_a_positive_integer_or_auto(value):
    with pytest.raises(
        YoloPruneError, match=r"round_to=.* must be (a whole number such as 8, or auto|1 or more)"
    ):
        PruneOptions(round_to=value)


def test_options_hold_the_resolved_number(cpu):
    cpu(AVX512)
    options = PruneOptions(round_to="auto")
    assert options.round_to == 16 and Limits.of(options).round_to == 16
    assert options.to_json()["round_to"] == 16
    assert PruneOptions(round_to=np.int64(8)).round_to == 8


def test_small_groups_stay_whole_and_up_to_twice_the_multiple_keep_one_multiple():
    """No width but a multiple of N (or the full width): a group of N channels or fewer cannot lose any
    (ONNX Runtime would pad it back to the block anyway); one below 2N can only keep N."""
    limits = Limits(max_ratio=0.9, round_to=16)
    assert limits.kept(np.array([12, 16, 24, 31, 40]), np.array([6, 8, 12, 16, 20])).tolist() == [
        12,
        16,
        16,
        16,
        16,
    ]


@pytest.fixture(scope="module")
def v8n():
    return analyze("yolov8n.yaml")


def test_plan_records_the_number_and_replays_on_another_cpu(v8n, cpu):
    cpu(AVX512)
    r = prune(None, PruneOptions(0.5, blocks=[0, 2], round_to="auto"), analysis=v8n)
    doc = json.loads(r.plan_json())
    assert doc["options"]["round_to"] == 16 and r.options.round_to == 16
    assert doc["convs"] and all(len(c["keep_out"]) % 16 == 0 for c in doc["convs"].values())
    assert "model.0.conv" not in doc["convs"]  # 16 channels: kept whole with a multiple of 16
    cpu(AVX2)  # the plan holds 16, not "auto": replaying it elsewhere changes nothing
    assert plan_options(r.plan_json()).round_to == 16
    again = prune(None, plan=r.plan_json(), analysis=v8n)
    assert again.plan.convs == r.plan.convs and again.options.round_to == 16


def test_recipe_round_to_auto_is_saved_as_the_number(tmp_path, cpu):
    cpu(AVX2)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**BASE, "round_to": "auto"}))
    recipe = load_recipe(path)
    assert recipe.options.round_to == 8
    recipe.save(tmp_path / "saved.yaml")
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text())["round_to"] == 8
    cpu(AVX512)  # a resumed run reads the saved copy: still 8
    assert load_recipe(tmp_path / "saved.yaml") == recipe


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", "round_to='fast' must be a whole number such as 8, or auto"),
        (True, "round_to=True must be a whole number"),
        (8.0, "round_to=8.0 must be a whole number"),
        (0, "round_to=0 must be 1 or more"),
    ],
)
def test_recipe_refuses_a_bad_round_to(value, message):
    with pytest.raises(YoloPruneError, match=message):
        recipe_from_dict({**BASE, "round_to": value})


@pytest.mark.parametrize(
    "argv",
    [
        ["prune", "yolov8n.yaml", "--ratio", "0.5", "--dry-run"],
        ["sensitivity", "yolov8n.yaml", "--data", "d.yaml", "--target-flops", "0.5"],
        ["run", "--schedule", "oneshot", "--model", "m.pt", "--data", "d.yaml", "--out", "o"],
    ],
    ids=lambda argv: argv[0],
)
def test_cli_takes_auto_or_a_number(argv, capsys):
    assert _parser().parse_args([*argv, "--round-to", "auto"]).round_to == "auto"
    assert _parser().parse_args([*argv, "--round-to", "16"]).round_to == 16
    assert main([*argv, "--round-to", "sixteen"]) == 2
    assert "expected a whole number such as 8, or auto; got 'sixteen'" in capsys.readouterr().err


def test_run_flags_resolve_auto_in_the_recipe(cpu):
    cpu(AVX512)
    flags = {"schedule": "oneshot", "model": "m.pt", "data": "d.yaml", "ratio": 0.5, "round_to": "auto"}
    assert recipe_from_cli([], flags).options.round_to == 16


def test_cli_dry_run_rounds_to_the_block(cpu, capsys):
    cpu(AVX512)
    argv = ["prune", "yolov8n.yaml", "--ratio", "0.5", "--blocks", "2", "--round-to", "auto", "--dry-run"]
    assert main(argv) == 0
    assert "widths rounded to multiples of 16" in capsys.readouterr().out
