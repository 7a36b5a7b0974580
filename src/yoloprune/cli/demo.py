"""`python -m yoloprune.cli.demo` (`make demo`): the seed question answered, end to end, on yolov8s.

A user pruned "Block 1, 2, 3" of yolov8s layer by layer, hit channel mismatches everywhere and
concluded only block 1 could be pruned. This demo runs the CLI on the same model: the inventory,
the analysis of blocks 1-3 (what must be pruned together and what a lone-layer prune breaks), a
verified 50% prune of blocks 1-3 together, and a verified 50% prune of every prunable group.
Outputs go to ./demo_out/. No weights are downloaded: the model is built from Ultralytics'
shipped yolov8s.yaml and saved as demo_out/yolov8s.pt, standing in for a trained best.pt. Its
random weights get BatchNorm statistics under which every channel reaches the outputs, as in a
trained model, so the final `verify` would notice a single wrong channel.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from yoloprune.cli.parser import main as cli
from yoloprune.errors import YoloPruneError
from yoloprune.yolo.api import excited_copy
from yoloprune.yolo.io import load_model, save_checkpoint

OUT = Path("demo_out")
MODEL = "yolov8s.yaml"
SHOWN_LINES = 47  # of the analysis Markdown


def _run(*argv: str) -> None:
    print(f"\n$ yoloprune {' '.join(argv)}", flush=True)
    code = cli(list(argv))
    if code != 0:
        raise SystemExit(f"demo stopped: `yoloprune {' '.join(argv)}` exited with {code}")


def _section(title: str) -> None:
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}", flush=True)


def main() -> int:
    start = time.perf_counter()
    OUT.mkdir(exist_ok=True)
    original = str(OUT / "yolov8s.pt")
    try:
        save_checkpoint(excited_copy(load_model(MODEL).model), original)
    except YoloPruneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Built {MODEL} (random weights, nothing downloaded) and saved it as {original}.")
    print("On your own model, pass your trained checkpoint (e.g. runs/detect/train/weights/best.pt).")

    _section("1. The model's blocks and the convs inside them (Ultralytics' model.model[i])")
    _run("inspect", original)

    _section("2. Blocks 1, 2, 3: what must be pruned together, and what pruning one conv alone breaks")
    analysis = OUT / "analysis.md"
    _run("analyze", original, "--blocks", "1", "2", "3", "--out", str(analysis))
    lines = analysis.read_text(encoding="utf-8").splitlines()
    print("\n".join(lines[:SHOWN_LINES]))
    print(f"[... {len(lines) - SHOWN_LINES} more lines in {analysis}]")

    _section("3. Prune blocks 1, 2, 3 together at 50%: whole groups, so nothing can mismatch")
    _run(
        "prune",
        original,
        "--blocks",
        "1",
        "2",
        "3",
        "--ratio",
        "0.5",
        "--out",
        str(OUT / "pruned_blocks1-3.pt"),
    )

    _section("4. Prune every prunable group at 50% (widths rounded to multiples of 8), then verify the files")
    pruned, plan = str(OUT / "pruned.pt"), str(OUT / "plan.json")
    _run("prune", original, "--ratio", "0.5", "--round-to", "8", "--out", pruned, "--plan", plan)
    _run("verify", original, pruned, "--plan", plan)
    print(f"\n`ultralytics.YOLO({pruned!r})` loads the result directly; fine-tune it to recover accuracy.")
    print(f"Demo finished in {time.perf_counter() - start:.0f} s; outputs are in {OUT}/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
