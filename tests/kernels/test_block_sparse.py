"""Block top-k decode attention: selection rule, naive == dense when everything is selected, Triton == naive."""

from __future__ import annotations

import os

import pytest
import torch

from seekrl.kernels.block_sparse import block_topk_attention, dense_attention, select_blocks
from seekrl.kernels.block_sparse.selection import masked_block_means

# Per-dtype tolerances (outputs are softmax averages of unit-normal values, so absolute errors).
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def _inputs(bsz, h_q, h_kv, total, dim, dtype=torch.float32, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(bsz, h_q, dim, generator=gen)
    k = torch.randn(bsz, h_kv, total, dim, generator=gen)
    v = torch.randn(bsz, h_kv, total, dim, generator=gen)
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def _attended_blocks(sel, b, h):
    n = int(sel.count[b, h])
    ids = sel.block_idx[b, h].tolist()
    assert all(i == -1 for i in ids[n:])
    return ids[:n]


def test_selection_follows_the_rule():
    # One sequence, one KV head, 2 query heads; T = 30, blocks of 4 -> 8 blocks, the last one partial.
    q, k, _ = _inputs(1, 2, 1, 30, 8)
    # Make block 3 the best match for the group's summed query, block 5 the second best.
    k[0, 0, 12:16] = q[0].sum(0) * 3
    k[0, 0, 20:24] = q[0].sum(0) * 2
    sel = select_blocks(q, k, block_size=4, topk=2, sink_blocks=1, local=5)
    # sink: block 0; local: the last 5 tokens 25..29 span blocks 6 and 7; top-2 among blocks 1..5: 3 and 5.
    assert _attended_blocks(sel, 0, 0) == [0, 3, 5, 6, 7]


def _brute_force_selection(q, k, b, h, start, end, block_size, topk, sink_blocks, local):
    """The selection rule written out with Python sets, for one (sequence, KV head)."""
    group = q.shape[1] // k.shape[1]
    first, last = start // block_size, (end - 1) // block_size
    local_first = max((end - max(local, 1)) // block_size, first)
    chosen = {j for j in range(first, first + sink_blocks) if j <= last} | set(range(local_first, last + 1))
    q_group = q[b, h * group:(h + 1) * group].sum(0)
    candidates = range(first + sink_blocks, local_first)
    score = {j: float(q_group @ k[b, h, max(j * block_size, start):min((j + 1) * block_size, end)].mean(0))
             for j in candidates}
    chosen |= set(sorted(candidates, key=lambda j: -score[j])[:topk])
    return sorted(chosen)


@pytest.mark.parametrize("seed", range(6))
def test_selection_matches_the_rule_written_out(seed):
    gen = torch.Generator().manual_seed(seed)
    bsz, h_kv, group, total = 3, 2, 1 + seed % 3, 40 + 7 * seed
    block_size, topk = (4, 8, 5)[seed % 3], seed % 4
    sink_blocks, local = seed % 3, (0, 3, 9)[seed % 3]
    q, k, _ = _inputs(bsz, h_kv * group, h_kv, total, 8, seed=seed)
    ends = torch.randint(total // 2, total + 1, (bsz,), generator=gen)
    starts = torch.randint(0, 6, (bsz,), generator=gen)
    sel = select_blocks(q, k, block_size=block_size, topk=topk, sink_blocks=sink_blocks, local=local,
                        seq_lens=ends, kv_start=starts)
    for b in range(bsz):
        for h in range(h_kv):
            expected = _brute_force_selection(q, k, b, h, int(starts[b]), int(ends[b]), block_size, topk,
                                              sink_blocks, local)
            assert _attended_blocks(sel, b, h) == expected


def test_selection_with_left_padding_and_ragged_end():
    q, k, _ = _inputs(2, 2, 1, 40, 8)
    sel = select_blocks(q, k, block_size=4, topk=0, sink_blocks=2, local=1,
                        seq_lens=torch.tensor([40, 23]), kv_start=torch.tensor([6, 0]))
    # Sequence 0: valid 6..39, sink = blocks 1 and 2 (block 1 is the first holding a valid token), local = block 9.
    assert _attended_blocks(sel, 0, 0) == [1, 2, 9]
    # Sequence 1: valid 0..22, sink = blocks 0, 1, local = block 5 (token 22).
    assert _attended_blocks(sel, 1, 0) == [0, 1, 5]


def test_cached_means_give_the_same_selection_as_recomputed_ones():
    q, k, _ = _inputs(2, 4, 2, 45, 8)
    start, end = torch.tensor([5, 0]), torch.tensor([45, 45])
    full = 45 // 4
    raw_sums = k[:, :, : full * 4].reshape(2, 2, full, 4, 8).sum(3)  # over all positions, pads included
    kwargs = dict(block_size=4, topk=3, sink_blocks=0, local=4, seq_lens=end, kv_start=start)
    cached = select_blocks(q, k, block_means=raw_sums / 4, **kwargs)
    fresh = select_blocks(q, k, **kwargs)
    assert torch.equal(cached.block_idx, fresh.block_idx)
    means = masked_block_means(k, 4, start, end)
    torch.testing.assert_close(means[0, :, 1], k[0, :, 5:8].mean(1))  # block 1 of sequence 0 holds pad 4


@pytest.mark.parametrize("group", [1, 2, 4, 8])
def test_naive_equals_dense_softmax_when_all_blocks_are_selected(group):
    total = 37  # not a multiple of the block size
    q, k, v = _inputs(3, 2 * group, 2, total, 16, seed=group)
    seq_lens, kv_start = torch.tensor([37, 20, 30]), torch.tensor([0, 3, 9])
    out = block_topk_attention(q, k, v, block_size=8, topk=5, sink_blocks=1, local=1, seq_lens=seq_lens,
                               kv_start=kv_start, impl="naive")
    # The reference written out: softmax over the valid positions of each sequence, per query head.
    for b in range(3):
        for h in range(2 * group):
            kk = k[b, h // group, kv_start[b]:seq_lens[b]]
            vv = v[b, h // group, kv_start[b]:seq_lens[b]]
            ref = torch.softmax(kk @ q[b, h] / 16**0.5, 0) @ vv
            torch.testing.assert_close(out[b, h], ref, atol=TOL[torch.float32], rtol=0)


def test_small_budget_differs_from_dense():
    q, k, v = _inputs(2, 4, 2, 64, 16)
    dense = dense_attention(q, k, v)
    sparse = block_topk_attention(q, k, v, block_size=8, topk=1, sink_blocks=1, local=8, impl="naive")
    assert (sparse - dense).abs().max() > 1e-2


@pytest.mark.parametrize("impl", ["naive", "triton"])
def test_pads_are_never_attended(impl):
    q, k, v = _inputs(2, 4, 2, 50, 16)
    start, end = torch.tensor([7, 0]), torch.tensor([50, 41])
    kwargs = dict(block_size=8, topk=2, sink_blocks=0, local=8, seq_lens=end, kv_start=start, impl=impl)
    out = block_topk_attention(q, k, v, **kwargs)
    # Huge keys/values on every pad position: if one were ranked or attended, the output would change.
    k2, v2 = k.clone(), v.clone()
    for t in (k2, v2):
        t[0, :, :7] = 1e4
        t[1, :, 41:] = 1e4
    torch.testing.assert_close(block_topk_attention(q, k2, v2, **kwargs), out, atol=TOL[torch.float32], rtol=0)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                    reason="needs a GPU or TRITON_INTERPRET=1")
@pytest.mark.parametrize(
    "bsz,group,h_kv,total,dim,block_size,topk,local,splits",
    [
        (2, 1, 2, 37, 16, 4, 3, 5, 3),  # T not a multiple of the block size, MHA
        (3, 2, 1, 50, 32, 8, 2, 8, 2),  # ragged lengths below
        (1, 4, 2, 29, 16, 16, 1, 1, 1),  # block size 16 (a GPU tile) and a single split
        (2, 8, 1, 23, 24, 5, 2, 3, 4),  # head dim and block size not powers of two, G = 8
    ],
)
def test_triton_equals_naive(bsz, group, h_kv, total, dim, block_size, topk, local, splits):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, k, v = _inputs(bsz, group * h_kv, h_kv, total, dim, device=device, seed=total)
    lens = torch.tensor([total, total - 9, total - 4][:bsz], device=device)
    starts = torch.tensor([0, 2, 5][:bsz], device=device)
    kwargs = dict(block_size=block_size, topk=topk, sink_blocks=1, local=local, seq_lens=lens, kv_start=starts)
    ref = block_topk_attention(q, k, v, impl="naive", **kwargs)
    out = block_topk_attention(q, k, v, impl="triton", num_splits=splits, **kwargs)
    torch.testing.assert_close(out, ref, atol=TOL[torch.float32], rtol=0)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                    reason="needs a GPU or TRITON_INTERPRET=1")
def test_triton_equals_dense_when_budget_covers_the_context():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, k, v = _inputs(2, 4, 2, 30, 16, device=device)
    lens, starts = torch.tensor([30, 17], device=device), torch.tensor([4, 0], device=device)
    out = block_topk_attention(q, k, v, block_size=4, topk=8, sink_blocks=1, local=4, seq_lens=lens,
                               kv_start=starts, impl="triton", num_splits=2)
    ref = dense_attention(q, k, v, seq_lens=lens, kv_start=starts)
    torch.testing.assert_close(out, ref, atol=TOL[torch.float32], rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("group", [1, 2, 4, 8])
def test_triton_half_precision_on_gpu(dtype, group):
    q, k, v = _inputs(4, 2 * group, 2, 1000, 128, dtype=dtype, device="cuda")
    lens = torch.tensor([1000, 700, 999, 333], device="cuda")
    kwargs = dict(block_size=16, topk=8, sink_blocks=1, local=64, seq_lens=lens)
    ref = block_topk_attention(q, k, v, impl="naive", **kwargs)
    out = block_topk_attention(q, k, v, impl="triton", **kwargs)
    torch.testing.assert_close(out.float(), ref.float(), atol=TOL[dtype], rtol=0)


def test_bad_shapes_are_rejected():
    q, k, v = _inputs(1, 3, 2, 10, 8)
    with pytest.raises(ValueError, match="multiple of H_kv"):
        block_topk_attention(q, k, v, block_size=4, topk=1)
    with pytest.raises(ValueError, match="impl must be"):
        block_topk_attention(q[:, :2], k, v, block_size=4, topk=1, impl="cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_naive_half_precision_inputs_on_cpu(dtype):
    q, k, v = _inputs(2, 4, 2, 45, 16, dtype=dtype)
    lens = torch.tensor([45, 30])
    out = block_topk_attention(q, k, v, block_size=8, topk=6, sink_blocks=1, local=8, seq_lens=lens, impl="naive")
    assert out.dtype == dtype
    # Reference in fp32 from the same (already rounded) inputs; the output is rounded once to the dtype.
    ref = dense_attention(q.float(), k.float(), v.float(), seq_lens=lens)
    torch.testing.assert_close(out.float(), ref, atol=TOL[dtype], rtol=0)


def test_cache_shorter_than_one_block():
    q, k, v = _inputs(1, 2, 1, 3, 8)
    out = block_topk_attention(q, k, v, block_size=8, topk=2, sink_blocks=1, local=0, impl="naive")
    torch.testing.assert_close(out, dense_attention(q, k, v), atol=TOL[torch.float32], rtol=0)
