"""Magnitude criteria: score a group's channel classes from the weights of every coupled member.

A class's score is the mean, over the group's conv/linear members (filters that produce the
channels and weight slices that read them), of that member's per-channel norm divided by the
member's mean norm, so layers of different scale count alike. Higher means more important.
"""

from __future__ import annotations

import numpy as np
import torch

from yoloprune._layers import input_weight, output_weight
from yoloprune.graph.groups import Group
from yoloprune.importance.base import Context, Criterion, register


def _norm_scores(p: float) -> Criterion:
    def score(ctx: Context, group: Group) -> np.ndarray:
        graph, modules = ctx.graph, ctx.modules
        index = {c: i for i, c in enumerate(group.classes)}
        total, counted = np.zeros(group.size), 0
        for member in group.members:
            module = modules[member.module]
            found = output_weight(module, member.axis) or input_weight(module, member.axis)
            if found is None:
                continue
            weight, dim = found
            pos = graph.positions(group, member)
            # (C, ...) -> per-channel norm over everything else
            w = weight.detach().float().transpose(0, dim).flatten(1)[torch.as_tensor(pos)]
            norms = w.abs().pow(p).sum(1).pow(1 / p).numpy()
            per_class = np.zeros(group.size)
            np.add.at(per_class, [index[c] for c in graph.layout[member][pos].tolist()], norms)
            total += per_class / (per_class.mean() + 1e-12)
            counted += 1
        return total / max(counted, 1)

    return score


register("l1")(_norm_scores(1.0))
register("l2")(_norm_scores(2.0))


@register("random")
def _random(ctx: Context, group: Group) -> np.ndarray:
    return ctx.rng.random(group.size)
