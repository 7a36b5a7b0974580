"""What `prune` works on: a loaded model and its channel-dependency graph (`analyze`), the module
paths an option selects (`scope_of`), and the model's training image size (`imgsz_of`).

Example:
    >>> a = analyze("yolov8n.yaml")
    >>> imgsz_of(a), scope_of(a.model, [2], None)
    (640, ('model.2',))
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.graph.groups import ChannelGraph, Group
from yoloprune.graph.trace import TraceError, trace
from yoloprune.progress import phase
from yoloprune.pruning.choose import select_groups
from yoloprune.pruning.probe import probe
from yoloprune.pruning.verify import excite, excited
from yoloprune.yolo import adapter
from yoloprune.yolo.adapter import ULTRALYTICS, excitation_batch
from yoloprune.yolo.io import load_model


@dataclass(frozen=True)
class Analysis:
    """A loaded model and its channel-dependency graph, with every pin: the tracer's, the probe's
    (when `analyze` ran it) and the user's `exclude`."""

    model: nn.Module
    graph: ChannelGraph
    source: str
    task: str
    ckpt: dict | None = None
    exclude: tuple[str, ...] = ()  # the layers `analyze` was told to leave as they are

    def group(self, group_id: int) -> Group:
        return self.graph.groups[group_id]

    def pinned(self, scope: Iterable[str] | None = None) -> list[Group]:
        """The groups under `scope` (module paths; None: all) that `prune` leaves as they are; each
        says why in `Group.reasons`. The analysis report shows exactly these."""
        return [g for g in select_groups(self.graph, scope) if not g.prunable]


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(close)}?" if close else ""


def check_layers(model: nn.Module, names: Iterable[str], field: str) -> None:
    """Refuse module paths the model does not have, suggesting the closest real ones; the error names
    the option `field` ("layers", "exclude") they were given as."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise OptionError(
                f"`{field}={name!r}`: the model has no layer by that name.{_suggest(name, modules)} "
                "The model's inventory (yoloprune.yolo.inventory) lists every layer's path."
            )


def scope_of(
    model: nn.Module, blocks: Iterable[int] | None, layers: Iterable[str] | None
) -> tuple[str, ...] | None:
    """Module paths selected by block indices and layer names; None when neither is given."""
    if blocks is None and layers is None:
        return None
    n = len(adapter.blocks(model))
    paths = []
    for b in blocks or ():
        if not 0 <= int(b) < n:
            raise OptionError(
                f"`blocks={b}`: this model has blocks 0 to {n - 1}; pick indices in that range."
            )
        paths.append(adapter.block_path(int(b)))
    check_layers(model, layers or (), "layers")
    return (*paths, *(layers or ()))


def excited_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` whose every channel carries input-dependent signal (see `excite`)."""
    return excite(copy.deepcopy(model), excitation_batch(model, seed), seed)


def analyze(source: object, *, exclude: Iterable[str] = (), run_probe: bool = True) -> Analysis:
    """Load `source` (.pt, YAML, YOLO or nn.Module) and trace its channel-dependency graph.

    Example:
        >>> a = analyze("yolov8n.yaml")
        >>> sum(g.prunable for g in a.graph.groups)
        51
    """
    from yoloprune.graph.groups import build_groups

    loaded = load_model(source)
    model, exclude = loaded.model, tuple(exclude)
    check_layers(model, exclude, "exclude")
    example = ULTRALYTICS.example_inputs(model)
    try:
        with phase("tracing channel dependencies"):
            t = trace(model, example, ULTRALYTICS)
    except TraceError as e:
        raise YoloPruneError(
            f"{loaded.source}: {e}. The model must run on a {example[0].shape} input."
        ) from e
    graph = build_groups(t, exclude)
    if run_probe:
        inputs = ULTRALYTICS.example_inputs(model, seed=0)
        with excited(model, excitation_batch(model, 0)):  # BatchNorms restored afterwards
            graph = probe(model, graph, inputs, ULTRALYTICS)
    return Analysis(model, graph, loaded.source, loaded.task, loaded.ckpt, exclude)


def imgsz_of(analysis: Analysis) -> int:
    """The image size the model was trained at (640 unless its checkpoint says otherwise)."""
    args = (analysis.ckpt or {}).get("train_args") or {}
    size = args.get("imgsz", 224 if analysis.task == "classify" else 640)
    return int(size[0] if isinstance(size, (list, tuple)) else size)
