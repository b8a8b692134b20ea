"""CPU benchmark: block top-k decode attention (PyTorch path) vs dense SDPA decode, one run, side by side.

Shapes follow Qwen2.5-3B's attention (16 query heads, 2 KV heads, head dim 128), batch 8, one decode step over
a 4K / 16K / 64K context, budget block 16 x top-k 64 (+ the sink block and the newest block). Block means come
precomputed, as `BlockTopKCache` keeps them; the sparse time includes ranking the blocks, the top-k, the gather
and the attention. Dense is `F.scaled_dot_product_attention` with the G query heads of a KV head packed as G
queries (transformers' decode path, no KV expansion). Each sparse output is first checked against dense SDPA
masked to the same selected tokens; a row whose check fails prints FAILED and no speedup.

    python benchmarks/kernels.py                        # the table in the issue's note
    python benchmarks/kernels.py --contexts 4096 --reps 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from seekrl.kernels.block_sparse import block_topk_attention, select_blocks
from seekrl.kernels.block_sparse.selection import masked_block_means, token_mask

TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-3}


def keep_freed_memory() -> bool:
    """glibc: serve every buffer below 2 GB from the heap and never return freed heap to the OS.

    Each decode step allocates a few MB of gathered keys and values; with glibc's defaults such buffers go back
    to the OS when freed, and the next step pays a page fault per 4 KB page (several ms, more than the sparse
    attention itself). Long-running servers set the same (or use jemalloc/tcmalloc). Applies to both columns.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 2**31 - 1)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def dense_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
    """q [B, H_q, D], k, v [B, H_kv, T, D]; mask [B, H_kv, T] bool or None -> [B, H_q, D]."""
    bsz, h_q, dim = q.shape
    h_kv = k.shape[1]
    q_packed = q.view(bsz, h_kv, h_q // h_kv, dim)  # [B, H_kv, G, D]: the G heads as G queries
    attn_mask = None if mask is None else mask[:, :, None, :]  # [B, H_kv, 1, T]
    return F.scaled_dot_product_attention(q_packed, k, v, attn_mask=attn_mask).reshape(bsz, h_q, dim)


def timed_pair(fn_a, fn_b, reps: int) -> tuple[float, float]:
    """Median seconds per call of two functions, calls alternating so both see the same machine load."""
    fn_a(), fn_b()
    times_a, times_b = [], []
    for _ in range(reps):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times_a), statistics.median(times_b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", default="4096,16384,65536", help="Context lengths, comma-separated.")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--topk", type=int, default=64)
    parser.add_argument("--sink-blocks", type=int, default=1)
    parser.add_argument("--local", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 by default because on a shared machine every multi-threaded op "
                             "can wait a scheduler slice for a descheduled worker, which swamps small ops.")
    parser.add_argument("--malloc", choices=["keep", "default"], default="keep",
                        help="keep: glibc keeps freed buffers (see keep_freed_memory); default: glibc's defaults.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc = "glibc keeps freed memory" if args.malloc == "keep" and keep_freed_memory() else "glibc defaults"
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    print(f"CPU decode step, batch {args.batch}, heads {args.heads}/{args.kv_heads} (q/kv), head dim {args.head_dim}, "
          f"{args.dtype}, block {args.block_size} x top-k {args.topk} + {args.sink_blocks} sink block(s) + local "
          f"{args.local} (newest block always), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.reps}, {malloc}")
    header = f"{'context':>8} {'attended':>9} {'dense SDPA ms':>14} {'block top-k ms':>15} {'speedup':>8}  check"
    print(header)
    failed = False
    for total in (int(c) for c in args.contexts.split(",")):
        q = torch.randn(args.batch, args.heads, args.head_dim, dtype=dtype)
        k = torch.randn(args.batch, args.kv_heads, total, args.head_dim, dtype=dtype)
        v = torch.randn(args.batch, args.kv_heads, total, args.head_dim, dtype=dtype)
        full = torch.full((args.batch,), total)
        means = masked_block_means(k, args.block_size, torch.zeros(args.batch, dtype=torch.long), full)
        kwargs = dict(block_size=args.block_size, topk=args.topk, sink_blocks=args.sink_blocks, local=args.local,
                      block_means=means, impl="naive")

        sel = select_blocks(q, k, block_size=args.block_size, topk=args.topk, sink_blocks=args.sink_blocks,
                            local=args.local, block_means=means)
        mask = token_mask(sel, total, args.block_size)
        attended = int(mask[0, 0].sum())
        sparse_out = block_topk_attention(q, k, v, **kwargs)
        ref = dense_decode(q.float(), k.float(), v.float(), mask)
        err = (sparse_out.float() - ref).abs().max().item()
        ok = err <= TOL[dtype]
        failed |= not ok

        t_dense, t_sparse = timed_pair(lambda: dense_decode(q, k, v), lambda: block_topk_attention(q, k, v, **kwargs),
                                       args.reps)
        speed = f"{t_dense / t_sparse:7.1f}x" if ok else "     --"
        check = f"ok (max err {err:.1e})" if ok else f"FAILED (max err {err:.1e})"
        print(f"{total:>8} {attended:>9} {t_dense * 1e3:>14.2f} {t_sparse * 1e3:>15.2f} {speed:>8}  {check}")
        del q, k, v, means, mask
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
