"""Ultralytics' attention modules, made prunable exactly: a module rule per class (how its heads
couple channels, which no op-level trace can see) and the attributes a pruned module needs.

- `Attention` (YOLO11's C2PSA/PSABlock, YOLOv10's PSA, YOLO26's C3k2 attention): `qkv` makes, per
  head, `[q key_dim | k key_dim | v head_dim]`. Query channel d and key channel d of a head meet only
  in their product, so they go together; `scale` is an attribute fixed at construction, so dropping
  a q/k pair removes one term of every attention logit and nothing else. Every head must keep the
  same `key_dim`, so pair d goes from all heads at once. The value channels are viewed back to the
  block's width (`view(B, C, H, W)` with C the input's), so value channel (h, d) goes with the
  block's channel h * head_dim + d, in every head at once: `head_dim` shrinks with the block.
- `AAttn` (YOLO12's A2C2f/ABlock): `qkv` makes, per head, `[q | k | v]` of `head_dim` each; the
  widths it reshapes to come from `all_head_dim`, not from its input. A head (its q, k and v
  channels, and their slices of `pe` and `proj`) goes whole; `head_dim` (and the scale it sets)
  is unchanged.
- `MSDeformAttn` (RT-DETR's decoder cross-attention): value dims, every head alike; its rule and
  attribute fix live in `deformable.py`.
- YOLO-World's and YOLOE's text-guided modules (`MaxSigmoidAttnBlock`, `ImagePoolingAttn`, the
  contrastive class heads): `world.py`.

All are exact: the masked original zeroes a removed head's or pair's q and k (and v) where `qkv`
makes them, and the verify check proves the pruned model computes the same.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from ultralytics.nn.modules import block as B
from ultralytics.nn.modules.transformer import MSDeformAttn

from yoloprune.graph.adapter import Glue, ModuleRule, same_in_every_head, whole_heads
from yoloprune.yolo.deformable import deformable_attention, fix_deformable
from yoloprune.yolo.world import RULES as WORLD_RULES
from yoloprune.yolo.world import fix_world


def attention_parts(glue: Glue, m: B.Attention, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What `Attention.forward` (the non-CoreML path) computes before `pe` and `proj`, its glue run
    untraced: (qkv, the weighted values and the values, both viewed to the block's width)."""
    b, c, h, w = x.shape
    qkv = m.qkv(x)
    with glue.paused():
        q, k, v = qkv.view(b, m.num_heads, m.key_dim * 2 + m.head_dim, h * w).split(
            [m.key_dim, m.key_dim, m.head_dim], dim=2
        )
        attn = ((q * m.scale).transpose(-2, -1) @ k).softmax(dim=-1)
        return qkv, (v @ attn.transpose(-2, -1)).view(b, c, h, w), v.reshape(b, c, h, w)


def attention(glue: Glue, m: B.Attention, x: torch.Tensor) -> torch.Tensor:
    """`Attention.forward` (the non-CoreML path), reporting its glue."""
    qkv, out, v = attention_parts(glue, m, x)
    heads = glue.elems(qkv).reshape(m.num_heads, -1)
    qe, ke, ve = np.split(heads, [m.key_dim, 2 * m.key_dim], axis=1)
    glue.couple(qe, ke)
    same_in_every_head(glue, qe)
    glue.couple(ve, glue.elems(x))  # value (h, d) is the block's channel h * head_dim + d
    same_in_every_head(glue, ve)
    glue.label(out, ve, [qkv], "Attention: softmax(q k) weights v, viewed to the block's width")
    glue.label(v, ve, [qkv], "Attention: v viewed to the block's width")
    return m.proj(out + m.pe(v))


def area_attention(glue: Glue, m: B.AAttn, x: torch.Tensor) -> torch.Tensor:
    """`AAttn.forward`, reporting its glue."""
    b, _, h, w = x.shape
    n = h * w
    qkv_map = m.qkv(x)
    with glue.paused():
        qkv = qkv_map.flatten(2).transpose(1, 2)
        bb, nn_ = b, n
        if m.area > 1:
            qkv = qkv.reshape(b * m.area, n // m.area, m.all_head_dim * 3)
            bb, nn_, _ = qkv.shape
        q, k, v = (
            qkv.view(bb, nn_, m.num_heads, m.head_dim * 3)
            .permute(0, 2, 3, 1)
            .split([m.head_dim, m.head_dim, m.head_dim], dim=2)
        )
        attn = ((q * (m.head_dim**-0.5)).transpose(-2, -1) @ k).softmax(dim=-1)
        out = (v @ attn.transpose(-2, -1)).permute(0, 3, 1, 2)
        v = v.permute(0, 3, 1, 2)
        if m.area > 1:
            out = out.reshape(bb // m.area, nn_ * m.area, m.all_head_dim)
            v = v.reshape(bb // m.area, nn_ * m.area, m.all_head_dim)
        out = out.reshape(b, h, w, m.all_head_dim).permute(0, 3, 1, 2).contiguous()
        v = v.reshape(b, h, w, m.all_head_dim).permute(0, 3, 1, 2).contiguous()
    heads = glue.elems(qkv_map).reshape(m.num_heads, 3 * m.head_dim)
    whole_heads(glue, heads)  # its q, k and v channels are one
    ve = heads[:, 2 * m.head_dim :]
    glue.label(out, ve, [qkv_map], "AAttn: softmax(q k) weights v, per head")
    glue.label(v, ve, [qkv_map], "AAttn: v, per head")
    return m.proj(out + m.pe(v))


RULES: dict[type[nn.Module], ModuleRule] = {
    B.Attention: attention,
    B.AAttn: area_attention,
    MSDeformAttn: deformable_attention,
    **WORLD_RULES,
}


def module_rule(module: nn.Module) -> ModuleRule | None:
    """The rule for an Ultralytics attention module (by exact class: a subclass may change the forward)."""
    return RULES.get(type(module))


def fix_attention(module: nn.Module) -> None:
    """Set an attention module's head attributes from its pruned layers' widths."""
    if type(module) is B.Attention:
        heads = module.num_heads
        module.head_dim = module.pe.conv.out_channels // heads
        module.key_dim = (module.qkv.conv.out_channels - heads * module.head_dim) // (2 * heads)
    elif type(module) is B.AAttn:
        module.num_heads = module.qkv.conv.out_channels // (3 * module.head_dim)
        module.all_head_dim = module.num_heads * module.head_dim
    elif type(module) is MSDeformAttn:
        fix_deformable(module)
    else:
        fix_world(module)
