"""Run code in a fresh process where yoloprune cannot be imported: what plain Ultralytics users see."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

BLOCK = 'import sys\nsys.modules["yoloprune"] = None  # a pickled reference to yoloprune now fails\n'


def run_without_yoloprune(body: str, *args: object, cwd: Path | None = None) -> str:
    """Run the Python `body` with `args` as sys.argv[1:] and return its stdout; fail on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(body), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout
