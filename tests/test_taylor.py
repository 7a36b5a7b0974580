"""First-order Taylor importance: the criterion on constructed evidence, and the measurement with
the model's own Ultralytics loss on a generated digits dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.graph.groups import build_groups
from yoloprune.graph.trace import trace
from yoloprune.importance import CRITERIA, Context, Evidence
from yoloprune.pruning.options import PruneOptions
from yoloprune.workflows.data import make_digits
from yoloprune.yolo.api import analyze, prune
from yoloprune.yolo.calibrate import gather_evidence

DATA = Path(__file__).parent / "data"
DEAD = 5  # the channel made dead in the tests below


def test_taylor_ranks_by_evidence_and_zero_last():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))
    graph = build_groups(trace(net, (torch.zeros(1, 3, 8, 8),)))
    (group,) = [g for g in graph.groups if g.prunable]
    values = np.array([0.3, 0.1, 0.7, 0.2, 0.9, 0.0, 0.4, 0.5])
    scores = CRITERIA["taylor"](Context(net, graph, evidence=Evidence(taylor={"0": values})), group)
    assert np.argsort(scores).tolist() == np.argsort(values).tolist()
    assert np.argmin(scores) == DEAD
    with pytest.raises(
        OptionError, match="importance='taylor' scores channels on calibration images; pass data"
    ):
        CRITERIA["taylor"](Context(net, graph), group)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_digits(tmp_path_factory.mktemp("data") / "digits", images=16, imgsz=64).yaml


@pytest.fixture(scope="module")
def dead_v8n():
    """yolov8n with channel DEAD of model.1 dead: zero filter, gamma and beta, so its output is
    SiLU(0) = 0 on every image and activation x gradient is exactly zero."""
    a = analyze("yolov8n.yaml")
    with torch.no_grad():
        for t in (a.model.model[1].conv.weight, a.model.model[1].bn.weight, a.model.model[1].bn.bias):
            t[DEAD] = 0
    return a


def test_measured_taylor_is_zero_for_a_dead_channel_and_leaves_the_model_alone(dead_v8n, digits):
    model = dead_v8n.model
    before, modes = (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
    )
    ev = gather_evidence(model, dead_v8n.graph, digits, images=8, imgsz=64, need={"taylor"})
    t = ev.taylor["model.1.conv"]  # (32,)
    assert t.shape == (32,) and t[DEAD] == 0 and (np.delete(t, DEAD) > 0).all()
    assert not ev.samples
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes


def test_taylor_prunes_the_dead_channel_first(dead_v8n, digits):
    r = prune(
        None,
        PruneOptions(0.25, importance="taylor", blocks=[1], calib_imgsz=64),
        data=digits,
        analysis=dead_v8n,
    )
    assert r.equivalence.ok and r.structural.ok
    kept = r.plan.convs["model.1.conv"]["keep_out"]
    assert len(kept) == 24 and DEAD not in kept


def test_taylor_refuses_labels_the_model_cannot_predict(digits):
    a = analyze(DATA / "multi_consumer.yaml")  # nc: 4, the digits have 10 classes
    with pytest.raises(YoloPruneError, match="predicts 4 classes"):
        gather_evidence(a.model, a.graph, digits, images=8, imgsz=64, need={"taylor"})
