"""RT-DETR's multi-scale deformable attention (`MSDeformAttn`), made prunable where it is exact: a
module rule (its glue, which no op-level trace can see) and the attribute a pruned module needs.

`value_proj` makes `n_heads x head_dim` value channels; the forward views them per head with
`head_dim = d_model // n_heads`, samples each head's channels at that head's points (bilinear, one
channel at a time) and sums them with that head's attention weights, then views them back in the
same order for `output_proj`. So value channel (h, d) reaches only `output_proj`'s input h * head_dim
+ d: it goes with that input column, exactly, provided every head keeps the same count (the view),
so dim d goes from all heads at once, and `d_model` follows (`fix_deformable`).

The sampling offsets and attention weights are one value per head, level and point (n_heads x
n_levels x n_points, fixed at construction), and the weights are softmax-normalised across a head's
points: a point cannot go exactly, only a whole head, and heads stay whole here (their value
channels are pruned per head instead), so both are pinned with that reason.
"""

from __future__ import annotations

import torch
from ultralytics.nn.modules.transformer import MSDeformAttn
from ultralytics.nn.modules.utils import multi_scale_deformable_attn_pytorch

from yoloprune.graph.adapter import Glue, same_in_every_head

POINTS_REASON = (
    "MSDeformAttn's sampling offsets and attention weights are per head, level and point, and the "
    "weights are softmax-normalised across a head's points: a point cannot go exactly, only a whole "
    "head, and heads stay whole (their value channels are pruned per head instead)"
)


def deformable_attention(
    glue: Glue,
    m: MSDeformAttn,
    query: torch.Tensor,
    refer_bbox: torch.Tensor,
    value: torch.Tensor,
    value_shapes: list,
    value_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """`MSDeformAttn.forward`, reporting its glue."""
    bs, len_q = query.shape[:2]
    len_v = value.shape[1]
    v = m.value_proj(value)  # (bs, len_v, n_heads x head_dim)
    offsets = m.sampling_offsets(query)  # (bs, len_q, n_heads x n_levels x n_points x 2)
    weights = m.attention_weights(query)  # (bs, len_q, n_heads x n_levels x n_points)
    with glue.paused():  # as MSDeformAttn.forward
        heads = v if value_mask is None else v.masked_fill(value_mask[..., None], 0.0)
        heads = heads.view(bs, len_v, m.n_heads, m.d_model // m.n_heads)
        n_total_points = m.n_levels * m.n_points
        sampling_offsets = offsets.view(bs, len_q, m.n_heads, n_total_points, 2)
        attention_weights = weights.view(bs, len_q, m.n_heads, n_total_points).softmax(-1)
        if refer_bbox.shape[-1] == 2:
            normalizer = torch.as_tensor(value_shapes, dtype=query.dtype, device=query.device).flip(-1)
            normalizer = normalizer[:, None, :].expand(-1, m.n_points, -1).reshape(n_total_points, 2)
            locations = refer_bbox[:, :, None, :, :] + sampling_offsets / normalizer
        elif refer_bbox.shape[-1] == 4:
            size = refer_bbox[:, :, None, :, 2:] * 0.5
            locations = refer_bbox[:, :, None, :, :2] + sampling_offsets / m.n_points * size
        else:
            raise ValueError(f"Last dim of reference_points must be 2 or 4, but got {refer_bbox.shape[-1]}.")
        out = multi_scale_deformable_attn_pytorch(heads, value_shapes, locations, attention_weights)
        out = out.transpose(1, 2)  # (bs, n_heads x head_dim, len_q): the glue labels dim 1
    channels = glue.elems(v).reshape(m.n_heads, -1)  # (n_heads, head_dim)
    same_in_every_head(glue, channels)  # every head keeps the same head_dim
    glue.pin(glue.elems(offsets), POINTS_REASON)
    glue.pin(glue.elems(weights), POINTS_REASON)
    glue.label(out, channels, [v, offsets, weights], "MSDeformAttn: each value channel sampled in its head")
    return m.output_proj(out.transpose(1, 2))


def fix_deformable(module: MSDeformAttn) -> None:
    """Set `d_model` (the width the forward views the values with) from the pruned `value_proj`."""
    module.d_model = module.value_proj.out_features
