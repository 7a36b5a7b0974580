"""Importance criteria on constructed weights where the right ranking is known, parametrised over
every registered data-free criterion (those that read no `Evidence`), so new ones are tested too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from yoloprune.graph.groups import build_groups
from yoloprune.graph.trace import trace
from yoloprune.importance import CRITERIA, Aggregation, Context
from yoloprune.importance.base import NEEDS
from yoloprune.yolo.api import analyze

DATA_FREE = sorted(name for name in CRITERIA if not NEEDS[name])
RANKING = [name for name in DATA_FREE if name != "random"]  # random is the baseline: no ranking
C, DEAD, TWIN, COPY = 16, 5, 3, 9
X = torch.zeros(1, C, 8, 8)


class Block(nn.Module):
    """conv `a` -> BatchNorm -> SiLU -> conv `b`: one prunable group of C channels (a's outputs,
    bn's features, b's inputs). Filters have entries of magnitude 1 (random signs), so every
    channel's filter norms are equal unless a test changes them."""

    def __init__(self, bn: bool = True) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a, self.b = nn.Conv2d(C, C, 3, padding=1, bias=False), nn.Conv2d(C, C, 3, padding=1)
        self.bn = nn.BatchNorm2d(C) if bn else nn.Identity()
        with torch.no_grad():
            for conv in (self.a, self.b):
                conv.weight.copy_(torch.randint(0, 2, conv.weight.shape, generator=g) * 2.0 - 1)
            if bn:
                self.bn.weight.copy_(0.5 + torch.rand(C, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(nn.functional.silu(self.bn(self.a(x))))


def scores(model: nn.Module, name: str, aggregation: Aggregation = Aggregation.MEAN) -> np.ndarray:
    graph = build_groups(trace(model, (X,)))
    (group,) = [g for g in graph.groups if g.prunable]
    assert group.size == C
    ctx = Context(model, graph, np.random.default_rng(0), None, aggregation)
    found = CRITERIA[name](ctx, group)
    return np.asarray(getattr(found, "scores", found), dtype=float)


@pytest.mark.parametrize("aggregation", list(Aggregation))
@pytest.mark.parametrize("name", RANKING)
def test_a_dead_channel_is_ranked_last(name, aggregation):
    model = Block()
    with torch.no_grad():
        model.a.weight[DEAD] = 0.0  # its filter produces nothing ...
        model.bn.weight[DEAD] = 0.0  # ... and its BatchNorm scales it to zero
        model.a.weight[TWIN].mul_(0.5)  # a weak but live channel must still outrank it
    s = scores(model, name, aggregation)
    assert np.argmin(s) == DEAD and np.sort(s)[1] > s[DEAD], s


def test_fpgm_ranks_a_duplicated_filter_low_and_l1_does_not_see_it():
    model = Block()
    with torch.no_grad():
        model.a.weight[COPY] = model.a.weight[TWIN]  # COPY can be rebuilt from TWIN
    fpgm, l1 = scores(model, "fpgm"), scores(model, "l1")
    assert set(np.argsort(fpgm)[:2].tolist()) == {TWIN, COPY}, fpgm
    np.testing.assert_allclose(l1, l1[0])  # every filter has the same norm: l1 cannot tell


def test_aggregation_mean_weighs_layers_alike_and_sum_weighs_raw_norms():
    model = Block()
    strong_out, strong_in = 1, 2
    with torch.no_grad():
        model.b.weight.mul_(10)  # the consumer's raw norms dwarf the producer's
        model.a.weight[strong_out].mul_(4)  # strong where it is produced, weak where it is read
        model.b.weight[:, strong_out].mul_(0.5)
        model.a.weight[strong_in].mul_(0.5)  # weak where produced, strong where read
        model.b.weight[:, strong_in].mul_(2)
    mean, total = scores(model, "l1", Aggregation.MEAN), scores(model, "l1", Aggregation.SUM)
    assert mean[strong_out] > mean[strong_in]  # x4 in one layer beats x2 in the other
    assert total[strong_in] > total[strong_out]  # the consumer's larger raw scale decides
    d = C * 9  # entries per filter row and per input slice
    np.testing.assert_allclose(total[[0, strong_out, strong_in]], [d + 10 * d, 4 * d + 5 * d, d / 2 + 20 * d])


def test_bn_scores_gammas_and_gamma_is_its_alias():
    model = Block()
    np.testing.assert_allclose(scores(model, "bn", Aggregation.SUM), model.bn.weight.detach().numpy())
    assert CRITERIA["gamma"] is CRITERIA["bn"]


def test_bn_without_batchnorm_falls_back_to_l1():
    model = Block(bn=False)
    with torch.no_grad():
        model.a.weight[DEAD] = 0.0
    np.testing.assert_allclose(scores(model, "bn"), scores(model, "l1"))


def test_random_is_seeded():
    a, b = scores(Block(), "random"), scores(Block(), "random")
    np.testing.assert_array_equal(a, b)
    assert sorted(a.argsort()) == list(range(C))


@pytest.fixture(scope="module")
def v8n():
    return analyze("yolov8n.yaml", run_probe=False)


@pytest.mark.parametrize("name", DATA_FREE)
def test_every_criterion_scores_every_yolov8n_group(name, v8n):
    """Including C2f's chunked groups, where one class sits at two positions of `cv1`."""
    ctx = Context(v8n.model, v8n.graph)
    for group in (g for g in v8n.graph.groups if g.prunable):
        found = CRITERIA[name](ctx, group)
        s = np.asarray(getattr(found, "scores", found), dtype=float)
        assert s.shape == (group.size,) and np.isfinite(s).all(), (name, group.id)
