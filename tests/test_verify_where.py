"""`verify` says where a pruned model goes wrong: the first layer whose output differs (and by how
much), the first tensor whose shape or weights differ, in the API and in the CLI's FAIL rows."""

from __future__ import annotations

import torch
from torch import nn

from yoloprune.pruning.verify import compare, first_divergence, first_state_difference


def test_first_divergence_compares_narrowed_outputs_on_the_kept_channels():
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Conv2d(2, 2, 1))
    narrow = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))
    keep = torch.tensor([0, 2, 3])
    with torch.no_grad():
        wide[2].weight[:, 1] = 0  # the masked original: channel 1 is read with zero weights
        sliced = {"0.weight": wide[0].weight[keep], "0.bias": wide[0].bias[keep]}
        narrow.load_state_dict(wide.state_dict() | sliced | {"2.weight": wide[2].weight[:, keep]})
        x = (torch.rand(1, 3, 4, 4),)
        assert first_divergence(narrow, wide, x, {"0": keep}) is None
        narrow[3].weight[1, 1] += 1
        assert first_divergence(narrow, wide, x, {"0": keep})[0] == "3"
        narrow[0].bias[2] += 1  # earlier: output channel 3 of the original, kept as 2
        assert first_divergence(narrow, wide, x, {"0": keep})[0] == "0"
        eq = compare(narrow, wide, x, kept={"0": keep})
    assert not eq.ok and eq.first_divergence[0] == "0" and eq.first_divergence[1] > eq.tolerance


def test_first_state_difference_order_and_kinds():
    a = {"x": torch.zeros(2), "y": torch.ones(3)}
    missing, doubled = {"x": torch.zeros(2)}, a | {"y": torch.ones(3) * 2}
    assert first_state_difference(a, dict(a), values=True) is None
    assert first_state_difference(a, missing, values=False) == ("y", "missing from the pruned model")
    assert first_state_difference(a, doubled, values=True) == ("y", "max rel difference 1")
    assert first_state_difference(a, doubled, values=False) is None  # shapes only
    assert first_state_difference(a, a | {"z": torch.ones(1)}, values=False)[0] == "z"
