"""Every GPU check of the block top-k kernel in one command (under 5 minutes on one H100/H200-class GPU).

    python benchmarks/gpu_check.py --out results/gpu            # on the GPU machine
    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --out /tmp/gpu-dry --dry-run   # CPU, tiny shapes

1. correctness: Triton == the PyTorch reference (naive) at the benchmark shape in bf16 (ragged lengths and left
   padding included), and Triton == dense attention when the budget covers the context;
2. speed at 32K context, batch 32, Qwen2.5-3B heads (16 query, 2 KV, D 128), budget 1024 (block 16 x top-k 64):
   dense `F.scaled_dot_product_attention` (GQA packed as G queries per KV head, and with enable_gqa),
   flash-attn's `flash_attn_with_kvcache` when installed, vs the sparse step end to end (block ranking + top-k +
   kernel; eager and as a CUDA graph) and the kernel alone;
3. bandwidth: bytes of the selected keys and values / kernel time vs this device's measured copy bandwidth
   (read + write bytes / time of a 2 GiB device-to-device copy);
4. the pytest suite of tests/kernels on the GPU (GPU-only tests included), unless --skip-tests.

Speedups are printed only when the correctness checks passed. Results go to OUT/gpu_check.json and OUT/gpu_check.md.
--dry-run runs the same code on the CPU at tiny shapes (the Triton parts only under TRITON_INTERPRET=1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seekrl.kernels.block_sparse import block_topk_attention, dense_attention, select_blocks
from seekrl.kernels.block_sparse.selection import masked_block_means, token_mask

REPO = Path(__file__).resolve().parents[1]
TOL = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def bench_ms(fn, device: torch.device, reps: int) -> float:
    """Median milliseconds per call; on CUDA triton's do_bench (L2 flushed before every call)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=max(reps, 20), return_mode="median"))
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def copy_bandwidth(device: torch.device, nbytes: int, reps: int) -> float:
    """Bytes moved (read + write) per second by a plain device copy of `nbytes`."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    src.fill_(1.0)
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src), device, reps)
    return 2 * nbytes / (ms / 1e3)


def make_inputs(args, device, dtype, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shape_q = (args.batch, args.heads, args.head_dim)
    shape_kv = (args.batch, args.kv_heads, args.context, args.head_dim)
    q = torch.randn(shape_q, generator=gen).to(device, dtype)
    k = torch.randn(shape_kv, generator=gen).to(device, dtype)
    v = torch.randn(shape_kv, generator=gen).to(device, dtype)
    return q, k, v


def check_correctness(args, device, dtype, triton_ok: bool) -> dict:
    """Triton vs naive at the benchmark shape (ragged + left padded), Triton vs dense with a covering budget."""
    out: dict = {}
    q, k, v = make_inputs(args, device, dtype, seed=1)
    gen = torch.Generator(device="cpu").manual_seed(2)
    lens = torch.randint(args.context // 2, args.context + 1, (args.batch,), generator=gen).to(device)
    starts = torch.randint(0, 3 * args.block_size, (args.batch,), generator=gen).to(device)
    kwargs = dict(block_size=args.block_size, topk=args.topk, sink_blocks=args.sink_blocks, local=args.local,
                  seq_lens=lens, kv_start=starts)
    ref = block_topk_attention(q, k, v, impl="naive", **kwargs)
    # The naive path itself against dense attention restricted to the selected tokens (fp32 reference).
    sel = select_blocks(q, k, block_size=args.block_size, topk=args.topk, sink_blocks=args.sink_blocks,
                        local=args.local, seq_lens=lens, kv_start=starts)
    mask = token_mask(sel, args.context, args.block_size)  # [B, H_kv, T]
    g = args.heads // args.kv_heads
    masked = F.scaled_dot_product_attention(
        q.float().view(args.batch, args.kv_heads, g, args.head_dim), k.float(), v.float(),
        attn_mask=mask[:, :, None, :]).reshape(args.batch, args.heads, args.head_dim)
    err = (ref.float() - masked).abs().max().item()
    out["naive_vs_masked_dense"] = {"max_abs_err": err, "tol": TOL[dtype], "ok": err <= TOL[dtype]}
    if triton_ok:
        tri = block_topk_attention(q, k, v, impl="triton", **kwargs)
        err = (tri.float() - ref.float()).abs().max().item()
        out["triton_vs_naive"] = {"max_abs_err": err, "tol": TOL[dtype], "ok": err <= TOL[dtype]}
        # Budget covering the context: must be dense attention.
        small = max(4 * args.block_size, min(args.context, 2048))
        qs, ks, vs = q[:4], k[:4, :, :small].contiguous(), v[:4, :, :small].contiguous()
        lens_s = torch.tensor([small, small - 7, small // 2, small - 1], device=device)[: qs.shape[0]]
        starts_s = torch.tensor([0, 5, 0, 3], device=device)[: qs.shape[0]]
        full = block_topk_attention(qs, ks, vs, block_size=args.block_size, topk=small // args.block_size + 1,
                                    sink_blocks=1, local=args.block_size, seq_lens=lens_s, kv_start=starts_s,
                                    impl="triton")
        dense = dense_attention(qs, ks, vs, seq_lens=lens_s, kv_start=starts_s)
        err = (full.float() - dense.float()).abs().max().item()
        out["triton_full_budget_vs_dense"] = {"max_abs_err": err, "tol": TOL[dtype], "ok": err <= TOL[dtype]}
    return out


def check_speed(args, device, dtype, triton_ok: bool) -> dict:
    q, k, v = make_inputs(args, device, dtype)
    g = args.heads // args.kv_heads
    full = torch.full((args.batch,), args.context, device=device)
    # Block means as BlockTopKCache keeps them: in the keys' dtype, computed once outside the timed step.
    means = masked_block_means(k, args.block_size, torch.zeros_like(full), full).to(dtype)
    impl = "triton" if triton_ok else "naive"
    kwargs = dict(block_size=args.block_size, topk=args.topk, sink_blocks=args.sink_blocks, local=args.local,
                  block_means=means, impl=impl)
    q_packed = q.view(args.batch, args.kv_heads, g, args.head_dim)  # [B, H_kv, G, D]
    q_heads = q[:, :, None, :]  # [B, H_q, 1, D]
    timings: dict = {}
    timings["dense_sdpa_packed_ms"] = bench_ms(lambda: F.scaled_dot_product_attention(q_packed, k, v), device,
                                               args.reps)
    try:
        timings["dense_sdpa_enable_gqa_ms"] = bench_ms(
            lambda: F.scaled_dot_product_attention(q_heads, k, v, enable_gqa=True), device, args.reps)
    except (RuntimeError, TypeError) as err:
        timings["dense_sdpa_enable_gqa_error"] = str(err).splitlines()[0]
    try:
        from flash_attn import flash_attn_with_kvcache

        k_fa, v_fa = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()  # [B, T, H_kv, D]
        q_fa = q[:, None]  # [B, 1, H_q, D]
        timings["dense_flash_attn_ms"] = bench_ms(lambda: flash_attn_with_kvcache(q_fa, k_fa, v_fa), device,
                                                  args.reps)
        del k_fa, v_fa
    except ImportError:
        timings["dense_flash_attn_ms"] = None

    timings["sparse_step_ms"] = bench_ms(lambda: block_topk_attention(q, k, v, **kwargs), device, args.reps)
    sel = select_blocks(q, k, block_size=args.block_size, topk=args.topk, sink_blocks=args.sink_blocks,
                        local=args.local, block_means=means)
    scale = args.head_dim**-0.5
    if triton_ok:
        from seekrl.kernels.block_sparse.triton import sparse_attention
    else:
        from seekrl.kernels.block_sparse.naive import sparse_attention
    timings["sparse_kernel_ms"] = bench_ms(
        lambda: sparse_attention(q, k, v, sel, block_size=args.block_size, scale=scale), device, args.reps)
    if device.type == "cuda":
        # The whole step as one CUDA graph (what a static-cache decode loop would launch): no launch overheads.
        try:
            static_out = block_topk_attention(q, k, v, **kwargs)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    block_topk_attention(q, k, v, **kwargs)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = block_topk_attention(q, k, v, **kwargs)
            graph.replay()
            torch.cuda.synchronize()
            eager = block_topk_attention(q, k, v, **kwargs)
            timings["sparse_step_graph_matches_eager"] = bool(torch.equal(static_out, eager))
            timings["sparse_step_graph_ms"] = bench_ms(graph.replay, device, args.reps)
        except RuntimeError as err:
            timings["sparse_step_graph_error"] = str(err).splitlines()[0]

    mask = token_mask(sel, args.context, args.block_size)  # [B, H_kv, T]
    attended = int(mask.sum().item())  # tokens summed over (sequence, KV head)
    elem = torch.finfo(dtype).bits // 8
    selected_bytes = 2 * attended * args.head_dim * elem  # keys and values
    timings["attended_tokens_per_head"] = attended / (args.batch * args.kv_heads)
    timings["selected_kv_bytes"] = selected_bytes
    timings["dense_kv_bytes"] = 2 * args.batch * args.kv_heads * args.context * args.head_dim * elem
    timings["kernel_bandwidth_Bps"] = selected_bytes / (timings["sparse_kernel_ms"] / 1e3)
    return timings


def run_tests(device) -> dict:
    env = dict(os.environ)
    if device.type == "cuda":
        env.pop("TRITON_INTERPRET", None)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/kernels", "-q", "-p", "no:cacheprovider", "-rs"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    return {"returncode": proc.returncode, "summary": tail, "seconds": round(time.time() - t0, 1),
            "ok": proc.returncode == 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Directory for gpu_check.json and gpu_check.md.")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu.")
    parser.add_argument("--dry-run", action="store_true", help="Tiny shapes on the CPU: checks the script runs.")
    parser.add_argument("--context", type=int, default=32768)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--topk", type=int, default=64)
    parser.add_argument("--sink-blocks", type=int, default=1)
    parser.add_argument("--local", type=int, default=0)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--skip-tests", action="store_true", help="Do not run the pytest suite.")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device = args.device or "cpu"
        args.context, args.batch, args.heads, args.kv_heads, args.head_dim = 300, 2, 4, 2, 32
        args.topk, args.dtype, args.reps, args.skip_tests = 4, "float32", 3, True
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.dry_run:
        print("error: no CUDA device; use --dry-run (CPU, tiny shapes) to check the script", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    if device.type == "cpu" and dtype != torch.float32:
        print("error: the CPU path (and the Triton interpreter) runs in float32 only", file=sys.stderr)
        return 2
    triton_ok = device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "shape": {k: getattr(args, k) for k in ("context", "batch", "heads", "kv_heads", "head_dim", "block_size",
                                                 "topk", "sink_blocks", "local", "dtype")},
        "budget_tokens": args.local + args.block_size * args.topk,
        "triton": triton_ok,
    }
    try:
        import triton

        results["triton_version"] = triton.__version__
    except ImportError:
        results["triton_version"] = None
    t0 = time.time()
    results["correctness"] = check_correctness(args, device, dtype, triton_ok)
    correct = all(c["ok"] for c in results["correctness"].values())
    speed = check_speed(args, device, dtype, triton_ok)
    results["timings"] = speed
    results["copy_bandwidth_Bps"] = copy_bandwidth(device, 256 * 2**20 if args.dry_run else 2 * 2**30, args.reps)
    if correct:
        dense_best = min(x for x in (speed["dense_sdpa_packed_ms"], speed.get("dense_sdpa_enable_gqa_ms"),
                                     speed.get("dense_flash_attn_ms")) if x is not None)
        results["speedup_vs_best_dense"] = {
            "sparse_step": dense_best / speed["sparse_step_ms"],
            "sparse_step_graph": dense_best / speed["sparse_step_graph_ms"] if "sparse_step_graph_ms" in speed else None,
            "sparse_kernel": dense_best / speed["sparse_kernel_ms"],
        }
        results["kernel_bandwidth_fraction_of_copy"] = speed["kernel_bandwidth_Bps"] / results["copy_bandwidth_Bps"]
    else:
        results["speedup_vs_best_dense"] = "not reported: correctness check failed"
    if not args.skip_tests:
        results["tests"] = run_tests(device)
    results["seconds"] = round(time.time() - t0, 1)

    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    report = render(results)
    (args.out / "gpu_check.md").write_text(report)
    print(report)
    ok = correct and results.get("tests", {"ok": True})["ok"]
    return 0 if ok else 1


def render(r: dict) -> str:
    s, t = r["shape"], r["timings"]
    lines = [
        f"# gpu_check: {r['device']} (torch {r['torch']}, triton {r['triton_version']}, Triton kernel run: "
        f"{r['triton']})",
        "",
        f"decode step: batch {s['batch']}, context {s['context']}, heads {s['heads']}/{s['kv_heads']} (q/kv), "
        f"head dim {s['head_dim']}, {s['dtype']}, block {s['block_size']} x top-k {s['topk']} + {s['sink_blocks']} "
        f"sink + local {s['local']} (budget {r['budget_tokens']}; attended per head "
        f"{t['attended_tokens_per_head']:.0f})",
        "",
        "| check | max abs err | tol | result |",
        "| --- | --- | --- | --- |",
    ]
    for name, c in r["correctness"].items():
        lines.append(f"| {name} | {c['max_abs_err']:.2e} | {c['tol']:.0e} | {'ok' if c['ok'] else 'FAILED'} |")
    lines += ["", "| path | ms |", "| --- | --- |"]
    for key in ("dense_sdpa_packed_ms", "dense_sdpa_enable_gqa_ms", "dense_flash_attn_ms", "sparse_step_ms",
                "sparse_step_graph_ms", "sparse_kernel_ms"):
        if t.get(key) is not None:
            lines.append(f"| {key[:-3]} | {t[key]:.4f} |")
    for key in ("dense_sdpa_enable_gqa_error", "sparse_step_graph_error"):
        if key in t:
            lines.append(f"| {key} | {t[key]} |")
    sp = r["speedup_vs_best_dense"]
    lines.append("")
    if isinstance(sp, dict):
        lines.append("speedup vs the fastest dense path: " + ", ".join(
            f"{k} {v:.1f}x" for k, v in sp.items() if v is not None))
        lines.append(f"kernel bandwidth on the selected KV: {t['kernel_bandwidth_Bps'] / 1e9:.0f} GB/s = "
                     f"{100 * r['kernel_bandwidth_fraction_of_copy']:.0f}% of the measured copy bandwidth "
                     f"({r['copy_bandwidth_Bps'] / 1e9:.0f} GB/s)")
    else:
        lines.append(f"speedup: {sp}")
    if "tests" in r:
        lines.append(f"tests/kernels: {r['tests']['summary']} ({r['tests']['seconds']} s)")
    lines.append(f"total {r['seconds']} s")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
