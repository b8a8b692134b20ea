"""PyTorch block top-k decode attention: the reference for the Triton kernel and the CPU production path.

It gathers the selected blocks' keys and values (about the budget's worth of tokens instead of the whole cache), then runs
plain softmax attention over them in fp32. `dense_attention` is the masked dense reference both are tested against.

On CPU each step allocates a few MB for the gathered blocks; with glibc's default settings freed buffers of that
size go back to the OS and every step pays page faults for them (about 2x slower at 16K context, see
benchmarks/kernels.py --malloc). Long-running CPU rollouts should keep freed memory: MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_ set high in the environment, or jemalloc/tcmalloc.
"""

from __future__ import annotations

import torch

from seekrl.kernels.block_sparse.selection import Selection, valid_range


def gather_blocks(x: torch.Tensor, block_idx: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy the selected blocks of x [B, H_kv, T, D] -> ([B, H_kv, NSEL * bs, D], positions [B, H_kv, NSEL * bs]).

    x is seen as overlapping windows of `block_size` rows starting at every row of its flat [B * H_kv * T, D]
    storage, so that `index_select` copies one contiguous block per index (several times faster on CPU than
    indexing token by token). A window that would run past the end of the storage (the last sequence's partial
    last block) is moved back; `positions` then says which position each gathered row really holds, so the
    caller masks rows that are not in their block.
    """
    bsz, h_kv, total, dim = x.shape
    x = x.contiguous()
    rows = x.numel() // dim
    if rows < block_size:
        # Fewer rows than one window (a tiny cache): pad the copy; the extra rows are masked by position.
        x = torch.nn.functional.pad(x.view(rows, dim), (0, 0, 0, block_size - rows))
        rows = block_size
    windows = x.as_strided((rows - block_size + 1, block_size, dim), (dim, dim, 1))
    base = torch.arange(bsz * h_kv, device=x.device).view(bsz, h_kv, 1) * total  # [B, H_kv, 1]
    first = base + block_idx.clamp(min=0) * block_size  # [B, H_kv, NSEL]
    first = first.clamp(max=rows - block_size)
    out = windows.index_select(0, first.flatten()).view(bsz, h_kv, -1, dim)
    positions = ((first - base)[..., None] + torch.arange(block_size, device=x.device)).flatten(2)
    return out, positions


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sel: Selection, *, block_size: int,
                     scale: float) -> torch.Tensor:
    """q [B, H_q, D], k, v [B, H_kv, T, D] -> [B, H_q, D] in q's dtype, attending the selected blocks only."""
    bsz, h_q, dim = q.shape
    h_kv = k.shape[1]
    idx = sel.block_idx.long()  # [B, H_kv, NSEL]
    k_sel, pos = gather_blocks(k, idx, block_size)  # [B, H_kv, NSEL*bs, D], [B, H_kv, NSEL*bs]
    v_sel, _ = gather_blocks(v, idx, block_size)
    # A gathered row counts if its entry is a real block (not -1 padding), the row lies in that block, and the
    # position is one of the sequence's valid tokens.
    block_of_row = idx.repeat_interleave(block_size, dim=-1)
    start, end = sel.kv_start.long()[:, None, None], sel.kv_end.long()[:, None, None]
    valid = (block_of_row >= 0) & (pos // block_size == block_of_row) & (pos >= start) & (pos < end)
    q_g = q.float().view(bsz, h_kv, h_q // h_kv, dim)  # [B, H_kv, G, D]
    scores = torch.matmul(q_g, k_sel.float().transpose(-1, -2)) * scale  # [B, H_kv, G, NSEL*bs]
    scores = scores.masked_fill(~valid[:, :, None, :], float("-inf"))
    out = torch.matmul(scores.softmax(-1), v_sel.float())  # [B, H_kv, G, D]
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
