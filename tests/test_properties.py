"""Property-based proof of the pruning engine on random models (grammar in tests/strategies.py).

For every generated model and a random plan over its prunable groups: the plan survives its JSON round
trip, the pruned model runs (eval and train mode), has exactly the planned widths, equals the masked
original (relative error under 1e-4, float64, on signal-carrying weights), its saved copy reloads to the
same numbers, and every pin of the graph is explained by the model's structure.

Fast run (default): 200 plain-torch models and 10 random Ultralytics YAMLs, derandomized: the same cases
on every run. `pytest -m slow tests/test_properties.py` draws 5,000 and 200 fresh ones (a failure is
shrunk, stored in .hypothesis/ and replayed first next time); paste the shrunk spec into an `@example`.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import (
    FAST,
    SLOW,
    allowed_pins,
    build_net,
    example_input,
    explained,
    net_specs,
    yaml_allowed_pins,
    yaml_specs,
    yaml_text,
)
from torch import nn
from ultralytics.nn.tasks import DetectionModel

from yoloprune.errors import OptionError
from yoloprune.graph.groups import ChannelGraph, build_groups
from yoloprune.graph.trace import trace
from yoloprune.pruning.choose import choose, select_groups
from yoloprune.pruning.layers import channel_count
from yoloprune.pruning.plan import PruneOptions, load_plan, plan_from_removed
from yoloprune.pruning.verify import compare_outputs, excite, prune_and_compare
from yoloprune.yolo.adapter import ULTRALYTICS
from yoloprune.yolo.api import analyze, prune
from yoloprune.yolo.depth import repeated_blocks
from yoloprune.yolo.io import load_model

X = example_input()
X_OTHER = (torch.randn(2, *X[0].shape[1:], generator=torch.Generator().manual_seed(7)),)
PLANS = st.tuples(st.one_of(st.none(), st.floats(0.0, 0.9)), st.integers(0, 2**16))


def random_removal(graph: ChannelGraph, model: nn.Module, ratio: float | None, seed: int) -> frozenset[int]:
    """A random plan: `choose` at `ratio` with random importance, or (ratio None) per prunable group a
    random number of random channels, some groups left whole."""
    if ratio is not None:
        options = PruneOptions(ratio=ratio, importance="random", seed=seed)
        return choose(graph, model, select_groups(graph, None), options).removed
    rng = np.random.default_rng(seed)
    removed: set[int] = set()
    for g in graph.groups:
        if g.prunable and rng.random() < 0.8:
            k = int(rng.integers(1, g.size))
            removed.update(rng.choice(np.array(g.classes), k, replace=False).tolist())
    return frozenset(removed)


def assert_pins_explained(graph: ChannelGraph, allowed: tuple[tuple[str, ...], ...]) -> None:
    for g in graph.groups:
        assert g.prunable or g.pinned_by or g.size < 2, g
        for pin in g.pinned_by:
            assert explained(pin.member, pin.reason, allowed), f"unexplained pin {pin} on group {g.id}"


def check_plain(spec: tuple, plan: tuple[float | None, int]) -> None:
    model = excite(build_net(spec), X)
    graph = build_groups(trace(model, X, ULTRALYTICS))
    assert_pins_explained(graph, allowed_pins(spec))
    removed = random_removal(graph, model, *plan)
    text = plan_from_removed(graph, model, removed).to_json("net", PruneOptions())
    assert load_plan(graph, model, text).removed == removed  # the JSON round trip is exact
    pruned, _, eq = prune_and_compare(model, graph, removed, X, ULTRALYTICS)
    assert eq.ok, f"pruned model differs from the masked original: {eq}"
    modules = dict(pruned.named_modules())
    for member, layout in graph.layout.items():
        kept = int(np.count_nonzero(~np.isin(layout, list(removed))))
        assert channel_count(modules[member.module], member.axis) == kept, member
    buffer = io.BytesIO()
    torch.save(pruned, buffer)
    buffer.seek(0)
    reloaded = torch.load(buffer, weights_only=False)
    assert compare_outputs(reloaded, pruned, X_OTHER).max_rel_error == 0.0
    with torch.no_grad():
        pruned.train()(*X)


@settings(FAST, max_examples=200)
@given(net_specs(), PLANS)
@example(((("add", 0, 0),), (("out", 1),)), (None, 0))  # no parameters at all: verify used to crash
@example(  # C2f, chunk pieces into a cat, a residual add, SE, Detect and a flattening Linear head
    (
        (("C2f", 0, 8, 2, True), ("chunk", 1, 2), ("cat", (3, 2, 1), True), ("se", 4), ("add", 5, 4)),
        (("detect", (6, 1)), ("linear", 6, "flatten", 3)),
    ),
    (0.5, 1),
)
def test_random_plain_models_prune_exactly(spec, plan):
    check_plain(spec, plan)


@pytest.mark.slow
@settings(SLOW, max_examples=5000)
@given(net_specs(max_nodes=12), PLANS)
def test_random_plain_models_prune_exactly_slow(spec, plan):
    check_plain(spec, plan)


def check_yaml(spec: tuple, ratio: float, seed: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "random.yaml")
        path.write_text(yaml_text(spec))
        a = analyze(path)
        assert_pins_explained(a.graph, yaml_allowed_pins(spec))
        # Ultralytics refuses ONNX files under 0.1 MB, and random YAMLs are that small.
        r = prune(None, PruneOptions(ratio, importance="random", seed=seed), analysis=a, check_onnx=False)
        assert r.ok and r.equivalence.ok and r.structural.ok
        inputs = ULTRALYTICS.example_inputs(r.model, seed=seed)
        for fmt in ("pt", "safe"):
            saved = load_model(r.save(Path(folder, f"pruned.{fmt}"), format=fmt)).model
            mine, theirs = r.model.state_dict(), saved.state_dict()
            assert mine.keys() == theirs.keys()
            assert all(torch.equal(mine[k], theirs[k]) for k in mine), fmt
            assert compare_outputs(saved, r.model, inputs, ULTRALYTICS).max_rel_error == 0.0, fmt


@settings(FAST, max_examples=10)
@given(yaml_specs(), st.floats(0.1, 0.9), st.integers(0, 2**16))
def test_random_yamls_prune_verify_and_reload(spec, ratio, seed):
    check_yaml(spec, ratio, seed)


@pytest.mark.slow
@settings(SLOW, max_examples=200)
@given(yaml_specs(), st.floats(0.1, 0.9), st.integers(0, 2**16))
def test_random_yamls_prune_verify_and_reload_slow(spec, ratio, seed):
    check_yaml(spec, ratio, seed)


def check_depth(spec: tuple, ratio: float, depth: float, seed: int) -> None:
    """Whole blocks, then channels, of a random YAML model: both steps proved, the YAML's counts rebuild
    the shallower model, and the safe format (rebuilt from that YAML) reloads the same numbers."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "random.yaml")
        path.write_text(yaml_text(spec))
        options = PruneOptions(ratio, depth=depth, importance="random", seed=seed)
        if not any(b.removable for b in repeated_blocks(load_model(path).model)):
            with pytest.raises(OptionError, match="no repeated block in the selection can be removed"):
                prune(path, options, check_onnx=False)
            return
        r = prune(path, options, check_onnx=False)
        assert r.ok and all(c.ok for c in r.checks), r.checks
        assert r.depth is not None and r.depth.structural.max_rel_error < 1e-4
        shallower = r.depth.model
        rebuilt = DetectionModel(shallower.yaml, verbose=False).state_dict()
        mine = shallower.state_dict()
        assert mine.keys() == rebuilt.keys() and all(mine[k].shape == rebuilt[k].shape for k in mine)
        saved = load_model(r.save(Path(folder, "pruned.safe"), format="safe")).model
        mine, theirs = r.model.state_dict(), saved.state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


@settings(FAST, max_examples=10)
@given(yaml_specs(repeats=3), st.floats(0.0, 0.7), st.floats(0.2, 1.0), st.integers(0, 2**16))
def test_random_yamls_with_repeated_blocks_lose_blocks_and_channels_exactly(spec, ratio, depth, seed):
    check_depth(spec, ratio, depth, seed)


@pytest.mark.slow
@settings(SLOW, max_examples=100)
@given(yaml_specs(repeats=3), st.floats(0.0, 0.7), st.floats(0.2, 1.0), st.integers(0, 2**16))
def test_random_yamls_with_repeated_blocks_lose_blocks_and_channels_exactly_slow(spec, ratio, depth, seed):
    check_depth(spec, ratio, depth, seed)
