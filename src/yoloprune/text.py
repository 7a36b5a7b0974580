"""Words that agree with a count: the one place messages choose singular or plural.

>>> plural(1, "group"), plural(3, "group"), plural(0, "criterion", "criteria")
('1 group', '3 groups', '0 criteria')
>>> f"{plural(1, 'group')} {word(1, 'is', 'are')} pinned"
'1 group is pinned'
"""

from __future__ import annotations


def word(n: int, one: str, many: str | None = None) -> str:
    """`one` when `n` is 1, else `many` (default: `one` + "s"); the count itself is not written."""
    return one if n == 1 else (many if many is not None else one + "s")


def plural(n: int, one: str, many: str | None = None) -> str:
    """The count and the word that agrees with it: `plural(2, "epoch") == "2 epochs"`."""
    return f"{n} {word(n, one, many)}"
