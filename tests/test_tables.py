"""Every Markdown table is drawn by `yoloprune.reports.tables`: the benchmark tables too, so a cell's text
cannot break a table's columns."""

from __future__ import annotations

import re

from yoloprune.reports.measurements import Bench, Measurement
from yoloprune.reports.tables import markdown_table, text_table
from yoloprune.timing import Timing


def columns(line: str) -> int:
    """The number of cells of a Markdown table line (escaped pipes are inside a cell)."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def test_a_pipe_in_a_cell_stays_inside_it():
    table = markdown_table(["layer", "why"], [["model.0", "a | b"], ["model.1", "c"]]).splitlines()
    assert [columns(line) for line in table] == [2, 2, 2, 2]
    assert table[2] == "| model.0 | a \\| b |"


def test_bench_tables_keep_their_columns_whatever_a_note_says():
    t = Timing(2.0, 1.9, 2.1, 5)
    rows = tuple(
        Measurement(name, p, f, 1, 1, {"ort_cpu_1_thread": t, "tensorrt_fp16": None}, {"map50_95": 0.5})
        for name, p, f in (("a.pt", 400, 1000), ("b.pt", 100, 250))
    )
    b = Bench(rows, notes={"tensorrt_fp16": "n/a (no GPU | no TensorRT)"})
    for text in (b.to_markdown(), b.gains_markdown(["a", "b"])):
        table = [line for line in text.splitlines() if line.startswith("|")]
        assert len(table) == 4 and len({columns(line) for line in table}) == 1, text
    assert "n/a (no GPU \\| no TensorRT)" in b.to_markdown()


def test_text_table_right_aligns_the_columns_asked_for():
    lines = text_table(["name", "n"], [["a", 5], ["long name", 12]], right=[1]).splitlines()
    assert lines == ["name        n", "---------  --", "a           5", "long name  12"]
