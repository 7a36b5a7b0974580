"""YOLO-World's and YOLOE's text-guided modules, made prunable where it is exact: a module rule per
class (the glue no op-level trace can see) and the attributes a pruned module needs.

- `MaxSigmoidAttnBlock` (C2fAttn's attention): per head, image embedding channel d (`ec(x)`, or `x`
  itself) meets text embedding channel d (`gl(guide)`) only in their product, so they go together,
  and every head keeps the same count (`view(.., nh, hc, ..)`), so pair d goes from all heads at once.
  The logits are divided by `hc ** 0.5`, recomputed from `hc` in the forward: a pruned module's `gl`
  is scaled by `(hc' / hc) ** 0.5` (`fix_world`), so the logits keep the original scale exactly. Its
  output, `proj_conv`'s channels weighted by their head's attention, keeps every head's count alike.
- `ImagePoolingAttn` (YOLO-World v1's text update from image features): q, k and v are viewed per
  head with one `hc`, so a head goes whole (its q, k and v channels and `proj`'s inputs); `hc` and
  its scale stay, `nh` and `ec` (the width the weighted values are viewed to) follow. The pooled
  image features feed the key and value LayerNorms, which pin them (decision 31).
- `ContrastiveHead` and `BNContrastiveHead` (the class scores): the image feature's channels meet the
  text embeddings' dims, which the text encoder fixes; pinned with that reason.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from ultralytics.nn.modules import block as B

from yoloprune.graph.adapter import Glue, same_in_every_head, whole_heads

TEXT_REASON = (
    "its channels meet the text embeddings' dims in a dot product, and the text encoder fixes that width "
    "(a class added later is embedded at the full width), so no prune of the image model can narrow it"
)


def _text(glue: Glue, text: torch.Tensor) -> torch.Tensor:
    """`text` (bs, n, width) as a traced tensor: as it is when the trace reached it, else (text
    embeddings the model holds) with fresh channels along its last axis, pinned (`TEXT_REASON`)."""
    if glue.traced(text):
        return text
    with glue.paused():
        by_channel = text.transpose(1, 2)  # (bs, width, n): the glue labels dim 1
    width = glue.fresh(text.shape[-1])
    glue.pin(width, TEXT_REASON)
    glue.label(by_channel, width, [], "text embeddings, from outside the image")
    return by_channel.transpose(1, 2)


def max_sigmoid_attention(
    glue: Glue, m: B.MaxSigmoidAttnBlock, x: torch.Tensor, guide: torch.Tensor
) -> torch.Tensor:
    """`MaxSigmoidAttnBlock.forward`, reporting its glue."""
    bs, _, h, w = x.shape
    text = m.gl(_text(glue, guide))  # (bs, n, nh x hc)
    embed = m.ec(x) if m.ec is not None else x  # (bs, nh x hc, h, w)
    proj = m.proj_conv(x)  # (bs, c2, h, w)
    with glue.paused():  # as the forward
        g = text.view(bs, text.shape[1], m.nh, m.hc)
        e = embed.view(bs, m.nh, m.hc, h, w)
        aw = (e.flatten(3).transpose(2, 3) @ g.permute(0, 2, 3, 1)).max(dim=-1)[0].view(bs, m.nh, h, w)
        aw = ((aw / (m.hc**0.5)) + m.bias[None, :, None, None]).sigmoid() * m.scale
        out = (proj.view(bs, m.nh, -1, h, w) * aw.unsqueeze(2)).view(bs, -1, h, w)
    pairs = glue.elems(embed).reshape(m.nh, -1)
    glue.couple(pairs, glue.elems(text).reshape(m.nh, -1))
    same_in_every_head(glue, pairs)
    outputs = glue.elems(proj)
    same_in_every_head(glue, outputs.reshape(m.nh, -1))
    glue.label(
        out, outputs, [proj, embed, text], "MaxSigmoidAttnBlock: proj_conv weighted by its head's attention"
    )
    return out


def image_pooling_attention(
    glue: Glue, m: B.ImagePoolingAttn, x: list[torch.Tensor], text: torch.Tensor
) -> torch.Tensor:
    """`ImagePoolingAttn.forward`, reporting its glue."""
    bs = x[0].shape[0]
    feats = [proj(f) for f, proj in zip(x, m.projections, strict=True)]  # (bs, ec_in, H, W) each
    with glue.paused():
        pooled = torch.cat(
            [pool(f).view(bs, -1, m.k**2) for f, pool in zip(feats, m.im_pools, strict=True)], -1
        )
    levels = glue.elems(feats[0])
    for f in feats[1:]:  # the levels' channels are concatenated along the patches: one channel axis
        glue.couple(levels, glue.elems(f))
    glue.label(
        pooled, levels, feats, "ImagePoolingAttn: every level pooled to k x k patches"
    )  # (bs, ec_in, P)
    seq = pooled.transpose(1, 2)  # (bs, P, ec_in)
    text = _text(glue, text)
    q, k, v = m.query(text), m.key(seq), m.value(seq)  # (bs, n | P, nh x hc)
    with glue.paused():  # as the forward
        qh, kh, vh = (t.reshape(bs, -1, m.nh, m.hc) for t in (q, k, v))
        aw = F.softmax(torch.einsum("bnmc,bkmc->bmnk", qh, kh) / (m.hc**0.5), dim=-1)
        out = torch.einsum("bmnk,bkmc->bnmc", aw, vh).reshape(bs, -1, m.ec).transpose(1, 2)  # (bs, ec, n)
    heads = [glue.elems(t).reshape(m.nh, m.hc) for t in (q, k, v)]
    whole_heads(glue, np.concatenate(heads, axis=1))  # its q, k and v channels are one
    glue.label(out, heads[2].reshape(-1), [q, k, v], "ImagePoolingAttn: softmax(q k) weights v, per head")
    return m.proj(out.transpose(1, 2)) * m.scale + text


def contrastive_head(
    glue: Glue, m: B.ContrastiveHead | B.BNContrastiveHead, x: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    """`ContrastiveHead.forward` or `BNContrastiveHead.forward`: the image channels pinned (`TEXT_REASON`)."""
    glue.pin(glue.elems(x), TEXT_REASON)  # a BatchNorm keeps channels apart: its output has x's
    feats = m.norm(x) if isinstance(m, B.BNContrastiveHead) else x
    with glue.paused():  # as the forward
        if not isinstance(m, B.BNContrastiveHead):
            feats = F.normalize(feats, dim=1, p=2)
        w = F.normalize(w, dim=-1, p=2)
        out = (w @ feats.flatten(2)).view(-1, w.shape[1], *feats.shape[2:]) * m.logit_scale.exp() + m.bias
    glue.label(
        out, glue.fresh(out.shape[1]), [feats], "the class scores: text embeddings against image channels"
    )
    return out


RULES = {
    B.MaxSigmoidAttnBlock: max_sigmoid_attention,
    B.ImagePoolingAttn: image_pooling_attention,
    B.ContrastiveHead: contrastive_head,
    B.BNContrastiveHead: contrastive_head,
}


def fix_world(module: torch.nn.Module) -> None:
    """Set a text-guided module's head attributes from its pruned layers' widths; a
    `MaxSigmoidAttnBlock` whose `hc` shrank gets `gl` scaled so its logits keep their scale."""
    if type(module) is B.MaxSigmoidAttnBlock:
        hc = module.gl.out_features // module.nh
        if hc != module.hc:
            with torch.no_grad():  # logits / hc' ** 0.5 with gl x (hc' / hc) ** 0.5: the original's scale
                factor = (hc / module.hc) ** 0.5
                module.gl.weight.mul_(factor)
                module.gl.bias.mul_(factor)
            module.hc = hc
    elif type(module) is B.ImagePoolingAttn:
        module.nh = module.query[1].out_features // module.hc
        module.ec = module.nh * module.hc
