"""Which KV blocks a decode step attends: sink block(s), local window, and the top-k blocks by q . mean(K_block).

Shared by both implementations, so that the Triton kernel and the PyTorch path attend exactly the same tokens.

Blocks are aligned to cache positions: block j holds positions [j * block_size, (j + 1) * block_size). The valid
tokens of sequence b are [kv_start[b], seq_lens[b]) (left padding before, ragged end after); nothing outside is
ever attended. Per sequence and KV head:

- sink: the first `sink_blocks` blocks holding a valid token;
- local: every block overlapping the last max(local, 1) valid tokens (so the window is rounded out to whole
  blocks, and the block of the newest token is always attended);
- top-k: among the blocks in between, the `topk` with the highest score q . mean(K_block), where q is summed over
  the query heads of the GQA group (the group's mean up to a constant factor, which does not change the ranking).

When sink + local + top-k cover every block, all valid tokens are attended and the result equals dense attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Selection:
    """Selected blocks per (sequence, KV head): ascending block ids, padded with -1 after `count` entries."""

    block_idx: torch.Tensor  # [B, H_kv, NSEL] int32
    count: torch.Tensor  # [B, H_kv] int32
    kv_start: torch.Tensor  # [B] int32, first valid position
    kv_end: torch.Tensor  # [B] int32, one past the last valid position


def valid_range(k: torch.Tensor, seq_lens: torch.Tensor | None, kv_start: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, end) int64 per sequence, defaulting to the whole cache [0, T)."""
    bsz, total = k.shape[0], k.shape[2]
    device = k.device
    end = torch.full((bsz,), total, device=device) if seq_lens is None else seq_lens.to(device, torch.int64)
    start = torch.zeros(bsz, dtype=torch.int64, device=device) if kv_start is None else kv_start.to(device, torch.int64)
    return start, end


def masked_block_means(k: torch.Tensor, block_size: int, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Mean key of every block over its valid positions (0 for blocks without any), in fp32."""
    bsz, h_kv, total, dim = k.shape
    num_blocks = -(-total // block_size)
    pos = torch.arange(total, device=k.device)
    valid = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])  # [B, T]
    kf = (k.float() * valid[:, None, :, None]).reshape(bsz, h_kv, total, dim)
    pad = num_blocks * block_size - total
    kf = torch.nn.functional.pad(kf, (0, 0, 0, pad)).view(bsz, h_kv, num_blocks, block_size, dim)
    counts = torch.nn.functional.pad(valid, (0, pad)).view(bsz, num_blocks, block_size).sum(-1)  # [B, NB]
    return kf.sum(3) / counts.clamp(min=1)[:, None, :, None]  # [B, H_kv, NB, D]


def _first_block_scores(q_group: torch.Tensor, k: torch.Tensor, block_size: int, start: torch.Tensor,
                        end: torch.Tensor) -> torch.Tensor:
    """Score of the block holding kv_start, from the mean over its valid positions only: [B, H_kv].

    Cached means are over all positions of a full block; that block may also hold left pads.
    """
    bsz, h_kv, total, dim = k.shape
    first = start // block_size  # [B]
    pos = first[:, None] * block_size + torch.arange(block_size, device=k.device)  # [B, bs]
    valid = (pos >= start[:, None]) & (pos < end[:, None])
    gathered = k.gather(2, pos.clamp(max=total - 1)[:, None, :, None].expand(bsz, h_kv, block_size, dim)).float()
    mean = (gathered * valid[:, None, :, None]).sum(2) / valid.sum(1).clamp(min=1)[:, None, None]  # [B, H_kv, D]
    return (mean * q_group).sum(-1)


def select_blocks(q: torch.Tensor, k: torch.Tensor, *, block_size: int, topk: int, sink_blocks: int, local: int,
                  seq_lens: torch.Tensor | None = None, kv_start: torch.Tensor | None = None,
                  block_means: torch.Tensor | None = None) -> Selection:
    """Blocks attended by one decode step.

    q [B, H_q, D], k [B, H_kv, T, D]; block_means [B, H_kv, NBF, D]: optional cached means of the first NBF full
    blocks (over all their positions); blocks a mean is needed for must be among them.
    """
    bsz, h_q, dim = q.shape
    h_kv, total = k.shape[1], k.shape[2]
    group = h_q // h_kv
    num_blocks = -(-total // block_size)
    start, end = valid_range(k, seq_lens, kv_start)
    q_group = q.float().view(bsz, h_kv, group, dim).sum(2)  # [B, H_kv, D]
    if block_means is None:
        means = masked_block_means(k, block_size, start, end)  # [B, H_kv, NB, D]
        scores = torch.einsum("bhd,bhnd->bhn", q_group, means)  # [B, H_kv, NB]
    else:
        # Cached means cover the full blocks only; the blocks after them are never candidates (see module doc).
        if block_means.shape[2] < total // block_size:
            raise ValueError(f"block_means holds {block_means.shape[2]} blocks; the {total // block_size} full "
                             f"blocks of a {total}-token cache all need one")
        means = block_means[:, :, :num_blocks]
        scores = torch.einsum("bhd,bhnd->bhn", q_group.to(means.dtype), means).float()
        scores = torch.nn.functional.pad(scores, (0, num_blocks - scores.shape[2]), value=float("-inf"))
        if kv_start is not None:
            first_scores = _first_block_scores(q_group, k, block_size, start, end)  # [B, H_kv]
            scores = scores.scatter(2, (start // block_size)[:, None, None].expand(bsz, h_kv, 1),
                                    first_scores[:, :, None])

    # Per sequence: sink blocks [first, first + sink), top-k candidates [first + sink, local_first), local blocks
    # [max(local_first, first + sink), last]. The three id lists are disjoint, so they are simply concatenated.
    device = q.device
    first = start // block_size  # [B]
    last = (end - 1) // block_size
    local_first = torch.maximum((end - max(local, 1)) // block_size, first)
    blocks = torch.arange(num_blocks, device=device)[None, :]  # [1, NB]
    candidate = (blocks >= (first + sink_blocks)[:, None]) & (blocks < local_first[:, None])  # [B, NB]
    sink_ids = first[:, None] + torch.arange(sink_blocks, device=device)  # [B, S]
    local_blocks = -(-max(local, 1) // block_size) + 1  # most blocks a window of max(local, 1) tokens overlaps
    local_ids = torch.maximum(local_first, first + sink_blocks)[:, None] + torch.arange(local_blocks, device=device)
    fixed_ids = torch.cat([sink_ids, local_ids], dim=1)  # [B, S + L]
    fixed_ok = fixed_ids <= last[:, None]
    ids = [fixed_ids[:, None, :].expand(bsz, h_kv, -1)]
    ok = [fixed_ok[:, None, :].expand(bsz, h_kv, -1)]
    k_eff = min(topk, num_blocks)
    if k_eff > 0:
        scores = scores.masked_fill(~candidate[:, None, :], float("-inf"))
        top_scores, top_idx = scores.topk(k_eff, dim=-1)  # [B, H_kv, k]
        ids.append(top_idx)
        ok.append(top_scores > float("-inf"))
    ids_all, ok_all = torch.cat(ids, dim=2), torch.cat(ok, dim=2)  # [B, H_kv, S + L + k]

    # Ascending ids with the unused entries (-1) after them: sort with unused entries keyed past every block.
    keys, _ = torch.where(ok_all, ids_all, num_blocks).sort(dim=-1)
    nsel = min(num_blocks, keys.shape[-1])
    block_idx = torch.where(keys < num_blocks, keys, -1)[..., :nsel]
    return Selection(
        block_idx=block_idx.to(torch.int32).contiguous(),
        count=ok_all.sum(-1).to(torch.int32),
        kv_start=start.to(torch.int32),
        kv_end=end.to(torch.int32),
    )


def token_mask(sel: Selection, total: int, block_size: int) -> torch.Tensor:
    """[B, H_kv, T] bool: the tokens a selection attends (for checking kernels against masked dense attention)."""
    bsz, h_kv, _ = sel.block_idx.shape
    device = sel.block_idx.device
    blocks = torch.zeros(bsz, h_kv, -(-total // block_size) + 1, dtype=torch.bool, device=device)
    idx = sel.block_idx.long()
    # -1 (padding) goes to an extra last column, dropped below.
    blocks.scatter_(2, torch.where(idx >= 0, idx, blocks.shape[2] - 1), True)
    mask = blocks[:, :, :-1].repeat_interleave(block_size, dim=2)[:, :, :total]
    pos = torch.arange(total, device=device)
    valid = (pos[None] >= sel.kv_start[:, None].long()) & (pos[None] < sel.kv_end[:, None].long())  # [B, T]
    return mask & valid[:, None, :]
