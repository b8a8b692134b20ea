"""Block top-k sparse decode attention (Kinetics): sink block(s) + local window + top-k blocks per KV head.

>>> import torch
>>> from seekrl.kernels.block_sparse import block_topk_attention
>>> q, k, v = torch.randn(2, 4, 16), torch.randn(2, 2, 50, 16), torch.randn(2, 2, 50, 16)
>>> block_topk_attention(q, k, v, block_size=8, topk=2, sink_blocks=1, local=8).shape
torch.Size([2, 4, 16])
"""

from __future__ import annotations

import torch

from seekrl.kernels.block_sparse.naive import dense_attention
from seekrl.kernels.block_sparse.selection import Selection, select_blocks

__all__ = ["block_topk_attention", "dense_attention", "select_blocks", "Selection", "triton_available"]


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def block_topk_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    block_size: int,
    topk: int,
    sink_blocks: int = 1,
    local: int = 0,
    seq_lens: torch.Tensor | None = None,
    kv_start: torch.Tensor | None = None,
    block_means: torch.Tensor | None = None,
    scale: float | None = None,
    impl: str = "auto",
    num_splits: int | None = None,
) -> torch.Tensor:
    """Decode attention of one query token per sequence over its sink, local and top-k KV blocks.

    q: [B, H_q, D] (one token per sequence); k, v: [B, H_kv, T, D], H_q a multiple of H_kv (GQA: query head i
    reads KV head i // (H_q / H_kv)). Returns [B, H_q, D] in q's dtype.
    seq_lens [B]: valid length per sequence (ragged batch; default T); kv_start [B]: first valid position
    (left padding; default 0). Only positions in [kv_start, seq_lens) are ever attended; there must be at least one.
    block_means [B, H_kv, NBF, D]: cached means of full blocks (see `select_blocks`); computed from k when None.
    The attended tokens are chosen by `select_blocks` (see its module for the exact rule); when sink + local +
    top-k cover all blocks this is dense attention. impl: "naive" (PyTorch), "triton", or "auto" (Triton on CUDA
    tensors when installed, else naive). scale defaults to D ** -0.5.
    """
    if q.dim() != 3 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"expected q [B, H_q, D] and k, v [B, H_kv, T, D]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if q.shape[1] % k.shape[1] or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} does not match k {tuple(k.shape)}: H_q must be a multiple of H_kv")
    if block_size < 1 or topk < 0 or sink_blocks < 0 or local < 0:
        raise ValueError("block_size must be >= 1 and topk, sink_blocks, local >= 0")
    if impl == "auto":
        impl = "triton" if q.is_cuda and triton_available() else "naive"
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    sel = select_blocks(q, k, block_size=block_size, topk=topk, sink_blocks=sink_blocks, local=local,
                        seq_lens=seq_lens, kv_start=kv_start, block_means=block_means)
    if impl == "naive":
        from seekrl.kernels.block_sparse.naive import sparse_attention

        return sparse_attention(q, k, v, sel, block_size=block_size, scale=scale)
    if impl == "triton":
        from seekrl.kernels.block_sparse.triton import sparse_attention

        return sparse_attention(q, k, v, sel, block_size=block_size, scale=scale, num_splits=num_splits)
    raise ValueError(f"impl must be 'auto', 'naive' or 'triton', not {impl!r}")
