"""PyTorch block top-k decode attention: the reference for the Triton kernel and the CPU production path.

It gathers the selected blocks' keys and values (a few hundred tokens instead of the whole cache), then runs
plain softmax attention over them in fp32. `dense_attention` is the masked dense reference both are tested against.
"""

from __future__ import annotations

import torch

from seekrl.kernels.block_sparse.selection import Selection, valid_range


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sel: Selection, *, block_size: int,
                     scale: float) -> torch.Tensor:
    """q [B, H_q, D], k, v [B, H_kv, T, D] -> [B, H_q, D] in q's dtype, attending the selected blocks only."""
    bsz, h_q, dim = q.shape
    h_kv, total = k.shape[1], k.shape[2]
    nsel = sel.block_idx.shape[-1]
    idx = sel.block_idx.long()  # [B, H_kv, NSEL]
    pos = idx[..., None] * block_size + torch.arange(block_size, device=q.device)  # [B, H_kv, NSEL, bs]
    pos = pos.view(bsz, h_kv, nsel * block_size)
    start, end = sel.kv_start.long(), sel.kv_end.long()
    valid = (idx >= 0).repeat_interleave(block_size, dim=-1)
    valid &= (pos >= start[:, None, None]) & (pos < end[:, None, None])  # [B, H_kv, NSEL*bs]
    # Row indices into k viewed as [B * H_kv * T, D]: plain row indexing is much faster than gather on CPU.
    rows = torch.arange(bsz * h_kv, device=q.device).view(bsz, h_kv, 1) * total + pos.clamp(0, total - 1)
    k_sel = k.reshape(-1, dim)[rows].float()  # [B, H_kv, NSEL*bs, D]
    v_sel = v.reshape(-1, dim)[rows].float()
    q_g = q.float().view(bsz, h_kv, h_q // h_kv, dim)  # [B, H_kv, G, D]
    scores = torch.matmul(q_g, k_sel.transpose(-1, -2)) * scale  # [B, H_kv, G, NSEL*bs]
    scores = scores.masked_fill(~valid[:, :, None, :], float("-inf"))
    out = torch.matmul(scores.softmax(-1), v_sel)  # [B, H_kv, G, D]
    return out.reshape(bsz, h_q, dim).to(q.dtype)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, seq_lens: torch.Tensor | None = None,
                    kv_start: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Dense decode attention over the valid tokens [kv_start, seq_lens), in fp32: the reference."""
    bsz, h_q, dim = q.shape
    h_kv, total = k.shape[1], k.shape[2]
    scale = dim**-0.5 if scale is None else scale
    start, end = valid_range(k, seq_lens, kv_start)
    pos = torch.arange(total, device=q.device)
    valid = (pos[None] >= start[:, None]) & (pos[None] < end[:, None])  # [B, T]
    q_g = q.float().view(bsz, h_kv, h_q // h_kv, dim)
    scores = torch.matmul(q_g, k.float().transpose(-1, -2)) * scale  # [B, H_kv, G, T]
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    out = torch.matmul(scores.softmax(-1), v.float())
    return out.reshape(bsz, h_q, dim).to(q.dtype)
