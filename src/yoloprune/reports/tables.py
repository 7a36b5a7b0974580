"""Tables as text: aligned plain text for a terminal and GitHub Markdown for reports. Every table
yoloprune prints or writes is drawn here; callers only choose headers and cells.

Example:
    >>> print(text_table(["layer", "channels"], [["model.0.conv", 16], ["model.1.conv", 32]], right=[1]))
    layer         channels
    ------------  --------
    model.0.conv        16
    model.1.conv        32
    >>> print(markdown_table(["layer", "why"], [["model.22", "a | b"]]))
    | layer | why |
    |---|---|
    | model.22 | a \\| b |
"""

from __future__ import annotations

from collections.abc import Sequence


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """An aligned plain-text table; columns in `right` are right-aligned (numbers)."""
    cells = [[str(c) for c in r] for r in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *map(line, cells[1:])])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; `|` inside cells is escaped."""

    def line(r: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *map(line, rows)])
