"""What the engine needs to know about a family of models: one `ModelAdapter`, four hooks.

The engine (trace, probe, verify, allocate) is framework-free. A model family tells it how to
build an example input, which returned tensors are the predictions, which Python attributes must
follow a prune, and which modules take their `split` sizes from such attributes. `PLAIN` serves
plain PyTorch models; `yoloprune.yolo.adapter.ULTRALYTICS` serves Ultralytics ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


def _plain_inputs(model: nn.Module, batch: int = 1, seed: int | None = None) -> tuple[torch.Tensor]:
    return image_batch(64, batch, seed)


def _all_outputs(output: object) -> object:
    return output


def _no_attributes(model: nn.Module) -> None:
    return None


def _no_split(module: nn.Module) -> bool:
    return False


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

    Example:
        >>> adapter = ModelAdapter(select_outputs=lambda out: out[0])
        >>> adapter.select_outputs(("boxes", "features")), adapter.adapts_split(nn.Conv2d(3, 8, 1))
        ('boxes', False)
    """

    example_inputs: Callable[..., tuple[torch.Tensor, ...]] = _plain_inputs
    select_outputs: Callable[[object], object] = _all_outputs
    fix_attributes: Callable[[nn.Module], None] = _no_attributes
    adapts_split: Callable[[nn.Module], bool] = _no_split


PLAIN = ModelAdapter()
