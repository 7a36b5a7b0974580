"""The checked list of ops the tracer knows (`graph/ops.py` `KNOWN_OPS`), entry by entry.

Every entry is exercised by a recipe below that calls it inside a small model, between a producing conv
`a` (and a second one, `c`, for binary ops) and a consuming head: the trace must log the op, the
channels must stay prunable (or be pinned with the reason the op's kind gives), and pruning must equal
the masked original. An entry with neither a recipe nor a reason to skip it fails the closure test, so
the list cannot grow untested. Ops outside the list pin the channels they touch and are named in the
explanation a user reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from yoloprune.cli import main
from yoloprune.graph.groups import build_groups
from yoloprune.graph.ops import KNOWN_OPS, OpKind, op_kind, op_name
from yoloprune.graph.trace import Member, trace
from yoloprune.pruning.choose import choose, select_groups
from yoloprune.pruning.plan import PruneOptions
from yoloprune.pruning.verify import excite, prune_and_compare
from yoloprune.yolo.api import analyze, prune

T = torch.Tensor
pytestmark = pytest.mark.filterwarnings("ignore:`nn.functional.upsample` is deprecated")
X = (torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)),)


def _flat(f):  # run a (B, C, L) op on (B, C, H, W) features and fold them back
    return lambda m, x, y: f(m, x.flatten(2)).unflatten(2, x.shape[2:])


def _vol(f):  # run a (B, C, D, H, W) op on (B, C, H, W) features with D = 1
    return lambda m, x, y: f(m, x.unsqueeze(2)).squeeze(2)


def _cl(f):  # run a channels-last op: (B, H, W, C)
    return lambda m, x, y: f(m, x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _seq(f):  # run a (L, B, C) sequence op on (B, C, H, W) features: tokens are the pixels
    return lambda m, x, y: f(m, x.flatten(2).permute(2, 0, 1)).permute(1, 2, 0).unflatten(2, x.shape[2:])


def _with(f):  # x op y, y a second producer's output of the same shape: their channels are coupled
    return lambda m, x, y: f(x, y)


def _inplace(f):
    def run(m, x, y):
        z = x.clone()
        return f(z, y)

    return run


def _scalar(f):  # x combined with a scalar made by a factory op (no channels)
    return lambda m, x, y: x + f(x).sum() * 0


# op -> recipe(model, x, y) returning a (B, C, H, W) or (B, C) tensor that the head reads.
RECIPES = {
    torch.conv1d: _flat(lambda m, x: torch.conv1d(x, m.w1.weight, m.w1.bias)),
    torch.conv2d: lambda m, x, y: torch.conv2d(x, m.w2.weight, m.w2.bias, 1, 1),
    torch.conv3d: _vol(lambda m, x: torch.conv3d(x, m.w3.weight, m.w3.bias, 1, (0, 1, 1))),
    torch.conv_transpose1d: _flat(lambda m, x: torch.conv_transpose1d(x, m.t1.weight, m.t1.bias)),
    torch.conv_transpose2d: lambda m, x, y: torch.conv_transpose2d(x, m.t2.weight, m.t2.bias, 2),
    F.linear: _cl(lambda m, x: F.linear(x, m.lin.weight, m.lin.bias)),
    torch._C._nn.linear: _cl(lambda m, x: torch._C._nn.linear(x, m.lin.weight, m.lin.bias)),
    F.batch_norm: lambda m, x, y: F.batch_norm(
        x, m.bn.running_mean, m.bn.running_var, m.bn.weight, m.bn.bias, False
    ),
    torch.batch_norm: lambda m, x, y: torch.batch_norm(
        x, m.bn.weight, m.bn.bias, m.bn.running_mean, m.bn.running_var, False, 0.1, 1e-5, False
    ),
    F.relu6: lambda m, x, y: F.relu6(x),
    F.leaky_relu: lambda m, x, y: F.leaky_relu(x, 0.1),
    F.hardtanh: lambda m, x, y: F.hardtanh(x),
    torch.clamp: lambda m, x, y: torch.clamp(x, -1, 1),
    T.clamp: lambda m, x, y: x.clamp(-1, 1),
    T.clamp_: lambda m, x, y: x.clone().clamp_(-1, 1),
    torch.sqrt: lambda m, x, y: torch.sqrt(x.abs()),
    T.sqrt: lambda m, x, y: x.abs().sqrt(),
    T.sigmoid_: lambda m, x, y: x.clone().sigmoid_(),
    T.relu_: lambda m, x, y: x.clone().relu_(),
    T.half: lambda m, x, y: x + x.half().to(x.dtype) * 0,  # half rounding would exceed the tolerance
    T.bfloat16: lambda m, x, y: x + x.bfloat16().to(x.dtype) * 0,
    T.double: lambda m, x, y: x.double().to(x.dtype),
    T.float: lambda m, x, y: x.float().to(x.dtype),
    T.to: lambda m, x, y: x.to(torch.float64).to(x.dtype),
    T.type: lambda m, x, y: x.type(x.type()),
    T.type_as: lambda m, x, y: x.type_as(y),
    T.requires_grad_: lambda m, x, y: x.requires_grad_(False),
    T.pow: lambda m, x, y: x.pow(2),
    torch.log: lambda m, x, y: torch.log(x.abs() + 1),
    T.log: lambda m, x, y: (x.abs() + 1).log(),
    T.__pow__: lambda m, x, y: x**2,
    torch.pow: lambda m, x, y: torch.pow(x, 2),
    T.__radd__: lambda m, x, y: 1.0 + x,
    T.__rsub__: lambda m, x, y: 1.0 - x,
    T.__rmul__: lambda m, x, y: 2.0 * x,
    T.__rtruediv__: lambda m, x, y: 1.0 / (x.abs() + 1),
    T.__iadd__: _inplace(T.__iadd__),
    T.__isub__: _inplace(T.__isub__),
    T.__imul__: _inplace(T.__imul__),
    T.__itruediv__: _inplace(lambda z, y: z.__itruediv__(y.abs() + 1)),
    T.div_: _inplace(lambda z, y: z.div_(y.abs() + 1)),
    T.add_: _inplace(T.add_),
    T.sub_: _inplace(T.sub_),
    T.mul_: _inplace(T.mul_),
    torch.div: lambda m, x, y: torch.div(x, y.abs() + 1),
    T.div: lambda m, x, y: x.div(y.abs() + 1),
    T.__truediv__: lambda m, x, y: x / (y.abs() + 1),
    torch.cat: lambda m, x, y: torch.cat([x, y], 1),
    torch.concat: lambda m, x, y: torch.concat([x, y], 1),
    torch.concatenate: lambda m, x, y: torch.concatenate([x, y], 1),
    torch.chunk: lambda m, x, y: torch.cat(torch.chunk(x, 2, 1)[::-1], 1),
    T.chunk: lambda m, x, y: torch.cat(x.chunk(2, 1)[::-1], 1),
    torch.split: lambda m, x, y: torch.cat(torch.split(x, 4, 1)[::-1], 1),
    T.split: lambda m, x, y: torch.cat(x.split(4, 1)[::-1], 1),
    torch.unbind: lambda m, x, y: torch.stack(torch.unbind(x, 2), 2),
    T.unbind: lambda m, x, y: torch.stack(x.unbind(3), 3),
    torch.stack: lambda m, x, y: torch.stack([x, y], 0).sum(0),
    F.layer_norm: lambda m, x, y: F.layer_norm(x, x.shape[2:]),  # over pixels: channels apart
    torch.layer_norm: lambda m, x, y: torch.layer_norm(x, x.shape[2:]),
    F.group_norm: lambda m, x, y: F.group_norm(x, 2),
    torch.group_norm: lambda m, x, y: torch.group_norm(x, 2),
    F.multi_head_attention_forward: _seq(lambda m, x: m.mha(x, x, x, need_weights=False)[0]),
    T.__getitem__: lambda m, x, y: x[:, :, 1:, ...],
    T.gather: lambda m, x, y: x.gather(2, torch.arange(x.shape[2]).flip(0).view(1, 1, -1, 1).expand(x.shape)),
    torch.gather: lambda m, x, y: torch.gather(x, 3, torch.zeros_like(x, dtype=torch.long)),
    T.view: lambda m, x, y: x.flatten(2).view(x.shape),
    T.reshape: lambda m, x, y: x.reshape(x.shape[0], x.shape[1], -1).reshape(x.shape),
    T.flatten: lambda m, x, y: x.flatten(2).unflatten(2, x.shape[2:]),
    T.unflatten: lambda m, x, y: x.flatten(2).unflatten(2, x.shape[2:]),
    T.squeeze: lambda m, x, y: x.unsqueeze(2).squeeze(2),
    T.unsqueeze: lambda m, x, y: x.unsqueeze(2).squeeze(2),
    T.view_as: lambda m, x, y: x.flatten(2).view_as(y),
    T.reshape_as: lambda m, x, y: x.flatten(2).reshape_as(y),
    torch.reshape: lambda m, x, y: torch.reshape(x.flatten(2), x.shape),
    torch.flatten: lambda m, x, y: torch.flatten(x, 2).unflatten(2, x.shape[2:]),
    torch.squeeze: lambda m, x, y: torch.squeeze(x.unsqueeze(4), 4),
    torch.unsqueeze: lambda m, x, y: torch.unsqueeze(x, 4).squeeze(4),
    T.permute: lambda m, x, y: x.permute(0, 2, 3, 1).permute(0, 3, 1, 2),
    torch.permute: lambda m, x, y: torch.permute(torch.permute(x, (0, 2, 3, 1)), (0, 3, 1, 2)),
    T.transpose: lambda m, x, y: x.transpose(1, 3).transpose(1, 3),
    torch.transpose: lambda m, x, y: torch.transpose(torch.transpose(x, 1, 3), 1, 3),
    T.movedim: lambda m, x, y: x.movedim(1, -1).movedim(-1, 1),
    torch.movedim: lambda m, x, y: torch.movedim(torch.movedim(x, 1, -1), -1, 1),
    T.expand: lambda m, x, y: x.amax((2, 3), keepdim=True).expand(-1, -1, 4, 4),
    T.expand_as: lambda m, x, y: x.amax((2, 3), keepdim=True).expand_as(y),
    F.max_pool1d: _flat(lambda m, x: F.max_pool1d(x, 3, 1, 1)),
    F.max_pool2d: lambda m, x, y: F.max_pool2d(x, 2),
    F.max_pool3d: _vol(lambda m, x: F.max_pool3d(x, (1, 3, 3), 1, (0, 1, 1))),
    F.avg_pool1d: _flat(lambda m, x: F.avg_pool1d(x, 3, 1, 1)),
    F.avg_pool2d: lambda m, x, y: F.avg_pool2d(x, 2),
    F.avg_pool3d: _vol(lambda m, x: F.avg_pool3d(x, (1, 3, 3), 1, (0, 1, 1))),
    F.adaptive_avg_pool1d: lambda m, x, y: F.adaptive_avg_pool1d(x.flatten(2), 1).unsqueeze(3),
    F.adaptive_avg_pool2d: lambda m, x, y: F.adaptive_avg_pool2d(x, 2),
    F.adaptive_max_pool2d: lambda m, x, y: F.adaptive_max_pool2d(x, 2),
    F.interpolate: lambda m, x, y: F.interpolate(x, scale_factor=2.0, mode="nearest"),
    F.upsample: lambda m, x, y: F.upsample(x, scale_factor=2.0, mode="nearest"),
    F.pad: lambda m, x, y: F.pad(x, (1, 1, 1, 1)),
    F.dropout: lambda m, x, y: F.dropout(x, 0.5, training=False),
    F.dropout2d: lambda m, x, y: F.dropout2d(x, 0.5, training=False),
    torch.max_pool2d: lambda m, x, y: torch.max_pool2d(x, 3, 1, 1),
    torch.avg_pool1d: _flat(lambda m, x: torch.avg_pool1d(x, 3, 1, 1)),
    torch.max: lambda m, x, y: torch.max(x, 2, keepdim=True).values,
    torch.min: lambda m, x, y: torch.min(x, 2, keepdim=True).values,
    T.max: lambda m, x, y: x.max(3, keepdim=True).values,
    T.min: lambda m, x, y: x.min(3, keepdim=True).values,
    F.softmax: lambda m, x, y: F.softmax(x, -1),
    F.log_softmax: lambda m, x, y: F.log_softmax(x, -1),
    torch.softmax: lambda m, x, y: torch.softmax(x, -1),
    T.softmax: lambda m, x, y: x.softmax(-1),
    T.log_softmax: lambda m, x, y: x.log_softmax(-1),
    T.new_full: _scalar(lambda x: x.new_full((1,), 2.0)),
    T.new_zeros: _scalar(lambda x: x.new_zeros(1)),
    T.new_ones: _scalar(lambda x: x.new_ones(1)),
    T.new_empty: _scalar(lambda x: x.new_empty(1).zero_()),
    T.new_tensor: _scalar(lambda x: x.new_tensor([1.0])),
    torch.zeros_like: _scalar(torch.zeros_like),
    torch.ones_like: _scalar(torch.ones_like),
    torch.empty_like: _scalar(lambda x: torch.empty_like(x).zero_()),
    torch.full_like: _scalar(lambda x: torch.full_like(x, 2.0)),
    torch.rand_like: _scalar(torch.rand_like),
    torch.randn_like: _scalar(torch.randn_like),
}
# Kinds whose ops all take one argument (element-wise) or two same-shape tensors (broadcast): one
# generic recipe each; reductions run over the spatial dims with keepdim.
KIND_RECIPES = {
    OpKind.ELEMENTWISE: lambda fn: lambda m, x, y: fn(x),
    OpKind.BROADCAST: lambda fn: _with(fn),
    OpKind.REDUCE: lambda fn: lambda m, x, y: fn(x, (2, 3), keepdim=True),
}
# Entries that cannot run here, and why.
NOT_RUN = {T.cuda: "needs a CUDA device"}
# Entries a function mode never receives with this torch: they reach it as another known op (the
# recipe still runs them). Should torch start dispatching one of them, the test says so.
DISPATCHED_AS = {
    F.sigmoid: T.sigmoid,
    F.tanh: T.tanh,
    F.upsample: F.interpolate,
    T.__add__: T.add,
    T.__radd__: T.add,
    T.__iadd__: T.add_,
    T.__sub__: T.sub,
    T.__isub__: T.sub_,
    T.__mul__: T.mul,
    T.__rmul__: T.mul,
    T.__imul__: T.mul_,
    T.__truediv__: T.div,
    T.__itruediv__: T.div_,
}
# Entries whose recipe pins the producer's channels by design, with the reason's text.
PINS = {
    torch.split: "split into fixed sizes",
    T.split: "split into fixed sizes",
    F.group_norm: "GroupNorm normalises channels in groups",
    torch.group_norm: "GroupNorm normalises channels in groups",
    F.multi_head_attention_forward: "nn.MultiheadAttention has one width",
}


class Seen(TorchFunctionMode):
    """Records every function a function mode receives, as the tracer would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.funcs: set = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.funcs.add(func)
        return func(*args, **(kwargs or {}))


def recipe(fn):
    return RECIPES.get(fn) or KIND_RECIPES[op_kind(fn)](fn)


def cbr(c1: int, c2: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.SiLU())


class Probe(nn.Module):
    """Producers `a` and `c`, the layers recipes borrow weights from, and a head sized to the recipe."""

    def __init__(self, recipe) -> None:
        super().__init__()
        self.recipe = recipe
        self.a, self.c = cbr(3, 8), cbr(3, 8)
        self.w1, self.w2 = nn.Conv1d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1)
        self.w3 = nn.Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1))
        self.t1, self.t2 = nn.ConvTranspose1d(8, 8, 1), nn.ConvTranspose2d(8, 8, 2, 2)
        self.lin, self.bn = nn.Linear(8, 8), nn.BatchNorm2d(8)
        self.mha = nn.MultiheadAttention(8, 2)
        with torch.no_grad():
            y = self.body(X[0])
        self.head = nn.Conv2d(y.shape[1], 4, 1) if y.ndim == 4 else nn.Linear(y.shape[-1], 4)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.recipe(self, self.a(x), self.c(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_every_known_op_has_a_recipe_or_a_reason():
    untested = [
        op_name(fn)
        for fn in KNOWN_OPS
        if fn not in RECIPES and fn not in NOT_RUN and op_kind(fn) not in KIND_RECIPES
    ]
    assert not untested, f"add a recipe for {untested}"
    assert all(fn in KNOWN_OPS for fn in [*RECIPES, *NOT_RUN, *PINS, *DISPATCHED_AS, *DISPATCHED_AS.values()])


@pytest.mark.parametrize("fn", [fn for fn in KNOWN_OPS if fn not in NOT_RUN], ids=op_name)
def test_known_op_keeps_channels_traceable(fn):
    torch.manual_seed(0)
    model = excite(Probe(recipe(fn)).eval(), X)
    with torch.no_grad(), Seen() as seen:
        model(*X)
    if fn in DISPATCHED_AS:
        assert fn not in seen.funcs, f"torch now dispatches {op_name(fn)}: move it out of DISPATCHED_AS"
        assert DISPATCHED_AS[fn] in seen.funcs
    else:
        assert fn in seen.funcs, "the recipe did not call the op"
    graph = build_groups(trace(model, X))
    assert not any(n.kind is OpKind.UNKNOWN for n in graph.trace.nodes)
    (group,) = graph.groups_of("a.0", "out")
    if fn in PINS:
        assert any(PINS[fn] in p.reason for p in group.pinned_by), group.pinned_by
    else:
        assert group.prunable, group.pinned_by
        assert Member("a.1", "out") in group.members
    plan = choose(graph, model, select_groups(graph, None), PruneOptions(ratio=0.5, importance="random"))
    _, _, eq = prune_and_compare(model, graph, plan.removed, X)
    assert eq.ok, eq


# Ops the tracer does not know, several of which really mix channels: treating them as element-wise
# would make a wrong model.
UNKNOWN = {
    "torch.cummax": lambda m, x, y: torch.cummax(x, 2).values,
    "torch.flip": lambda m, x, y: torch.flip(x, [1]),
    "torch.roll": lambda m, x, y: torch.roll(x, 1, 1),
    "torch.cumsum": lambda m, x, y: torch.cumsum(x, 1),
    "F.normalize": lambda m, x, y: F.normalize(x, dim=1),
    "F.local_response_norm": lambda m, x, y: F.local_response_norm(x, 3),
}


@pytest.mark.parametrize("name", UNKNOWN)
def test_unknown_op_pins_and_is_named(name):
    model = excite(Probe(UNKNOWN[name]).eval(), X)
    graph = build_groups(trace(model, X))
    (group,) = graph.groups_of("a.0", "out")
    assert not group.prunable
    assert f"{name} is not an op the tracer understands" in [p.reason for p in group.pinned_by]
    plan = choose(graph, model, select_groups(graph, None), PruneOptions(ratio=0.5, importance="random"))
    assert not plan.removed.intersection(group.classes)
    assert prune_and_compare(model, graph, plan.removed, X)[2].ok


UNKNOWN_YAML = """\
nc: 3
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, nn.LocalResponseNorm, [3]]
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, C2f, [16, True]]
head:
  - [[1, 3], 1, Detect, [nc]]
"""


def test_unknown_op_in_a_yaml_model_is_explained_to_the_user(tmp_path, capsys):
    path = tmp_path / "lrn.yaml"
    path.write_text(UNKNOWN_YAML)
    reason = "F.local_response_norm is not an op the tracer understands"
    assert main(["analyze", str(path), "--blocks", "0", "--format", "json"]) == 0
    (group,) = [
        g
        for g in json.loads(capsys.readouterr().out)["groups"]
        if (g["members"][0]["module"], g["members"][0]["axis"]) == ("model.0.conv", "out")
    ]  # the input image's group also starts at model.0.conv, on its input axis
    assert not group["prunable"] and reason in [p["reason"] for p in group["pinned_by"]]
    assert main(["analyze", str(path), "--blocks", "0"]) == 0
    assert reason in capsys.readouterr().out
    r = prune(None, PruneOptions(0.5), analysis=analyze(Path(path)))
    assert r.model.model[0].conv.out_channels == 16 and r.model.model[2].conv.out_channels == 8
