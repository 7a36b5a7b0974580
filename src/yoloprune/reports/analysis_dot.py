"""The analysis report as a picture: Graphviz DOT (layers clustered by block, a hub per group, the
breaks of naive prunes dashed) and SVG rendered by Graphviz's `dot` program."""

from __future__ import annotations

import shutil
import subprocess

from yoloprune.errors import YoloPruneError
from yoloprune.reports.analysis import Report, member_rows, ranges_text

_PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22")
_PINNED = "#d62728"


def _q(text: str) -> str:
    """A DOT string literal; newlines become DOT's `\\n` line breaks."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _cluster_of(module: str) -> str:
    """The block path a module lies in ("model.2" for "model.2.cv1.conv"), "" outside blocks."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and parts[0] == "model" and parts[1].isdigit() else ""


def to_dot(report: Report) -> str:
    """Graphviz DOT: layers clustered by block, one hub node per group (pinned groups red) joined to
    its members, and dashed arrows from each selected conv to what pruning it alone would break."""
    types = report.graph.trace.module_types
    modules: dict[str, None] = {}
    edges: list[str] = []
    for i, g in enumerate(report.groups):
        color = _PINNED if not g.prunable else _PALETTE[i % len(_PALETTE)]
        hub = _q(f"g{g.id}")
        label = _q(f"group {g.id}\n{g.size} ch, {'prunable' if g.prunable else 'pinned'}")
        edges.append(f'{hub} [shape=ellipse, color="{color}", fontcolor="{color}", label={label}];')
        for m, ranges, w in member_rows(report, g):
            if types.get(m.module, "").startswith("BatchNorm"):
                continue  # a norm always follows its conv; drawing it only adds clutter
            modules[m.module] = None
            span = _q(f"{m.axis} {ranges_text(ranges, w)}")
            edges.append(f'{_q(m.module)} -> {hub} [dir=none, color="{color}", label={span}, fontsize=8];')
    for f in report.convs:
        modules[f.conv.name] = None
        for b in f.breaks:
            modules[b.module] = None
            label = _q(f"alone: expects {b.expected}, gets {b.got}")
            style = f'style=dashed, color="#555555", label={label}, fontsize=8'
            edges.append(f"{_q(f.conv.name)} -> {_q(b.module)} [{style}];")
    selected = {c.conv.name for c in report.convs}
    pinned = {m.module for g in report.groups if not g.prunable for m in g.producers}
    clusters: dict[str, list[str]] = {}
    for module in modules:
        label = _q(f"{module}\n{types.get(module, '')}")
        attrs = [f"label={label}"]
        attrs += ["penwidth=2"] if module in selected else []
        attrs += [f'color="{_PINNED}"'] if module in pinned else []
        clusters.setdefault(_cluster_of(module), []).append(f"{_q(module)} [{', '.join(attrs)}];")
    title = f"{report.source}, {report.selection}: groups (red = pinned), breaks of naive prunes (dashed)"
    lines = [
        "digraph yoloprune {",
        "  rankdir=LR;",
        '  node [shape=box, fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica"];',
        f"  label={_q(title)};",
    ]
    for key, members in clusters.items():
        if not key:
            lines += [f"  {m}" for m in members]
            continue
        label = report.layer_names.get(key, key)
        lines += [f"  subgraph {_q('cluster_' + key)} {{", f"    label={_q(label)};", "    color=gray70;"]
        lines += [f"    {m}" for m in members] + ["  }"]
    lines += [f"  {e}" for e in edges] + ["}"]
    return "\n".join(lines) + "\n"


def to_svg(dot_text: str) -> bytes:
    """Render DOT with Graphviz's `dot` program, which must be on PATH."""
    exe = shutil.which("dot")
    if exe is None:
        raise YoloPruneError(
            "--format svg needs Graphviz's `dot` program, which is not on PATH. Install Graphviz "
            "(e.g. `apt install graphviz` or `brew install graphviz`), or write --format dot and render "
            "it elsewhere."
        )
    done = subprocess.run([exe, "-Tsvg"], input=dot_text.encode(), capture_output=True, check=False)
    if done.returncode != 0:
        raise YoloPruneError(f"Graphviz `dot` failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
