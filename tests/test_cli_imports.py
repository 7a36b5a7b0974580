"""`yoloprune --help`, each command's `--help` and argument errors answer without loading torch or
Ultralytics (seconds of imports): the parser imports nothing heavy, commands import the library lazily."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from yoloprune.choices import CRITERIA_NAMES
from yoloprune.choices import Aggregation as ChoicesAggregation
from yoloprune.importance import CRITERIA, Aggregation

SCRIPT = textwrap.dedent(
    """
    import argparse, contextlib, io, json, sys
    from yoloprune.cli import parser as cli

    commands = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    argvs = [["--help"], [], ["bogus"], ["prune", "m.yaml"], ["prune", "m.yaml", "--ratio", "x"]]
    argvs += [["inspect", "m.yaml", "--format", "pdf"], ["prune", "m.yaml", "--importance", "bogus"]]
    argvs += [[name, "--help"] for name in commands] + [["data", "digits", "--help"]]
    codes = []
    for argv in argvs:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            codes.append(cli.main(argv))
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ultralytics", "numpy"))
    print(json.dumps({"argvs": argvs, "codes": codes, "heavy": heavy}))
    """
)


def test_help_and_argument_errors_load_neither_torch_nor_ultralytics():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    codes = dict(zip(map(" ".join, result["argvs"]), result["codes"], strict=True))
    helps = {argv: code for argv, code in codes.items() if argv.endswith("--help")}
    assert len(helps) >= 12 and {"--help", "prune --help", "data digits --help"} <= helps.keys()
    assert set(helps.values()) == {0}
    errors = {argv: code for argv, code in codes.items() if argv not in helps}
    assert set(errors.values()) == {2}, errors
    assert result["heavy"] == []


def test_the_command_line_offers_exactly_the_registered_criteria():
    assert tuple(sorted(CRITERIA)) == CRITERIA_NAMES
    assert Aggregation is ChoicesAggregation
