"""Messages agree with their counts: one helper (`yoloprune.text`) and the messages that use it."""

from __future__ import annotations

import itertools
import re
import tokenize
from pathlib import Path

from yoloprune.cli import main
from yoloprune.reports.analysis import analysis_report, to_markdown
from yoloprune.text import plural, word
from yoloprune.yolo.api import analyze

SRC = Path(__file__).parents[1] / "src" / "yoloprune"
TINY = Path(__file__).parent / "data" / "tiny.yaml"  # block 0 and 1: one conv, one group each


def test_plural_and_word():
    assert [plural(n, "group") for n in (0, 1, 2)] == ["0 groups", "1 group", "2 groups"]
    assert plural(1, "class", "classes") == "1 class" and plural(4, "class", "classes") == "4 classes"
    assert plural(2, "criterion", "criteria") == "2 criteria"
    assert (word(1, "is", "are"), word(5, "is", "are")) == ("is", "are")


def _hand_plurals(path: Path) -> list[int]:
    """Lines that pluralise by hand: `'s' * (n != 1)` (in code or inside an f-string), `class(es)`."""
    with tokenize.open(path) as f:
        tokens = list(tokenize.generate_tokens(f.readline))
    found = []
    for tok, nxt in itertools.pairwise(tokens):
        suffix = tok.type == tokenize.STRING and re.fullmatch(r"(['\"])e?s\1", tok.string) is not None
        text = tok.string if tok.type in _STRINGS else ""
        if (suffix and nxt.string == "*") or re.search(r"[a-z]\(e?s\)|\{\s*(['\"])e?s\1\s*\*", text):
            found.append(tok.start[0])
    return found


_STRINGS = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


def test_no_message_pluralises_by_hand():
    """A count's noun goes through `yoloprune.text`."""
    hits = {str(p.relative_to(SRC)): lines for p in sorted(SRC.rglob("*.py")) if (lines := _hand_plurals(p))}
    assert hits == {}


def test_the_hand_plural_check_finds_both_kinds(tmp_path):
    sample = tmp_path / "sample.py"
    lines = ["a = f\"group{'s' * (n != 1)}\"", 'b = "of {n} class(es)"', "c = len(s) + f(s)", 'd = "s" + x']
    sample.write_text("\n".join(lines) + "\n")
    assert _hand_plurals(sample) == [1, 2]


def test_report_of_one_group_speaks_in_the_singular():
    md = to_markdown(analysis_report(analyze(str(TINY), run_probe=False), blocks=[1]))
    assert "The 1 channel group produced by block 1 is prunable." in md
    assert "1 of the 1 conv here, pruned alone, leaves 1 layer input expecting" in md
    assert not re.search(r"\b1 (channel groups|groups|convs|layer inputs)\b", md)


def test_prune_summary_of_one_conv_speaks_in_the_singular(capsys):
    argv = ["prune", str(TINY), "--layers", "model.0.conv", "--ratio", "0.5", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 of 1 prunable group pruned" in out and "1 conv narrowed" in out
    assert not re.search(r"\b1 (prunable groups|pinned groups|convs)\b|1 pinned group left as they are", out)
