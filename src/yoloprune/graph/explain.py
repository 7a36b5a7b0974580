"""What a naive single-layer prune would break, and why.

"Naive" means: remove half of one conv's output channels (with the normalisation that directly
follows it) and change nothing else, as a hand-written pruning script does. Starting from that
conv's output, the channel-count change is followed through the traced op log until it reaches a
place that expects the old count: that place *breaks*. Each break names the module, the expected
and the received channel count, the path from the conv, and the kind of coupling responsible.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from yoloprune.graph.ops import OpKind
from yoloprune.graph.trace import Member, Node, Trace
from yoloprune.text import plural

# Ops through which a smaller channel count simply flows on.
_FLOW = {OpKind.ELEMENTWISE, OpKind.SPATIAL, OpKind.SOFTMAX, OpKind.REDUCE, OpKind.PERMUTE,
         OpKind.EXPAND, OpKind.RESHAPE}  # fmt: skip


@dataclass(frozen=True)
class Break:
    """One place that would receive the wrong number of channels."""

    module: str
    expected: int
    got: int
    reason: str
    path: tuple[str, ...]


def _consumers(trace: Trace) -> dict[int, list[Node]]:
    out: dict[int, list[Node]] = defaultdict(list)
    for node in trace.nodes:
        for v in dict.fromkeys(node.inputs):
            out[v].append(node)
    return out


def naive_breaks(trace: Trace, conv: str, describe: Callable[[str], str] = lambda m: m) -> list[Break]:
    """Everything that breaks if half of `conv`'s output channels are removed and nothing else.

    `describe(module)` turns a module path into a label for reasons (e.g. "layer 12 (Concat)").
    """
    start = next(
        (n for n in trace.nodes if n.kind is OpKind.CONV and n.member and n.member.module == conv), None
    )
    if start is None or not start.outputs:
        return []
    consumers = _consumers(trace)
    width = len(trace.values[start.outputs[0]].elems)
    removed = width // 2
    breaks: dict[str, Break] = {}
    # (value id, channels removed from it, path so far, last coupling seen, is the conv's own output)
    queue = deque([(start.outputs[0], removed, (conv,), "", True)])
    seen = set()
    while queue:
        vid, lost, path, via, fresh = queue.popleft()
        if (vid, lost) in seen:
            continue
        seen.add((vid, lost))
        size = len(trace.values[vid].elems)
        for node in consumers.get(vid, ()):
            hop = path if path[-1] == (node.module or "model") else (*path, node.module or "model")
            kind = node.kind
            if kind in _FLOW or (kind is OpKind.BATCH_NORM and fresh):  # own norm is pruned with it
                queue.extend((o, lost, hop, via, False) for o in node.outputs)
            elif kind is OpKind.CAT and node.detail.get("slots") is not None:
                slot = node.inputs.index(vid)
                note = f"concat slot {slot} of {describe(node.module)}"
                here = (*hop[:-1], f"{hop[-1]} (concat slot {slot})")
                queue.extend((o, lost, here, note, False) for o in node.outputs)
            elif kind is OpKind.SPLIT and node.detail.get("chunk"):
                pieces = len(node.outputs)
                left = (size - lost) // pieces
                note = f"split inside {describe(node.module)}: chunk({pieces}) now gives pieces of {left}"
                per_piece = lost // pieces + (lost % pieces > 0)
                for i, o in enumerate(node.outputs):
                    queue.append((o, per_piece, (*hop[:-1], f"{hop[-1]} (chunk piece {i})"), note, False))
            else:
                brk = _break(trace, node, size, lost, hop, via, describe)
                breaks.setdefault(brk.module, brk)
    return list(breaks.values())


def _break(
    trace: Trace,
    node: Node,
    size: int,
    lost: int,
    path: tuple[str, ...],
    via: str,
    describe: Callable[[str], str],
) -> Break:
    kind = node.kind
    where, got = node.module or "model", size - lost
    if kind in (OpKind.CONV, OpKind.LINEAR) and node.member is not None:
        member = node.member
        expected = len(trace.members.get(member, ())) or size
        if Member(member.module, "in") not in trace.members:
            reason = f"depthwise conv {member.module} has exactly {expected} filters, one per channel"
        elif via:
            reason = via
        elif describe(member.module) != describe(path[0]):
            reason = f"direct consumer in {describe(member.module)}"
        else:
            reason = f"direct consumer inside {describe(member.module)}"
        return Break(member.module, expected, expected - lost, reason, path)
    if kind is OpKind.BATCH_NORM and node.member is not None:
        return Break(
            node.member.module, size, size - lost, "batch norm holds one statistic per channel", path
        )
    if kind is OpKind.BROADCAST:
        what = "residual add" if "add" in node.op else f"element-wise {node.op}"
        keeps = f"{what} in {describe(node.module)}: other operand keeps {plural(size, 'channel')}"
        return Break(where, size, got, keeps, path)
    if kind is OpKind.SPLIT:
        sizes = node.detail.get("sizes")
        return Break(where, size, got, f"split into fixed sizes {sizes} in {describe(node.module)}", path)
    if kind is OpKind.CAT:
        return Break(where, size, got, f"concatenation along another axis in {describe(node.module)}", path)
    expects = f"{node.op} in {describe(node.module)} expects {plural(size, 'channel')}"
    reason = node.detail.get("reason") or expects
    return Break(where, size, got, reason, path)
