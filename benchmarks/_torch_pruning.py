"""Torch-Pruning 1.6.1 as its published YOLOv8 example uses it, for the benchmarks that compare against it.

Scope: the example's model rewrite (every C2f computed without its `chunk`: `cv1` split into two
convs, `cv0` and `cv1`), its pruner (group L2 magnitude importance, one uniform ratio for every
group, the Detect head ignored), and the way back to a stock Ultralytics model after a step (`cv0`
and `cv1` merged into one `cv1` again) so the result trains, saves and exports like any other.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _rows(conv: nn.Module, rows: slice) -> nn.Module:
    """A copy of an Ultralytics Conv (conv + bn + act) keeping only output channels `rows`."""
    part = copy.deepcopy(conv)
    part.conv.weight = nn.Parameter(conv.conv.weight[rows].clone())
    part.conv.out_channels = part.conv.weight.shape[0]
    part.bn.weight, part.bn.bias = (nn.Parameter(p[rows].clone()) for p in (conv.bn.weight, conv.bn.bias))
    part.bn.running_mean, part.bn.running_var = conv.bn.running_mean[rows], conv.bn.running_var[rows]
    part.bn.num_features = part.conv.out_channels
    return part


def _stacked(first: nn.Module, second: nn.Module) -> nn.Module:
    """One Ultralytics Conv whose output channels are `first`'s followed by `second`'s."""
    both = copy.deepcopy(first)
    both.conv.weight = nn.Parameter(torch.cat([first.conv.weight, second.conv.weight]).detach().clone())
    both.conv.out_channels = both.conv.weight.shape[0]
    for name in ("weight", "bias", "running_mean", "running_var"):
        joined = torch.cat([getattr(first.bn, name), getattr(second.bn, name)]).detach()
        setattr(both.bn, name, nn.Parameter(joined) if name in ("weight", "bias") else joined)
    both.bn.num_features = both.conv.out_channels
    return both


_ULTRALYTICS_ATTRS = ("i", "f", "type", "np")  # what Ultralytics' forward and summaries read


class SplitFreeC2f(nn.Module):
    """C2f computed without `chunk`: `cv1` becomes two convs, one per half (Torch-Pruning's YOLOv8 recipe)."""

    def __init__(self, c2f: nn.Module) -> None:
        super().__init__()
        self.cv0, self.cv1 = _rows(c2f.cv1, slice(None, c2f.c)), _rows(c2f.cv1, slice(c2f.c, None))
        self.m, self.cv2 = c2f.m, c2f.cv2
        for attr in _ULTRALYTICS_ATTRS:
            setattr(self, attr, getattr(c2f, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]  # 2 x (B, c, H, W), as cv1(x).chunk(2, 1)
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def split_free(model: nn.Module) -> nn.Module:
    """Rewrite every C2f of the Ultralytics model `model` in place; returns `model`."""
    from ultralytics.nn.modules import C2f

    for i, block in enumerate(model.model):
        if type(block) is C2f:
            model.model[i] = SplitFreeC2f(block)
    return model


def merge_back(model: nn.Module) -> nn.Module:
    """Undo `split_free` in place after pruning: each SplitFreeC2f becomes a stock C2f again.

    Needs the two halves to have kept the same number of channels (a stock C2f chunks `cv1` in
    two equal halves), which a uniform Torch-Pruning ratio gives; anything else raises.
    """
    from ultralytics.nn.modules import C2f

    for i, block in enumerate(model.model):
        if not isinstance(block, SplitFreeC2f):
            continue
        c0, c1 = block.cv0.conv.out_channels, block.cv1.conv.out_channels
        if c0 != c1:
            raise RuntimeError(f"block {i}: Torch-Pruning kept {c0} and {c1} channels in the halves of cv1")
        c2f = C2f.__new__(C2f)
        nn.Module.__init__(c2f)
        c2f.c, c2f.cv1, c2f.cv2, c2f.m = c0, _stacked(block.cv0, block.cv1), block.cv2, block.m
        for attr in _ULTRALYTICS_ATTRS:
            setattr(c2f, attr, getattr(block, attr))
        model.model[i] = c2f
    return model


def magnitude_pruner(model: nn.Module, inputs: torch.Tensor, ratio: float):
    """The example's pruner: group L2 magnitude, uniform `ratio`, Detect ignored."""
    import torch_pruning as tp
    from ultralytics.nn.modules import Detect

    return tp.pruner.MagnitudePruner(
        model,
        inputs,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[m for m in model.modules() if isinstance(m, Detect)],
    )
