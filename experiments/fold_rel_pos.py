"""An experiment for the GPU (timed by experiments/ab_vision_attention.py): SAM's vision attention with its
relative-position bias folded into the query and key. Not part of segdet until a GPU measurement shows it wins; on
the CPU it is 7-10 % slower eager and slower still compiled (sam_tiny's small heads), while exact to 2e-6.

transformers adds SAM's decomposed relative-position bias as a dense (batch, heads, tokens, tokens) mask: 6.4 GB
in bf16 for one global-attention layer of a batch of 16 at 1024 px, written and read again by the attention
kernel. The bias is a sum of a row term and a column term,

    bias[q, k] = rel_h[q, row(k)] + rel_w[q, col(k)],

so it is the dot product of [rel_h[q], rel_w[q]] with the one-hot of the key's row and column. Appending those to
the scaled query and to the key gives the same scores without any mask, and lets the fused (flash) kernel run:

    [scale·q, rel_h[q], rel_w[q]] · [k, onehot(row k), onehot(col k)] = scale·q·k + bias[q, k]

Same weights and state dict as transformers' module; only ``forward`` differs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.sam.modeling_sam import SamVisionAttention, SamVisionSdpaAttention


class FoldedRelPosAttention(SamVisionSdpaAttention):
    def forward(self, hidden_states: torch.Tensor, output_attentions=False):
        b, h, w, _ = hidden_states.shape
        n = self.num_attention_heads
        qkv = self.qkv(hidden_states).reshape(b, h * w, 3, n, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (b, heads, h*w, d)
        d = q.shape[-1]
        if self.use_rel_pos:
            rq = q.reshape(b, n, h, w, d)
            rel_h = torch.einsum("bnhwc,hkc->bnhwk", rq, self.get_rel_pos(h, h, self.rel_pos_h).to(q.dtype))
            rel_w = torch.einsum("bnhwc,wkc->bnhwk", rq, self.get_rel_pos(w, w, self.rel_pos_w).to(q.dtype))
            rows = torch.eye(h, dtype=k.dtype, device=k.device)[:, None, :].expand(h, w, h).reshape(h * w, h)
            cols = torch.eye(w, dtype=k.dtype, device=k.device)[None, :, :].expand(h, w, w).reshape(h * w, w)
            pad = -(d + h + w) % 8  # fused kernels want head sizes in multiples of 8
            q = torch.cat([q * self.scale, rel_h.reshape(b, n, h * w, h), rel_w.reshape(b, n, h * w, w),
                           q.new_zeros(b, n, h * w, pad)], -1)
            k = torch.cat([k, rows.expand(b, n, -1, -1), cols.expand(b, n, -1, -1), k.new_zeros(b, n, h * w, pad)], -1)
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.view(b, n, h, w, d).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out), None


def fold_rel_pos(vision_encoder: nn.Module) -> int:
    """Switch every attention block of ``vision_encoder`` to the folded form (in place); returns how many."""
    blocks = [m for m in vision_encoder.modules() if isinstance(m, SamVisionAttention)]
    for m in blocks:
        m.__class__ = FoldedRelPosAttention
    return len(blocks)
