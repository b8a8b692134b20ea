"""Triton block top-k decode attention: split-KV flash decoding over the selected blocks.

Pass 1 (`_split_kernel`), grid (B * H_kv, splits): one program takes all G query heads of a KV head (so the
scores are one `tl.dot` of [G, D] x [D, N]) and a slice of that head's selected block list, and runs online
softmax over it, a tile of several blocks per step. It writes its normalised partial output and the
log-sum-exp. Pass 2 (`_merge_kernel`), grid (B * H_q): merges the splits of one query head by log-sum-exp.
Inputs may be fp16/bf16 (GPU) or fp32 (also under TRITON_INTERPRET=1 on CPU); accumulation is fp32.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from seekrl.kernels.block_sparse.selection import Selection


@triton.jit
def _split_kernel(
    Q, K, V, IDX, COUNT, START, END, O_PART, LSE_PART,
    stride_qb, stride_qh,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_ib, stride_ih,
    stride_ob, stride_oh, stride_og, stride_os,
    stride_lb, stride_lh, stride_lg,
    scale, blocks_per_split,
    H_KV: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BS_P2: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    # 64-bit offsets: b * stride_kb passes 2**31 for large caches (e.g. batch 64 x 8 KV heads x 128K tokens).
    b = (pid_bh // H_KV).to(tl.int64)
    h = pid_bh % H_KV
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    g_mask = offs_g < G
    d_mask = offs_d < D

    # [BLOCK_G, BLOCK_D]: the group's query heads are h * G ... h * G + G - 1.
    q = tl.load(Q + b * stride_qb + (h * G + offs_g)[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    start = tl.load(START + b)
    end = tl.load(END + b)
    count = tl.load(COUNT + b * (H_KV) + h)
    lo = split * blocks_per_split
    hi = tl.minimum(lo + blocks_per_split, count)

    # A tile of BLOCK_N tokens covers BLOCK_N // BS_P2 consecutive entries of the block list.
    slot = offs_n // BS_P2
    within = offs_n % BS_P2
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for i in range(lo, hi, BLOCK_N // BS_P2):
        entry = i + slot
        blk = tl.load(IDX + b * stride_ib + h * stride_ih + entry, mask=entry < hi, other=-1)
        pos = blk * BLOCK_SIZE + within
        valid = (blk >= 0) & (within < BLOCK_SIZE) & (pos >= start) & (pos < end)  # [BLOCK_N]
        kv_mask = valid[:, None] & d_mask[None, :]
        k = tl.load(K + b * stride_kb + h * stride_kh + pos[:, None] * stride_kt + offs_d[None, :],
                    mask=kv_mask, other=0.0)  # [BLOCK_N, BLOCK_D]
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # [BLOCK_G, BLOCK_N]
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # While every score so far is masked, m_new is -inf; shift by 0 then so that exp gives 0, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + b * stride_vb + h * stride_vh + pos[:, None] * stride_vt + offs_d[None, :],
                    mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf"))
    o_ptr = O_PART + b * stride_ob + h * stride_oh + offs_g[:, None] * stride_og + split * stride_os + offs_d[None, :]
    tl.store(o_ptr, out, mask=g_mask[:, None] & d_mask[None, :])
    tl.store(LSE_PART + b * stride_lb + h * stride_lh + offs_g * stride_lg + split, lse, mask=g_mask)


@triton.jit
def _merge_kernel(O_PART, LSE_PART, OUT, num_splits, D: tl.constexpr, BLOCK_S: tl.constexpr,
                  BLOCK_D: tl.constexpr):
    # One row = one (sequence, query head); partials are [rows, splits, D], lse [rows, splits].
    row = tl.program_id(0)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < num_splits
    lse = tl.load(LSE_PART + row * num_splits + offs_s, mask=s_mask, other=float("-inf"))
    m = tl.max(lse, 0)
    w = tl.exp(lse - m)  # [BLOCK_S]; empty splits (lse -inf) weigh 0
    o = tl.load(O_PART + (row * num_splits + offs_s)[:, None] * D + offs_d[None, :],
                mask=s_mask[:, None] & (offs_d < D)[None, :], other=0.0)
    out = tl.sum(o * w[:, None], 0) / tl.sum(w, 0)
    tl.store(OUT + row * D + offs_d, out.to(OUT.dtype.element_ty), mask=offs_d < D)


@functools.lru_cache(maxsize=8)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def default_num_splits(bsz: int, h_kv: int, nsel: int, device: torch.device) -> int:
    """Enough splits for ~4 programs per SM, at least 2 blocks per split."""
    if device.type != "cuda":
        return 1 if nsel < 4 else 2
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    want = math.ceil(4 * sms / (bsz * h_kv))
    return max(1, min(want, math.ceil(nsel / 2)))


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sel: Selection, *, block_size: int,
                     scale: float, num_splits: int | None = None) -> torch.Tensor:
    """q [B, H_q, D], k, v [B, H_kv, T, D] -> [B, H_q, D] in q's dtype, attending the selected blocks only."""
    bsz, h_q, dim = q.shape
    h_kv = k.shape[1]
    group = h_q // h_kv
    nsel = sel.block_idx.shape[-1]
    q = q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    splits = num_splits or default_num_splits(bsz, h_kv, nsel, q.device)
    blocks_per_split = max(1, math.ceil(nsel / splits))
    splits = max(1, math.ceil(nsel / blocks_per_split))

    # tl.dot needs every dimension >= 16 on GPUs; padded rows and columns are masked.
    block_g = max(16, triton.next_power_of_2(group))
    block_d = max(16, triton.next_power_of_2(dim))
    bs_p2 = triton.next_power_of_2(block_size)
    block_n = max(bs_p2, 64 if q.is_cuda else 16)

    o_part = torch.empty(bsz, h_kv, group, splits, dim, device=q.device, dtype=torch.float32)
    lse_part = torch.empty(bsz, h_kv, group, splits, device=q.device, dtype=torch.float32)
    count = sel.count.contiguous()
    _split_kernel[(bsz * h_kv, splits)](
        q, k, v, sel.block_idx, count, sel.kv_start, sel.kv_end, o_part, lse_part,
        q.stride(0), q.stride(1),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        sel.block_idx.stride(0), sel.block_idx.stride(1),
        o_part.stride(0), o_part.stride(1), o_part.stride(2), o_part.stride(3),
        lse_part.stride(0), lse_part.stride(1), lse_part.stride(2),
        scale, blocks_per_split,
        H_KV=h_kv, G=group, D=dim, BLOCK_SIZE=block_size,
        BLOCK_G=block_g, BLOCK_D=block_d, BS_P2=bs_p2, BLOCK_N=block_n,
        # fp32 inputs: exact fp32 products (tensor cores would round them to tf32); 16-bit inputs ignore it.
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )
    out = torch.empty(bsz, h_q, dim, device=q.device, dtype=q.dtype)
    _merge_kernel[(bsz * h_q,)](
        o_part, lse_part, out, splits, D=dim, BLOCK_S=max(2, triton.next_power_of_2(splits)), BLOCK_D=block_d,
    )
    return out
