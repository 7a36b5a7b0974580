"""Hypothesis strategies: random models from a grammar of real building blocks, and random Ultralytics YAMLs.

A strategy draws a *spec* made of plain tuples, strings and numbers, so a failing case prints as a literal
that can be pasted into `@example(...)` and kept as a regression test; `build_net(spec)` and
`yaml_text(spec)` turn specs into a module or a model YAML.

Plain grammar (`net_specs`): every model reads one (B, 3, 16, 16) input. Each node reads earlier
*features* by index (0 is the input) and appends one or more features (channels, scale), e.g.
`("cbr", 0, 8, 3, 1, "silu")` is Conv+BN+SiLU on the input making 8 channels at stride 1 and
`("chunk", 1, 2)` appends the two halves of feature 1. Heads turn features into the model's outputs:
`("out", i)`, `("linear", i, how, n)` (an `nn.Linear` after a global pool and `view`, a mean, or a
`flatten` of the whole (C, H, W)) and `("detect", (i, j))` (an Ultralytics `Detect` head).
`PIN_REASONS` says which pins each node kind may cause, so a test can check that every pin of a
random model is explained by its structure. `yaml_specs` draws random detection-model YAMLs from
Ultralytics blocks (Conv, C2f, C3k2, C3, Bottleneck, SPPF, Upsample, Concat, Detect).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from torch import nn
from ultralytics.nn.modules import C3, SPPF, Bottleneck, C2f, C3k2, Concat, Conv, Detect

from yoloprune.graph.groups import OUTPUT_REASON

SIZE = 16  # input height and width
IN_CHANNELS = 3
WIDTHS = (4, 6, 8, 12, 16)
MAX_SCALE = 4  # at most two stride-2 steps: 16x16 -> 4x4

settings.register_profile(
    "yoloprune",
    deadline=None,  # shared CPUs: timing says nothing about correctness
    derandomize=True,  # the same cases on every run and every machine
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(  # fresh cases every run; failures are kept in .hypothesis/ and replayed first
    "yoloprune-slow",
    settings.get_profile("yoloprune"),
    derandomize=False,
    database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
)
FAST = settings.get_profile("yoloprune")
SLOW = settings.get_profile("yoloprune-slow")

ACTS = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "hardswish": nn.Hardswish,
    "leaky": lambda: nn.LeakyReLU(0.1),
    "tanh": nn.Tanh,
}

# Pins a model's structure explains, as substrings of "member: reason": a pin is explained when it holds
# every substring of one entry. Any model may have BASE_PINS; a node or head kind may add PIN_REASONS[kind].
BASE_PINS = (("input: model input channels",), (OUTPUT_REASON,), ("output: reaches the model output",))
PIN_REASONS = {
    "grouped": ("grouped conv (groups=",),
    "split": ("(torch.split): split into fixed sizes",),
    "gate": ("a 1-channel tensor is broadcast over",),
    "unknown": ("(torch.cummax): torch.cummax is not an op the tracer understands",),
    "slice": ("(Tensor.__getitem__): the channel axis is sliced with fixed offsets",),
    "softmax": ("softmax across the channel axis",),
    "mean_c": ("(Tensor.mean): a reduction over the channel axis",),
    "linear:flatten": ("(torch.flatten): reshape merges or splits the channel axis",),
    "detect": (  # its outputs, and how it decodes them: as in `yaml_allowed_pins`
        ".dfl (Tensor.view): reshape merges or splits the channel axis",
        "(torch.cat): concatenation of tensors with different channel axes",
    ),
}


def explained(member: str, reason: str, allowed: tuple[tuple[str, ...], ...]) -> bool:
    """True when the pin `member: reason` holds every substring of one `allowed` entry."""
    text = f"{member}: {reason}"
    return any(all(part in text for part in entry) for entry in allowed)


# -- the plain grammar ------------------------------------------------------------------------------
class Scale(nn.Module):
    """A learned per-channel scale: x * w, w of shape (1, C, 1, 1)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand(1, c, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


class Gate(nn.Module):
    """A 1-channel spatial attention map broadcast over all channels: x * sigmoid(conv(x))."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.att = nn.Conv2d(c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.att(x))  # (B, C, H, W) * (B, 1, H, W)


class SE(nn.Module):
    """Squeeze-and-excitation: per-channel weights from global pooling, broadcast over H and W."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, max(2, c // 2), 1), nn.Conv2d(max(2, c // 2), c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))  # (B, C, 1, 1)
        return x * torch.sigmoid(s)


def cbr(c1: int, c2: int, k: int, s: int, act: str = "silu", groups: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(c1, c2, k, s, padding=k // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c2), ACTS[act]())


def _layer(node: tuple, chans: list[int]) -> nn.Module:
    """The module a node owns (nn.Identity for pure tensor ops)."""
    kind, src = node[0], node[1]
    c1 = chans[src] if isinstance(src, int) else 0
    if kind == "conv":
        _, _, c2, k, s = node
        return nn.Conv2d(c1, c2, k, s, padding=k // 2)
    if kind == "cbr":
        _, _, c2, k, s, act = node
        return cbr(c1, c2, k, s, act)
    if kind == "dw":
        conv = nn.Conv2d(c1, c1, 3, padding=1, groups=c1, bias=not node[2])
        return nn.Sequential(conv, nn.BatchNorm2d(c1)) if node[2] else conv
    if kind == "grouped":
        _, _, c2, g = node
        return cbr(c1, c2, 3, 1, "relu", groups=g)
    modules = {
        "Conv": lambda c2, k, s: Conv(c1, c2, k, s),
        "C2f": lambda c2, n, sc: C2f(c1, c2, n, sc),
        "C3k2": lambda c2, c3k, sc: C3k2(c1, c2, 1, c3k, 0.5, False, 1, sc),
        "C3": lambda c2, sc: C3(c1, c2, 1, sc),
        "Bottleneck": lambda c2, sc: Bottleneck(c1, c2, sc),
        "SPPF": lambda c2: SPPF(c1, c2, 5),
        "gate": lambda: Gate(c1),
        "scale": lambda: Scale(c1),
        "se": lambda: SE(c1),
    }
    if kind in modules:
        return modules[kind](*node[2:])
    if kind == "cat" and node[2]:
        return Concat(1)
    if kind == "convT":
        return nn.ConvTranspose2d(c1, node[2], 2, 2)
    if kind == "mlp":  # a pointwise Linear over channels-last features, as in ConvNeXt blocks
        return nn.Linear(c1, node[2])
    return nn.Identity()


def _apply(node: tuple, layer: nn.Module, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """Run one node on the features so far; returns the features it adds."""
    kind, src = node[0], node[1]
    if kind == "cat":
        xs = [feats[i] for i in src]
        return [layer(xs) if node[2] else torch.cat(xs, 1)]
    x = feats[src]
    if kind == "up":
        return [F.interpolate(x, scale_factor=2.0, mode="nearest")]
    if kind == "chunk":
        return list(x.chunk(node[2], 1))
    if kind == "split":
        return list(torch.split(x, list(node[2]), 1))
    if kind == "add":
        return [x + feats[node[2]]]
    if kind == "mul":
        return [x * feats[node[2]]]
    if kind == "pool":
        _, _, how, k, s = node
        pool = F.max_pool2d if how == "max" else F.avg_pool2d
        return [pool(x, k, s, padding=k // 2)]
    if kind == "unknown":
        return [torch.cummax(x, dim=2).values]
    if kind == "slice":
        return [x[:, : node[2]]]
    if kind == "catw":
        return [torch.cat([x, feats[node[2]]], 3)[..., ::2]]  # (B, C, H, 2W) -> (B, C, H, W)
    if kind == "stack":
        return [torch.stack([x, feats[node[2]]], 0).amax(0)]  # (2, B, C, H, W) -> (B, C, H, W)
    if kind == "softmax":
        return [torch.softmax(x, node[2])]
    if kind == "mean_c":
        return [x.mean(1, keepdim=True)]  # (B, 1, H, W)
    if kind == "pad":
        return [F.pad(x, (1, 1, 1, 1))[..., 1:-1, 1:-1]]
    if kind == "mlp":
        return [layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)]  # (B, H, W, C) through the Linear
    return [layer(x)]


def _head_layer(head: tuple, chans: list[int], scales: list[int]) -> nn.Module:
    if head[0] == "linear":
        _, src, how, n = head
        c = chans[src] * ((SIZE // scales[src]) ** 2 if how == "flatten" else 1)
        return nn.Linear(c, n)
    if head[0] == "detect":
        det = Detect(2, 4, False, tuple(chans[i] for i in head[1]))
        det.stride = torch.tensor([8.0 * scales[i] for i in head[1]])
        return det
    return nn.Identity()


def _apply_head(head: tuple, layer: nn.Module, feats: list[torch.Tensor]) -> object:
    if head[0] == "linear":
        x, how = feats[head[1]], head[2]
        if how == "pool":
            x = F.adaptive_avg_pool2d(x, 1).view(x.shape[0], -1)  # (B, C)
        elif how == "mean":
            x = x.mean((2, 3))  # (B, C)
        else:
            x = torch.flatten(x, 1)  # (B, C*H*W): merges the channel axis
        return layer(x)
    if head[0] == "detect":
        return layer([feats[i] for i in head[1]])
    return feats[head[1]]


def shapes(spec: tuple) -> tuple[list[int], list[int]]:
    """Channels and scale (input size / feature size) of every feature of a spec."""
    nodes, _ = spec
    chans, scales = [IN_CHANNELS], [1]
    for node in nodes:
        for c, s in _out_shapes(node, chans, scales):
            chans.append(c)
            scales.append(s)
    return chans, scales


def _out_shapes(node: tuple, chans: list[int], scales: list[int]) -> list[tuple[int, int]]:
    kind, src = node[0], node[1]
    if kind == "cat":
        return [(sum(chans[i] for i in src), scales[src[0]])]
    c, s = chans[src], scales[src]
    if kind in ("conv", "cbr", "Conv"):
        return [(node[2], s * node[4])]
    if kind in ("grouped", "C2f", "C3k2", "C3", "Bottleneck", "SPPF", "slice", "mlp"):
        return [(node[2], s)]
    if kind == "convT":
        return [(node[2], s // 2)]
    if kind == "mean_c":
        return [(1, s)]
    if kind == "up":
        return [(c, s // 2)]
    if kind == "chunk":
        return [(c // node[2], s)] * node[2]
    if kind == "split":
        return [(size, s) for size in node[2]]
    if kind == "pool":
        return [(c, s * node[4])]
    return [(c, s)]


class Net(nn.Module):
    """A model that runs a spec: `layers[k]` belongs to node k, `heads[k]` to head k."""

    def __init__(self, spec: tuple) -> None:
        super().__init__()
        self.spec = spec
        nodes, heads = spec
        chans, scales = shapes(spec)
        self.layers = nn.ModuleList(_layer(node, chans) for node in nodes)
        self.heads = nn.ModuleList(_head_layer(h, chans, scales) for h in heads)

    def forward(self, x: torch.Tensor) -> object:
        feats = [x]
        for node, layer in zip(self.spec[0], self.layers, strict=True):
            feats.extend(_apply(node, layer, feats))
        outs = [_apply_head(h, layer, feats) for h, layer in zip(self.spec[1], self.heads, strict=True)]
        return outs[0] if len(outs) == 1 else tuple(outs)


def build_net(spec: tuple, seed: int = 0) -> Net:
    """The model a spec describes, with weights drawn from `seed`."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Net(spec).eval()


def example_input(batch: int = 2) -> tuple[torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return (torch.randn(batch, IN_CHANNELS, SIZE, SIZE, generator=g),)


def allowed_pins(spec: tuple) -> tuple[tuple[str, ...], ...]:
    """The pins a `net_specs` model's structure explains (see `explained`)."""
    nodes, heads = spec
    kinds = (
        {n[0] for n in nodes} | {h[0] for h in heads} | {f"linear:{h[2]}" for h in heads if h[0] == "linear"}
    )
    return BASE_PINS + tuple((r,) for kind in kinds for r in PIN_REASONS.get(kind, ()))


NODE_KINDS = ("cbr", "conv", "Conv", "C2f", "C3k2", "C3", "Bottleneck", "SPPF", "dw", "grouped", "cat",
              "chunk", "split", "add", "mul", "pool", "up", "convT", "gate", "scale", "se", "mlp", "slice",
              "catw", "stack", "softmax", "mean_c", "pad", "unknown")  # fmt: skip


@st.composite
def _node(draw: st.DrawFn, chans: list[int], scales: list[int]) -> tuple:
    kind = draw(st.sampled_from(NODE_KINDS))
    src = len(chans) - 1 - draw(st.integers(0, len(chans) - 1))  # shrinks towards the latest feature
    c, s = chans[src], scales[src]
    width = st.sampled_from(WIDTHS)
    stride = st.sampled_from((1, 2) if s < MAX_SCALE else (1,))
    same_scale = [i for i in range(len(chans)) if scales[i] == s]
    same_shape = [i for i in same_scale if chans[i] == c]
    divisors = [k for k in (2, 3) if c % k == 0]
    group_sizes = [g for g in range(2, c) if c % g == 0]
    if kind == "cbr":
        return (
            kind,
            src,
            draw(width),
            draw(st.sampled_from((1, 3))),
            draw(stride),
            draw(st.sampled_from(list(ACTS))),
        )
    if kind in ("conv", "Conv"):
        return (kind, src, draw(width), draw(st.sampled_from((1, 3))), draw(stride))
    if kind == "C2f":
        return (kind, src, draw(width), draw(st.integers(1, 2)), draw(st.booleans()))
    if kind == "C3k2":
        return (kind, src, draw(width), draw(st.booleans()), draw(st.booleans()))
    if kind in ("C3", "Bottleneck"):  # c as an output width keeps the residual add; hidden width c2 // 2
        return (kind, src, draw(st.sampled_from((c, *WIDTHS) if c >= 2 else WIDTHS)), draw(st.booleans()))
    if kind == "SPPF" and c >= 2:  # its hidden width is c // 2
        return (kind, src, draw(width))
    if kind == "dw":
        return (kind, src, draw(st.booleans()))
    if kind == "grouped" and group_sizes:
        g = draw(st.sampled_from(group_sizes))
        return (kind, src, g * draw(st.integers(1, 3)), g)
    if kind == "cat":
        return (
            kind,
            tuple(draw(st.lists(st.sampled_from(same_scale), min_size=2, max_size=4))),
            draw(st.booleans()),
        )
    if kind == "chunk" and divisors:
        return (kind, src, draw(st.sampled_from(divisors)))
    if kind == "split" and c >= 3:
        first = draw(st.integers(1, c - 1).filter(lambda a: 2 * a != c))
        return (kind, src, (first, c - first))
    if kind in ("add", "mul", "catw", "stack"):
        return (kind, src, draw(st.sampled_from(same_shape)))
    if kind == "slice" and c >= 2:
        return (kind, src, draw(st.integers(1, c - 1)))
    if kind == "softmax":
        return (kind, src, draw(st.sampled_from((1, -1))))
    if kind == "convT" and s > 1:
        return (kind, src, draw(width))
    if kind == "mlp":
        return (kind, src, draw(width))
    if kind == "pool":
        return (kind, src, draw(st.sampled_from(("max", "avg"))), draw(st.sampled_from((1, 3))), draw(stride))
    if kind == "up" and s > 1:
        return (kind, src)
    if kind in ("gate", "scale", "se", "unknown", "mean_c", "pad"):
        return (kind, src)
    return ("cbr", src, draw(width), 1, 1, "silu")  # the kind does not fit this feature


@st.composite
def _head(draw: st.DrawFn, chans: list[int], scales: list[int], src: int) -> tuple:
    kind = draw(st.sampled_from(("out", "linear", "detect")))
    if kind == "linear":
        return (kind, src, draw(st.sampled_from(("pool", "mean", "flatten"))), draw(st.integers(2, 5)))
    if kind == "detect":
        more = draw(st.lists(st.integers(1, len(chans) - 1), max_size=2, unique=True))
        return (kind, tuple(dict.fromkeys((src, *more))))
    return (kind, src)


@st.composite
def net_specs(draw: st.DrawFn, max_nodes: int = 8) -> tuple:
    """A random plain-torch model spec: 1 to `max_nodes` nodes, then 1 to 3 heads."""
    chans, scales, nodes = [IN_CHANNELS], [1], []
    for _ in range(draw(st.integers(1, max_nodes))):
        node = draw(_node(chans, scales))
        nodes.append(node)
        for c, s in _out_shapes(node, chans, scales):
            chans.append(c)
            scales.append(s)
    last = len(chans) - 1
    extra = draw(st.lists(st.integers(1, last), max_size=2, unique=True))
    heads = [draw(_head(chans, scales, i)) for i in dict.fromkeys((last, *extra))]
    return (tuple(nodes), tuple(heads))


# -- random Ultralytics YAMLs -----------------------------------------------------------------------
YAML_WIDTHS = (8, 16, 24, 32)


@st.composite
def _block(draw: st.DrawFn, c: int, repeats: int = 2) -> tuple:
    kind = draw(st.sampled_from(("C2f", "C3k2", "C3", "Bottleneck", "Conv", "SPPF")))
    if kind == "C2f":
        return (-1, draw(st.integers(1, repeats)), kind, [c, draw(st.booleans())])
    if kind == "C3k2":
        return (
            -1,
            draw(st.integers(1, repeats)),
            kind,
            [c, draw(st.booleans()), draw(st.sampled_from((0.25, 0.5)))],
        )
    if kind == "C3":
        return (-1, draw(st.integers(1, repeats)), kind, [c, draw(st.booleans())])
    if kind == "Bottleneck":
        return (-1, 1, kind, [c, draw(st.booleans())])
    if kind == "SPPF":
        return (-1, 1, kind, [c, 5])
    return (-1, 1, kind, [c, draw(st.sampled_from((1, 3))), 1])


@st.composite
def yaml_specs(draw: st.DrawFn, repeats: int = 2) -> tuple:
    """A random detection-model YAML spec: a strided backbone of Ultralytics blocks (C2f, C3k2 and C3
    with 1 to `repeats` repeated blocks), an optional upsample-concat neck path, and a Detect head
    over one to three layers."""
    width = st.sampled_from(YAML_WIDTHS)
    rows = [(-1, 1, "Conv", [draw(width), 3, 2])]
    stride = [2]  # per layer
    for _ in range(draw(st.integers(1, 3))):
        rows.append((-1, 1, "Conv", [draw(width), 3, 2]))
        stride.append(stride[-1] * 2)
        for _ in range(draw(st.integers(0, 2))):
            rows.append(draw(_block(draw(width), repeats)))
            stride.append(stride[-1])
    backbone = len(rows)
    finer = [i for i in range(backbone) if stride[i] * 2 == stride[-1]]
    if finer and draw(st.booleans()):
        rows.append((-1, 1, "nn.Upsample", [None, 2, "nearest"]))
        rows.append(([-1, draw(st.sampled_from(finer))], 1, "Concat", [1]))
        rows.append(draw(_block(draw(width), repeats)))
        stride += [stride[-1] // 2] * 3
    last = len(rows) - 1
    more = draw(st.lists(st.integers(1, last - 1), max_size=2, unique=True)) if last > 1 else []
    rows.append((sorted({last, *more}), 1, "Detect", ["nc"]))
    return (backbone, tuple(rows))


def yaml_text(spec: tuple) -> str:
    """The model YAML of a `yaml_specs` spec."""
    backbone, rows = spec

    def line(row: tuple) -> str:
        f, n, m, args = row
        items = ", ".join("None" if a is None else f'"{a}"' if a == "nearest" else str(a) for a in args)
        return f"  - [{f}, {n}, {m}, [{items}]]"

    body = ["nc: 3", "backbone:", *map(line, rows[:backbone]), "head:", *map(line, rows[backbone:])]
    return "\n".join(body) + "\n"


def yaml_allowed_pins(spec: tuple) -> tuple[tuple[str, ...], ...]:
    """The pins a `yaml_specs` model's structure explains: its input, and the Detect head's outputs, its
    DFL reshape and its concatenation of boxes with class scores."""
    det = f"model.{len(spec[1]) - 1}"
    return (
        ("input: model input channels",),
        (f"{det}.cv2.", OUTPUT_REASON),
        (f"{det}.cv3.", OUTPUT_REASON),
        (f"{det}.dfl (Tensor.view): reshape merges or splits the channel axis",),
        (f"{det} (torch.cat): concatenation of tensors with different channel axes",),
    )
