"""What the engine needs to know about a family of models: one `ModelAdapter`, five hooks.

The engine (trace, probe, verify, allocate) is framework-free. A model family tells it how to
build an example input, which returned tensors are the predictions, which Python attributes must
follow a prune, which modules take their `split` sizes from such attributes, and which modules the
tracer should run through a *module rule* (a traced forward that reports how the module couples its
channels where torch ops alone cannot say, as attention's heads do). `PLAIN` serves plain PyTorch
models; `yoloprune.yolo.adapter.ULTRALYTICS` serves Ultralytics ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn


def image_batch(size: int, batch: int = 1, seed: int | None = None) -> tuple[torch.Tensor]:
    """A `(batch, 3, size, size)` image batch: zeros, or uniform noise drawn from `seed`.

    Example:
        >>> image_batch(64, batch=2, seed=0)[0].shape
        torch.Size([2, 3, 64, 64])
    """
    if seed is None:
        return (torch.zeros(batch, 3, size, size),)
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, size, size, generator=g),)


class Glue(Protocol):
    """What a module rule may tell the tracer (the tracer implements it; see `ModelAdapter`).

    - `paused()`: a context in which torch ops are run but not traced (the module's own glue).
    - `elems(t)`: the channel elements of a traced tensor, one per channel (a copy).
    - `couple(a, b)`: elements `a[i]` and `b[i]` must be removed together.
    - `label(t, elems, reads, rule)`: `t`, made by the paused glue from `reads`, carries `elems`
      along dim 1; `rule` names the rule in the op log.
    - `pin(elems, reason)`: no prune may remove these elements (e.g. values the glue reads as a
      fixed number of heads or points, not as channels); `reason` says why, in terms of exactness.
    - `fresh(n)`: `n` new elements, for a tensor the glue makes from untraced inputs (e.g. one
      channel per class of a text prompt).
    - `traced(t)`: whether `t` carries channel elements; a tensor from outside the traced inputs
      (e.g. text embeddings a model holds) does not, until the rule labels it.
    """

    def paused(self) -> contextlib.AbstractContextManager[None]: ...

    def elems(self, t: torch.Tensor) -> np.ndarray: ...

    def couple(self, a: np.ndarray, b: np.ndarray) -> None: ...

    def pin(self, elems: np.ndarray, reason: str) -> None: ...

    def label(self, t: torch.Tensor, elems: np.ndarray, reads: Sequence[torch.Tensor], rule: str) -> None: ...

    def fresh(self, n: int) -> np.ndarray: ...

    def traced(self, t: torch.Tensor) -> bool: ...


ModuleRule = Callable[..., object]  # (glue, module, *forward args) -> the module's output


def same_in_every_head(glue: Glue, heads: np.ndarray) -> None:
    """Couple element (h, d) of `heads` (heads x dims) with (0, d) for every head h: dim d goes from
    all heads or none, as a module that views its channels per head with one width needs."""
    for h in range(1, len(heads)):
        glue.couple(heads[0], heads[h])


def whole_heads(glue: Glue, heads: np.ndarray) -> None:
    """Couple every element of each row of `heads` (heads x elements) into one: a head goes whole."""
    for head in heads:
        glue.couple(head[:1].repeat(len(head)), head)


def _plain_inputs(model: nn.Module, batch: int = 1, seed: int | None = None) -> tuple[torch.Tensor]:
    return image_batch(64, batch, seed)


def _all_outputs(output: object) -> object:
    return output


def _no_attributes(model: nn.Module) -> None:
    return None


def _no_split(module: nn.Module) -> bool:
    return False


def _no_rule(module: nn.Module) -> ModuleRule | None:
    return None


@dataclass(frozen=True)
class ModelAdapter:
    """The four hooks the engine calls on a model of one family; each has a plain-PyTorch default.

    - `example_inputs(model, batch=1, seed=None)`: the input tuple the model is traced and checked
      with (zeros without a seed, random contents with one).
    - `select_outputs(output)`: the returned tensors whose channels are fixed (the predictions);
      anything else the model returns (e.g. features kept for a loss) is free to change.
    - `fix_attributes(model)`: bring Python attributes in line with pruned widths, after slicing.
    - `adapts_split(module)`: whether a `split` with explicit sizes inside `module` takes its sizes
      from attributes `fix_attributes` updates (otherwise such a split pins its channels).
    - `module_rule(module)`: a `ModuleRule` that replaces `module`'s forward while it is traced, or
      None. The rule must compute exactly what the forward computes; it calls the module's own
      layers (which are traced as usual) and reports the rest through its `Glue`, e.g. which query
      and key channels meet in a dot product. What it reports must be exact when honoured:
      `fix_attributes` has to make the pruned module run, and the verify check proves it did.

    Example:
        >>> adapter = ModelAdapter(select_outputs=lambda out: out[0])
        >>> adapter.select_outputs(("boxes", "features")), adapter.adapts_split(nn.Conv2d(3, 8, 1))
        ('boxes', False)
    """

    example_inputs: Callable[..., tuple[torch.Tensor, ...]] = _plain_inputs
    select_outputs: Callable[[object], object] = _all_outputs
    fix_attributes: Callable[[nn.Module], None] = _no_attributes
    adapts_split: Callable[[nn.Module], bool] = _no_split
    module_rule: Callable[[nn.Module], ModuleRule | None] = _no_rule


PLAIN = ModelAdapter()
