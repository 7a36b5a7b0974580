"""Where every benchmark writes its results: `results/NAME.json` and `results/NAME.md`, atomically."""

from __future__ import annotations

import json
from pathlib import Path

from yoloprune.atomic import atomic_write

RESULTS = Path(__file__).parent / "results"


def write_results(name: str, doc: dict, markdown: str) -> None:
    """Write `doc` as JSON and `markdown` beside it, each to a temporary file renamed into place."""
    RESULTS.mkdir(exist_ok=True)
    atomic_write(RESULTS / f"{name}.json", lambda tmp: tmp.write_text(json.dumps(doc, indent=1) + "\n"))
    atomic_write(RESULTS / f"{name}.md", lambda tmp: tmp.write_text(markdown))
