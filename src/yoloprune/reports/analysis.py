"""Analysis reports for a selection of blocks or layers: what must be pruned together, what breaks.

Scope: `analysis_report` gathers, for every conv in the selection, the coupled groups of its
output channels and what a naive prune of that conv alone would break
(`graph.explain.naive_breaks`), plus the selection's other groups (those a linear layer or no layer
produces), so that its groups are exactly those `yoloprune prune --blocks/--layers` selects and
its pinned groups exactly those prune leaves as they are (`Analysis.pinned`), each with its
reasons. Renderers: JSON (the stable contract) and Markdown (for people) here; Graphviz DOT and
SVG in `yoloprune.reports.analysis_dot`.
Writing files is the caller's job (see `yoloprune.atomic`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from yoloprune.graph.explain import Break, naive_breaks
from yoloprune.graph.groups import ChannelGraph, Group, covers
from yoloprune.graph.trace import Member
from yoloprune.pruning.choose import select_groups
from yoloprune.reports.tables import markdown_table
from yoloprune.text import plural, word
from yoloprune.yolo.api import Analysis, scope_of
from yoloprune.yolo.depth import Repeated, repeated_blocks
from yoloprune.yolo.inventory import BlockInfo, ConvInfo, describe, inventory


@dataclass(frozen=True)
class ConvFinding:
    """One selected conv: the groups of its output channels and what pruning it alone breaks."""

    block: int
    conv: ConvInfo
    groups: tuple[int, ...]
    breaks: tuple[Break, ...]


@dataclass(frozen=True)
class Report:
    """Everything the renderers show. `groups` are every group prune selects: first those of the
    selected convs' outputs, then the others; `placed` (group id -> block index) puts those that a
    layer produces (a linear layer) in its block; `pinned` are the ones prune leaves as they are."""

    source: str
    selection: str  # e.g. "blocks 1, 2, 3"
    args: str  # the same selection as command-line options, e.g. "--blocks 1 2 3"
    blocks: tuple[BlockInfo, ...]
    convs: tuple[ConvFinding, ...]
    groups: tuple[Group, ...]
    graph: ChannelGraph
    layer_names: dict[str, str]  # block path -> "layer 2 (C2f)", for every block of the model
    pinned: tuple[Group, ...] = ()
    placed: dict[int, int] = field(default_factory=dict)
    repeated: tuple[Repeated, ...] = ()  # the selection's repeated blocks, removable (`depth`) or why not

    def block_groups(self, index: int) -> list[Group]:
        ids = dict.fromkeys(g for c in self.convs if c.block == index for g in c.groups)
        ids.update(dict.fromkeys(g for g, b in self.placed.items() if b == index))
        return [self.graph.groups[i] for i in ids]

    def other_groups(self, index: int) -> list[Group]:
        """The block's groups that none of its selected convs produces."""
        return [self.graph.groups[g] for g, b in self.placed.items() if b == index]


def analysis_report(
    analysis: Analysis,
    blocks: Iterable[int] | None = None,
    layers: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
) -> Report:
    """Report on the selected blocks and layers (every block when neither is given). `exclude`
    names the paths `analysis` was made with `exclude=`, for the prune command the report suggests.

    Example:
        >>> from yoloprune.yolo.api import analyze
        >>> r = analysis_report(analyze("yolov8n.yaml"), blocks=[1, 2, 3])
        >>> [c.conv.name for c in r.convs][:2], [g.prunable for g in r.groups]
        (['model.1.conv', 'model.2.cv1.conv'], [True, True, True, True, True])
    """
    blocks = None if blocks is None else [int(b) for b in blocks]
    layers = None if layers is None else list(layers)
    exclude = tuple(exclude)
    selected = scope_of(analysis.model, blocks, layers)  # refuses unknown blocks and layers, helpfully
    inv = inventory(analysis)
    scope = selected or tuple(b.path for b in inv)
    chosen = [b for b in inv if any(covers(p, b.path) or covers(b.path, p) for p in scope)]
    label = describe(analysis.model)
    graph, convs, group_ids = analysis.graph, [], {}
    for b in chosen:
        for c in b.convs:
            if any(covers(p, c.name) for p in scope):
                ids = tuple(g.id for g in graph.groups_of(c.name, "out"))
                group_ids.update(dict.fromkeys(ids))
                convs.append(ConvFinding(b.index, c, ids, tuple(naive_breaks(graph.trace, c.name, label))))
    placed = {}
    for g in select_groups(graph, selected):
        if g.id not in group_ids:
            group_ids[g.id] = None
            block = next((b.index for b in chosen if covers(b.path, _producer(g))), None)
            if block is not None and g.producers:  # a block's verdict: the groups its layers make
                placed[g.id] = block
    parts = [f"{word(len(blocks), 'block')} {', '.join(map(str, blocks))}"] if blocks else []
    parts += [f"{word(len(layers), 'layer')} {', '.join(layers)}"] if layers else []
    args = [f"--blocks {' '.join(map(str, blocks))}"] if blocks else []
    args += [f"--layers {' '.join(layers)}"] if layers else []
    args += [f"--exclude {' '.join(exclude)}"] if exclude else []
    return Report(
        analysis.source,
        " and ".join(parts) or "all blocks",
        " ".join(args),
        tuple(chosen),
        tuple(convs),
        tuple(graph.groups[i] for i in group_ids),
        graph,
        {b.path: f"layer {b.index} ({b.type})" for b in inv},
        tuple(analysis.pinned(selected)),
        placed,
        tuple(
            r
            for r in repeated_blocks(analysis.model, exclude or analysis.exclude)
            if any(covers(p, r.path) or covers(r.path, p) for p in scope)
        ),
    )


# -- verdicts ---------------------------------------------------------------------------------------
def _verdict(report: Report, block: BlockInfo) -> str:
    groups = report.block_groups(block.index)
    if not groups:
        return "nothing to prune" if not block.convs else "not selected"
    free = sum(g.prunable for g in groups)
    return "prunable" if free == len(groups) else "not prunable" if free == 0 else "partly prunable"


def ranges_text(ranges: Sequence[tuple[int, int]], width: int) -> str:
    """Channel ranges as text: "all 64", or "0–15, 32–47 of 64"."""
    if len(ranges) == 1 and ranges[0] == (0, width):
        return f"all {width}"
    spans = ", ".join(f"{a}" if b == a + 1 else f"{a}–{b - 1}" for a, b in ranges)
    return f"{spans} of {width}"


def member_rows(report: Report, group: Group) -> list[tuple[Member, list[tuple[int, int]], int]]:
    """(member, its channel ranges, member width) in group order."""
    by_member: dict[Member, list[tuple[int, int]]] = {}
    for member, a, b in report.graph.ranges(group):
        by_member.setdefault(member, []).append((a, b))
    return [(m, r, len(report.graph.layout[m])) for m, r in by_member.items()]


def _producer(group: Group) -> str:
    return (group.producers or group.members)[0].module


def _pins_text(group: Group) -> str:
    return "; ".join(group.reasons)


# -- JSON -------------------------------------------------------------------------------------------
def _break_dict(b: Break) -> dict:
    return {
        "module": b.module,
        "expected": b.expected,
        "got": b.got,
        "reason": b.reason,
        "path": list(b.path),
    }


def to_json(report: Report) -> str:
    """The report as JSON: `{"blocks", "groups", "pinned", "naive"}` plus `source` and `selection`;
    `pinned` lists the groups prune leaves as they are, each with its producing layer and reasons."""
    doc = {
        "source": report.source,
        "selection": report.selection,
        "blocks": [
            {
                **b.as_dict(),
                "groups": [g.id for g in report.block_groups(b.index)],
                "verdict": _verdict(report, b),
            }
            for b in report.blocks
        ],
        "groups": [
            {
                "id": g.id,
                "size": g.size,
                "prunable": g.prunable,
                "pinned_by": [{"member": p.member, "reason": p.reason} for p in g.pinned_by],
                "members": [
                    {"module": m.module, "axis": m.axis, "start": a, "stop": b, "width": w}
                    for m, ranges, w in member_rows(report, g)
                    for a, b in ranges
                ],
            }
            for g in report.groups
        ],
        "pinned": [{"id": g.id, "layer": _producer(g), "reasons": list(g.reasons)} for g in report.pinned],
        "repeated_blocks": [
            {
                "path": r.path,
                "paths": list(r.paths),
                "block": r.owner,
                "kind": r.kind,
                "flops_share": round(r.flops, 6),
                "change": round(r.change, 6),
                "removable": r.removable,
                "reason": r.reason,
            }
            for r in report.repeated
        ],
        "naive": [
            {"conv": c.conv.name, "block": c.block, "breaks": [_break_dict(b) for b in c.breaks]}
            for c in report.convs
        ],
    }
    return json.dumps(doc, indent=1)


# -- Markdown ---------------------------------------------------------------------------------------
def _group_md(report: Report, group: Group) -> list[str]:
    status = "prunable" if group.prunable else "**pinned: cannot be pruned**"
    rows = [
        [f"`{m.module}`", m.axis, ranges_text(r, w), f"×{sum(b - a for a, b in r) // group.size}"]
        for m, r, w in member_rows(report, group)
    ]
    lines = [
        f"**Group {group.id}** · {plural(group.size, 'channel')} · {status}. These layers lose channels "
        "together:",
        "",
        markdown_table(["Layer", "Axis", "Channels", "Per group channel"], rows),
        "",
    ]
    if group.pinned_by:
        pins = [[f"`{p.member}`", p.reason] for p in group.pinned_by]
        lines += ["Pinned by:", "", markdown_table(["Where", "Why"], pins), ""]
    return lines


def _breaks_md(finding: ConvFinding) -> list[str]:
    c = finding.conv
    head = f"Pruning `{c.name}` alone (half of its {c.out} filters, with its BatchNorm, nothing else) "
    if not finding.breaks:
        return [head + "breaks no layer.", ""]
    rows = [[f"`{b.module}`", b.expected, b.got, b.reason, f"`{' → '.join(b.path)}`"] for b in finding.breaks]
    return [head + "breaks:", "", markdown_table(["Layer", "Expects", "Gets", "Why", "Path"], rows), ""]


def _block_lines(report: Report, block: BlockInfo) -> list[str]:
    """The block's verdict, then what each of its selected convs breaks when pruned alone."""
    groups = report.block_groups(block.index)
    name = f"Block {block.index} ({block.type})"
    if not block.convs and not groups:
        return [
            f"**{name}: nothing to prune** — it has no convolutions; its channels follow the layers that "
            f"produce its inputs ({_from_text(block)}) and are pruned with them.",
            "",
        ]
    if not groups:
        return [f"**{name}**: none of its layers is selected.", ""]
    n, free = len(groups), sum(g.prunable for g in groups)
    if free == n:
        text = f"{plural(n, 'group')}, all prunable when pruned as groups"
    else:
        pinned = ", ".join(f"group {g.id} (`{_producer(g)}`)" for g in groups if not g.prunable)
        text = f"{free} of {plural(n, 'group')} prunable; pinned: {pinned}"
    alone = [
        f"- pruning `{c.conv.name}` alone breaks "
        + ", ".join(f"`{b.module}` (expects {b.expected}, gets {b.got})" for b in c.breaks)
        for c in report.convs
        if c.block == block.index and c.breaks
    ]
    return [f"**{name}: {_verdict(report, block)}** — {text}" + (":" if alone else "."), "", *alone, ""]


def _from_text(block: BlockInfo) -> str:
    f = block.from_ if isinstance(block.from_, tuple) else (block.from_,)
    return ", ".join(f"layer {block.index + i if i < 0 else i}" for i in f)


def _headline(report: Report) -> list[str]:
    """The answer first: can the selection be pruned, and what does pruning layers alone do."""
    n, free = len(report.groups), sum(g.prunable for g in report.groups)
    if not report.groups:
        return ["The selection contains no convolutions, so there is nothing to prune in it.", ""]
    pinned = plural(len(report.pinned), "pinned group")
    if free == n:
        lines = [
            f"**No channel mismatch if you prune by groups.** {word(n, 'The', 'All')} "
            f"{plural(n, 'channel group')} produced by {report.selection} {word(n, 'is', 'are')} prunable. "
            "A group lists every layer that must lose the same "
            "channels; the groups are independent, so they can be pruned together or one at a time, in "
            "any order."
        ]
    elif free:
        lines = [
            f"**{free} of {plural(n, 'channel group')} in {report.selection} {word(free, 'is', 'are')} "
            f"prunable.** Prune leaves the {pinned} as {word(len(report.pinned), 'it is', 'they are')}; "
            "*Pinned groups* below says why."
        ]
    else:
        lines = [
            f"**Nothing here can be pruned: {word(n, 'its', 'all')} {plural(n, 'channel group')} "
            f"{word(n, 'is', 'are')} pinned.** *Pinned groups* below "
            "says why."
        ]
    naive = [c for c in report.convs if c.breaks]
    if naive:
        breaks = sum(len(c.breaks) for c in naive)
        lines += [
            "",
            f"**Pruning a conv by itself breaks the model**: {len(naive)} of the "
            f"{plural(len(report.convs), 'conv')} here, pruned alone, {word(len(naive), 'leaves', 'leave')} "
            f"{plural(breaks, 'layer input')} expecting channels that no longer exist "
            "(tables below).",
        ]
    if free:
        command = " ".join(
            filter(None, ["yoloprune prune", report.source, "--ratio 0.5", report.args, "--out pruned.pt"])
        )
        lines += [
            "",
            f"To prune safely: `{command}` removes whole groups, then checks the pruned model numerically "
            "against the original.",
        ]
    return [*lines, ""]


def to_markdown(report: Report) -> str:
    """A report for people: verdict first, then per block and per conv the evidence."""
    lines = [f"# Pruning analysis: {report.source}, {report.selection}", "", *_headline(report)]
    rows = [
        [
            b.index,
            b.type,
            _from_text(b) if b.index else "input",
            f"{_ch(b.in_channels)} → {_ch(b.out_channels)}",
            len(b.convs),
            _group_count(report, b),
            _verdict(report, b),
        ]
        for b in report.blocks
    ]
    lines += [
        "## Summary",
        "",
        markdown_table(
            ["Block", "Type", "Input from", "Channels in → out", "Convs", "Prunable groups", "Verdict"], rows
        ),
        "",
    ]
    if report.pinned:
        rows = [[g.id, g.size, f"`{_producer(g)}`", _pins_text(g)] for g in report.pinned]
        lines += [
            "## Pinned groups",
            "",
            "Every group prune leaves as it is, and why (the tracer's and the probe's findings, and "
            "`--exclude`):",
            "",
            markdown_table(["Group", "Channels", "Layer", "Why"], rows),
            "",
        ]
    lines += _repeated_md(report.repeated)
    shown: dict[int, str] = {}
    for b in report.blocks:
        lines += [f"## Block {b.index} ({b.type})", "", *_block_lines(report, b)]
        for f in (c for c in report.convs if c.block == b.index):
            c = f.conv
            lines += [
                f"### `{c.name}` — conv {b.convs.index(c)}: out {c.out}, in {c.in_}, {c.kernel_text}",
                "",
            ]
            for gid in f.groups:
                if gid in shown:
                    lines += [f"Its output channels are in group {gid}, shown under `{shown[gid]}`.", ""]
                else:
                    shown[gid] = c.name
                    lines += _group_md(report, report.graph.groups[gid])
            lines += _breaks_md(f)
        for g in report.other_groups(b.index):
            lines += [f"### Group {g.id}, produced by no selected convolution", "", *_group_md(report, g)]
    lines += [
        "---",
        "*Group*: channels that must be removed from several layers at once (a conv's filters, its "
        "BatchNorm, every layer that reads them, and whatever a split, concat or residual add ties to "
        "them). Every prunable group was test-removed in a real forward pass and matched the original with "
        "those channels masked.",
    ]
    return "\n".join(lines) + "\n"


def _repeated_md(repeated: Sequence[Repeated]) -> list[str]:
    if not repeated:
        return []
    rows = [
        [
            " + ".join(f"`{p}`" for p in r.paths),
            r.kind,
            f"{r.flops:.1%}",
            f"{r.change:.3g}" if r.removable else "",
            "yes" if r.removable else f"no: {r.reason}",
        ]
        for r in repeated
    ]
    n = sum(r.removable for r in repeated)
    return [
        "## Repeated blocks (depth)",
        "",
        f"{n} of {plural(len(repeated), 'repeated block')} can be removed whole (`--depth F` removes that "
        "fraction of them, those that change their input least first; with a target, `--depth auto` "
        "chooses how many; *change* is ||output - input|| / ||output|| on the example input):",
        "",
        markdown_table(["Block", "Kind", "FLOPs", "Change", "Removable"], rows),
        "",
    ]


def _ch(counts: Sequence[int]) -> str:
    return " + ".join(map(str, counts)) or "-"


def _group_count(report: Report, block: BlockInfo) -> str:
    groups = report.block_groups(block.index)
    return f"{sum(g.prunable for g in groups)}/{len(groups)}" if groups else "-"
