"""Depth for Ultralytics models: which modules hold repeated blocks, where their outputs go, which
blocks can go and why the others cannot, and how importance is measured. Taking them out (the step,
its proof, the YAML counts) is `yoloprune.yolo.depth_step`'s; removing and proving a block is the
engine's (`yoloprune.pruning.depth`).

A module's repeated blocks are those its YAML row counts (`n`): C2f and its subclasses (C3k2,
C2fPSA, C2fCIB), C2fAttn and A2C2f keep them in an `nn.ModuleList` whose every output a conv reads
concatenated (`y.extend(m(y[-1]) for m in self.m)`, then `cv2(torch.cat(y, 1))`), HGBlock likewise
(`sc`); C3 and its subclasses (C3x, C3Ghost, RepCSP), RepC3, C1, C2, BottleneckCSP and C2PSA in an
`nn.Sequential` whose last output alone is used; RepNCSPELAN4 in its two RepCSPs, which share one
count (so they lose a block each, together); ResNetLayer in `layer`. A block that changes its
input's shape (the first of an HGBlock or a ResNetLayer, mostly) is not removable.
A block of a list whose count is fixed by Ultralytics' code (the two bottlenecks of a C3k inside
C3k2 or A2C2f, A2C2f's pair of ABlocks) is not removable: no model YAML could record it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from ultralytics.nn.modules import block as B

from yoloprune.errors import YoloPruneError
from yoloprune.graph.groups import covers
from yoloprune.pruning.count import flops_by_module
from yoloprune.pruning.depth import Block, Concat, Passage, observe
from yoloprune.yolo import adapter
from yoloprune.yolo.adapter import ULTRALYTICS


@dataclass(frozen=True)
class Chain:
    """How an Ultralytics module keeps its repeated blocks: the `lists` (attribute paths) that lose
    an entry together; the `consumer` conv that reads every entry concatenated (None: only the last
    output is used), after the chain's input and before the output of `suffix` (C2fAttn's attention);
    where its YAML row records the count (`arg`: that index of the row's arguments, as is; None: the
    row's repeats, scaled by the depth multiple)."""

    lists: tuple[str, ...] = ("m",)
    consumer: str | None = None
    suffix: str | None = None
    arg: int | None = None


# Looked up in order with isinstance, so a subclass with other rules comes before its base.
CHAINS: tuple[tuple[type[nn.Module], Chain | None], ...] = (
    (B.C2fAttn, Chain(consumer="cv2.conv", suffix="attn")),
    (B.C2f, Chain(consumer="cv2.conv")),  # C3k2, C2fPSA, C2fCIB
    (B.A2C2f, Chain(consumer="cv2.conv")),
    (B.HGBlock, Chain(consumer="sc.conv")),
    (B.C3TR, None),  # its `m` is one TransformerBlock, not a list of blocks
    (B.C3, Chain()),  # C3x, C3Ghost, C3k, RepCSP
    (B.RepC3, Chain()),
    (B.C2, Chain()),
    (B.C1, Chain()),
    (B.BottleneckCSP, Chain()),
    (B.C2PSA, Chain()),
    (B.ELAN1, None),  # no repeated blocks
    (B.RepNCSPELAN4, Chain(lists=("cv2.0.m", "cv3.0.m"), arg=3)),
    (B.ResNetLayer, Chain(lists=("layer",), arg=4)),
)


def chain_of(module: nn.Module) -> Chain | None:
    """The `Chain` of an Ultralytics module; None for a module without repeated blocks."""
    for cls, chain in CHAINS:
        if isinstance(module, cls):
            if isinstance(module, B.ResNetLayer) and module.is_first:
                return None
            return chain
    return None


@dataclass(frozen=True)
class Repeated:
    """One repeated block (or, for RepNCSPELAN4, the two that share a count) of block `owner`
    (`model.model[owner]`): removable when `reason` is empty, else why not. `change` is how much it
    changes its input (`Passage.change`; its importance: the least changing goes first), `flops` its
    share of the model's FLOPs."""

    blocks: tuple[Block, ...]
    owner: int
    kind: str
    change: float
    flops: float
    reason: str = ""

    @property
    def path(self) -> str:
        return self.blocks[0].path

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(b.path for b in self.blocks)

    @property
    def removable(self) -> bool:
        return not self.reason


def _kind(entry: nn.Module, owner: nn.Module) -> str:
    inner = (
        "+".join(type(m).__name__ for m in entry)
        if isinstance(entry, nn.Sequential)
        else type(entry).__name__
    )
    return f"{inner} in {type(owner).__name__}"


def _entries(model: nn.Module) -> list[tuple[str, nn.Module, Chain, bool]]:
    """(path, module, chain, top-level) of every module with repeated blocks; a top-level one is a
    model block (`model.I`), whose YAML row counts them. RepNCSPELAN4's RepCSPs are its own."""
    found, owned = [], set()
    for path, module in model.named_modules():
        chain = chain_of(module)
        if chain is None or path in owned:
            continue
        if isinstance(module, B.RepNCSPELAN4):
            owned.update(f"{path}.{name.rpartition('.')[0]}" for name in chain.lists)
        found.append((path, module, chain, path.count(".") == 1 and path.startswith("model.")))
    return found


def repeated_blocks(
    model: nn.Module,
    exclude: Iterable[str] = (),
    batches: Iterable[tuple[torch.Tensor, ...]] | None = None,
) -> list[Repeated]:
    """Every repeated block of `model`, removable or not, with its importance measured on `batches`
    (input tuples; default: two random images at the example size) and its share of the FLOPs at
    the example size.

    Example:
        >>> from yoloprune.yolo.io import load_model
        >>> found = repeated_blocks(load_model("yolov8n.yaml").model)
        >>> [(r.path, r.kind) for r in found if r.removable][:2]
        [('model.2.m.0', 'Bottleneck in C2f'), ('model.4.m.0', 'Bottleneck in C2f')]
    """
    exclude = tuple(exclude)
    entries = _entries(model)
    lists = {
        f"{path}.{name}": module.get_submodule(name)
        for path, module, chain, _ in entries
        for name in chain.lists
    }
    paths = [f"{p}.{k}" for p, container in lists.items() for k in range(len(container))]
    suffixes = [f"{p}.{c.suffix}" for p, _, c, _ in entries if c.suffix]
    example = ULTRALYTICS.example_inputs(model, batch=2, seed=0)
    seen = observe(model, paths + suffixes, batches if batches is not None else [example])
    flops = flops_by_module(model, ULTRALYTICS.example_inputs(model))
    total = max(flops[""], 1)
    found = _model_level(model, flops)
    for path, module, chain, top in entries:
        containers = [f"{path}.{name}" for name in chain.lists]
        n = len(lists[containers[0]])
        concat = _concats(model, path, module, chain, seen) if chain.consumer else {}
        for k in range(n):
            blocks = tuple(Block(f"{c}.{k}", concat.get(f"{c}.{k}")) for c in containers)
            passages = [seen[b.path] for b in blocks]
            found.append(
                Repeated(
                    blocks,
                    int(path.split(".")[1]) if path.startswith("model.") else -1,
                    _kind(lists[containers[0]][k], module),
                    max(p.change for p in passages),
                    sum(flops.get(b.path, 0) for b in blocks) / total,
                    _why_not(model, path, module, chain, top, k, passages, blocks, exclude),
                )
            )
    return found


def _concats(
    model: nn.Module, path: str, module: nn.Module, chain: Chain, seen: dict[str, Passage]
) -> dict[str, Concat]:
    """Where the consumer of a concatenating chain reads each block and the block's input, from the
    widths the blocks showed (entries: the chain's input pieces, the blocks' outputs, the suffix)."""
    container = f"{path}.{chain.lists[0]}"
    passages = [seen[f"{container}.{k}"] for k in range(len(module.get_submodule(chain.lists[0])))]
    suffix = seen.get(f"{path}.{chain.suffix}") if chain.suffix else None
    if any(p.shape_out is None for p in passages) or (suffix is not None and suffix.shape_out is None):
        return {}
    consumer = f"{path}.{chain.consumer}"
    widths = [p.shape_out[0] for p in passages]
    start = model.get_submodule(consumer).in_channels - sum(widths) - (suffix.shape_out[0] if suffix else 0)
    found, into = {}, None
    for k, (p, width) in enumerate(zip(passages, widths, strict=True)):
        out = (start, start + width)
        if into is None and p.shape_in is not None:
            into = (start - p.shape_in[0], start)
        if into is not None and into[1] - into[0] == width:
            found[f"{container}.{k}"] = Concat(consumer, out, into)
        into, start = out, start + width
    return found


def _why_not(
    model: nn.Module,
    path: str,
    module: nn.Module,
    chain: Chain,
    top: bool,
    k: int,
    passages: Sequence[Passage],
    blocks: Sequence[Block],
    exclude: tuple[str, ...],
) -> str:
    """Why block `k` of `module` cannot be removed; "" when it can."""
    name = type(module).__name__
    if not top:
        return (
            f"Ultralytics' code builds the {name} {path} with a fixed number of blocks, not the model "
            "YAML, so no YAML could record fewer"
        )
    for p in passages:
        if p.shape_in is None:
            return (
                "the forward pass does not run it exactly once on a tensor, so it is not a block of a chain"
            )
        if not p.keeps_shape:
            return f"it changes the shape ({p.shape_in} -> {p.shape_out}), so no identity can stand in for it"
    if chain.consumer and any(b.concat is None for b in blocks):
        return f"its slice of {path}.{chain.consumer}'s input could not be located"
    for b in blocks:
        for p in exclude:
            if covers(b.path, p) or covers(p, b.path):
                return f"it holds excluded layer {p}"
    return ""


def _model_level(model: nn.Module, flops: dict[str, int]) -> list[Repeated]:
    """The layers Ultralytics repeats at the model level (a YAML row with n > 1 for a module that
    takes no count, built as an `nn.Sequential` block): listed, not removable."""
    found = []
    for i, seq in enumerate(adapter.blocks(model)):
        if not isinstance(seq, nn.Sequential) or len(seq) < 2:
            continue
        path, name = adapter.block_path(i), type(seq[0]).__name__
        why = (
            f"Ultralytics repeats {name} {len(seq)} times as block {i} itself (an nn.Sequential); "
            "yoloprune removes blocks from a module's own list only"
        )
        share = flops.get(path, 0) / max(flops[""], 1) / len(seq)
        found += [
            Repeated((Block(f"{path}.{k}"),), i, f"{name} x{len(seq)}", 0.0, share, why)
            for k in range(len(seq))
        ]
    return found


def ranked_blocks(found: Sequence[Repeated], scope: Iterable[str] | None) -> list[Repeated]:
    """The removable blocks of `found` under `scope` (module paths; None: all), those that change
    their input least first."""
    prefixes = None if scope is None else tuple(scope)
    pool = [
        r for r in found if r.removable and (prefixes is None or any(covers(p, r.path) for p in prefixes))
    ]
    pool.sort(key=lambda r: r.change)  # stable: equal changes keep the model's order
    return pool


def blocks_named(found: Sequence[Repeated], paths: Iterable[str], where: str = "plan") -> list[Repeated]:
    """The removable blocks at `paths` (a plan's `removed_blocks`), refusing any other path and any
    block listed without the blocks it goes with."""
    paths = list(paths)
    by_path = {p: r for r in found for p in r.paths}
    chosen: dict[str, Repeated] = {}
    for p in paths:
        r = by_path.get(p)
        if r is None:
            removable = ", ".join(r.path for r in found if r.removable) or "none"
            raise YoloPruneError(
                f"{where} removes block {p!r}, which is not a repeated block of this model (removable: "
                f"{removable}); replay a plan on the model it was made for."
            )
        if not r.removable:
            raise YoloPruneError(f"{where} removes block {p!r}, which cannot be removed: {r.reason}.")
        chosen[r.path] = r
    missing = [p for r in chosen.values() for p in r.paths if p not in paths]
    if missing:
        raise YoloPruneError(
            f"{where} removes {', '.join(p for r in chosen.values() for p in r.paths if p in paths)} "
            f"without {', '.join(missing)}, which shares its count; replay only plans that yoloprune wrote."
        )
    return list(chosen.values())
