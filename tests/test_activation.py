"""The activation-based criteria (act-*): separability, clustering and keep rules on data built so
the answer is known, then end to end on a generated digits dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from yoloprune.cli import main
from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.graph.groups import build_groups
from yoloprune.graph.trace import trace
from yoloprune.importance import CRITERIA, Context, Evidence
from yoloprune.importance.activation import ACTIVATION_CRITERIA, cluster, separability
from yoloprune.pruning.options import PruneOptions
from yoloprune.workflows.data import make_digits
from yoloprune.yolo.api import analyze, prune

CLASSES = 5
PER_CLASS = 40
# Channels 0-2 answer class 0, 3-5 class 1, 6-8 classes 2 and 3; 9-15 are constant (dead).
TYPES = {"class 0": [0, 1, 2], "class 1": [3, 4, 5], "classes 2-3": [6, 7, 8], "dead": list(range(9, 16))}


def _samples() -> tuple[np.ndarray, np.ndarray]:
    """(N, 16) activations and (N,) class ids, with the channel types of `TYPES`."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(CLASSES), PER_CLASS)
    x = np.zeros((len(y), 16))
    for c, hot in ((0, [0]), (3, [1]), (6, [2, 3])):
        for j in range(3):
            x[:, c + j] = 5.0 * np.isin(y, hot) + rng.normal(0, 0.3, len(y))
    return x, y


@pytest.fixture
def toy():
    """A conv whose 16 output channels form one prunable group, with evidence from `_samples`."""
    net = nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16), nn.SiLU(), nn.Conv2d(16, 4, 1))
    graph = build_groups(trace(net, (torch.zeros(1, 3, 8, 8),)))
    (group,) = [g for g in graph.groups if g.prunable]
    return net, graph, group, Evidence(samples={"0": _samples()})


def test_separability_scores_discriminative_constant_and_noise_channels():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 50)
    x = np.stack([3.0 * (y == 1) + rng.normal(0, 0.1, 150), np.ones(150), rng.normal(0, 1, 150)], 1)
    jm = separability(x, y)  # (3 channels, 3 class pairs: 01, 02, 12)
    assert jm.shape == (3, 3)
    assert jm[0, 0] > 1.99 and jm[0, 2] > 1.99 and jm[0, 1] < 0.2  # class 1 apart from 0 and 2
    assert (jm[1] == 0).all()  # constant: no separability
    assert (jm[2] < 0.3).all()  # noise: little
    assert ((jm >= 0) & (jm <= 2)).all()


def test_separability_skips_classes_without_samples_and_needs_two():
    x, y = np.arange(10.0)[:, None], np.array([0] * 5 + [1] * 4 + [7])
    assert separability(x, y).shape == (1, 1)  # class 7 has one sample: left out
    with pytest.raises(YoloPruneError, match="only 1 class"):
        separability(x[:5], y[:5])


def test_cluster_finds_blobs_and_handles_degenerate_inputs():
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(c, 0.1, (8, 2)) for c in (0, 4, 8, 12)])
    found = cluster(blobs, seed=0)
    assert found.k == 4
    assert all(len(set(found.labels[i : i + 8])) == 1 for i in range(0, 32, 8))
    assert cluster(np.zeros((10, 2)), seed=0).k == 1  # all alike: one cluster
    assert cluster(rng.normal(size=(3, 2)), seed=0).k == 3  # too few to cluster: keep every one


@pytest.mark.parametrize("name", ACTIVATION_CRITERIA)
def test_act_keeps_one_channel_per_behaviour(toy, name):
    net, graph, group, evidence = toy
    with torch.no_grad():  # the largest filter and gamma of each type: channels 2, 5, 8 and 15
        net[0].weight.copy_(torch.linspace(0.1, 1.0, 16)[:, None, None, None].expand_as(net[0].weight))
        net[1].weight.copy_(torch.linspace(0.1, 1.0, 16))
        net[3].weight.fill_(0.5)  # the consumer reads every channel alike
    ranking = CRITERIA[name](Context(net, graph, np.random.default_rng(0), evidence), group)
    kept = set(np.argsort(-ranking.scores)[: ranking.keep].tolist())
    assert ranking.keep == len(TYPES) == len(kept)
    for channels in TYPES.values():
        assert len(kept & set(channels)) == 1
    if name in ("act-maxweight", "act-maxgamma"):
        assert kept == {2, 5, 8, 15}


def test_act_refuses_without_data_or_with_one_class(toy):
    net, graph, group, evidence = toy
    with pytest.raises(OptionError, match="pass data") as e:  # the engine names the field
        CRITERIA["act-medoid"](Context(net, graph), group)
    assert e.value.fields == ("importance", "data")
    x, _ = evidence.samples["0"]
    one_class = Evidence(samples={"0": (x, np.zeros(len(x), dtype=int))})
    with pytest.raises(YoloPruneError, match="only 1 class"):
        CRITERIA["act-medoid"](Context(net, graph, evidence=one_class), group)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_digits(tmp_path_factory.mktemp("data") / "digits", images=16, imgsz=64).yaml


@pytest.fixture(scope="module")
def v8n():
    return analyze("yolov8n.yaml")


def test_act_prunes_yolov8n_end_to_end(digits, v8n):
    r = prune(
        None,
        PruneOptions("auto", importance="act-maxgamma", blocks=[1, 2], calib_imgsz=64),
        data=digits,
        analysis=v8n,
    )
    assert r.equivalence.ok and r.structural.ok
    assert len(r.plan.convs) > 0 and r.params[1] < r.params[0]
    capped = prune(
        None,
        PruneOptions(0.25, importance="act-medoid", blocks=[1], calib_imgsz=64),
        data=digits,
        analysis=v8n,
    )
    assert capped.widths["model.1.conv.out"] == (32, 24)


def test_data_criteria_need_data_and_others_refuse_it(v8n, digits):
    with pytest.raises(YoloPruneError, match="pass data"):
        prune(None, PruneOptions("auto", importance="act-medoid", blocks=[1]), analysis=v8n)
    with pytest.raises(YoloPruneError, match="only read by the data-driven"):
        prune(None, PruneOptions(0.5, importance="l1", blocks=[1]), data=digits, analysis=v8n)


@pytest.mark.slow
@pytest.mark.parametrize("name", ACTIVATION_CRITERIA)
def test_act_auto_on_every_group(digits, v8n, name):
    r = prune(
        None,
        PruneOptions("auto", importance=name, calib_images=16, calib_imgsz=64),
        data=digits,
        analysis=v8n,
    )
    assert r.equivalence.ok and r.structural.ok and r.flops[1] < r.flops[0]


def test_cli_ratio_auto_with_data(digits, capsys):
    argv = ["prune", "yolov8n.yaml", "--importance", "act-medoid", "--ratio", "auto", "--blocks", "1"]
    assert (
        main([*argv, "--data", str(digits), "--calib-imgsz", "64", "--calib-images", "8", "--dry-run"]) == 0
    )
    assert "ratio auto" in capsys.readouterr().out
    assert main([*argv, "--dry-run"]) == 2
    assert "pass --data" in capsys.readouterr().err
