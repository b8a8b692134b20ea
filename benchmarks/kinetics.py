"""Kinetics cost tables: dense vs block top-k eFLOPs for Qwen3 0.6B..32B and for a multi-turn search rollout.

Table 1 uses the paper's setting: B200 (I = 562.5), block top-k without local window at the paper's four block
budgets (block 16 x top-k 64, 32 x 16, 64 x 4, 128 x 1: B = 1024, 512, 256, 128), long generations. Every cell
is also evaluated from the formulas as written in the issue (plain arithmetic below, not the library) and the
script exits 1 if any cell differs. Values are TeFLOPs (1e12 eFLOPs) per prompt, as in the paper's code.
Table 2 is a Search-R1-style rollout: prompt 512, 4 turns of 500 generated + 500 retrieved tokens, on H200.

    python benchmarks/kinetics.py
"""

from __future__ import annotations

import argparse

from seekrl.kernels.kinetics import (
    MODEL_CONFIGS,
    BlockTopK,
    block_topk_eflops,
    dense_eflops,
    get_hardware,
    model_shape,
    trajectory_eflops,
)

QWEN3 = ["Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B"]
PAPER_BUDGETS = [BlockTopK(16, 64), BlockTopK(32, 16), BlockTopK(64, 4), BlockTopK(128, 1)]
# The parameter counts the paper's cost script uses (cost_model/best_of_N/cost_model_ntrial.py, billions): for
# 0.6B and 1.7B it counts the tied embedding twice (input and LM head), we count it once as num_parameters() does.
PAPER_PARAMS = {"Qwen3-0.6B": 0.752, "Qwen3-1.7B": 2.03, "Qwen3-4B": 4.02, "Qwen3-8B": 8.19, "Qwen3-14B": 14.77,
                "Qwen3-32B": 32.76}


def formula_dense(p, hq, hkv, d, lin, lout, n, i):
    """The issue's dense formulas, written out."""
    compute = (2 * p * lout + 2 * (2 * lin + lout) * lout * hq * d) * n
    memory = 2 * (2 * lin + n * lout) * lout * hkv * d
    return compute + i * memory


def formula_block(p, hq, hkv, d, lin, lout, n, i, bs, topk, local):
    """The issue's block top-k formulas, written out (valid for lout >= B - lin, as in this table)."""
    b = local + bs * topk
    kv = b * lout - 0.5 * max(0, b - lin) ** 2
    compute = (2 * p * lout + 4 * kv * hq * d + ((2 * lin + lout) // bs) * lout * hq * d) * n
    memory = 4 * kv * hkv * d * n + ((2 * lin + n * lout) // bs) * lout * hkv * d
    return compute + i * memory


def paper_table(prompt_len: int, gen_lens: list[int], samples: list[int]) -> bool:
    hw = get_hardware("b200")
    print(f"Table 1: TeFLOPs per prompt, B200 (I = {hw.intensity}), prompt {prompt_len}; ratio = dense / sparse")
    names = [f"bs{s.block_size}xk{s.topk} (B={s.budget})" for s in PAPER_BUDGETS]
    print(f"{'model':<11} {'P (B)':>6} {'paper P':>7} {'L_out':>6} {'N':>3} {'dense':>10} "
          + " ".join(f"{n:>22}" for n in names))
    ok = True
    for name in QWEN3:
        cfg = MODEL_CONFIGS[name]
        m = model_shape(cfg)
        for gen in gen_lens:
            for n in samples:
                dense = dense_eflops(cfg, prompt_len, gen, n, hw).eflops
                ok &= dense == formula_dense(m.num_parameters, m.num_heads, m.num_kv_heads, m.d, prompt_len, gen,
                                             n, hw.intensity)
                cells = []
                for s in PAPER_BUDGETS:
                    sparse = block_topk_eflops(cfg, prompt_len, gen, n, hw, block_size=s.block_size,
                                               topk=s.topk, local=s.local).eflops
                    ok &= sparse == formula_block(m.num_parameters, m.num_heads, m.num_kv_heads, m.d, prompt_len,
                                                  gen, n, hw.intensity, s.block_size, s.topk, s.local)
                    cells.append(f"{sparse / 1e12:>12.1f} ({dense / sparse:5.2f}x)")
                print(f"{name:<11} {m.num_parameters / 1e9:>6.2f} {PAPER_PARAMS[name]:>7.2f} {gen:>6} {n:>3} "
                      f"{dense / 1e12:>10.1f} " + " ".join(f"{c:>22}" for c in cells))
    print(f"formula check (every cell == the issue's formulas evaluated directly): {'ok' if ok else 'FAILED'}")
    return ok


def multi_turn_table(prompt_len: int, turns: int, gen: int, obs: int, samples: list[int]) -> bool:
    hw = get_hardware("h200")
    plan = [(gen, obs)] * turns
    budgets = [BlockTopK(16, 16), BlockTopK(16, 64), BlockTopK(64, 16, local=128)]
    print(f"\nTable 2: multi-turn rollout, prompt {prompt_len}, {turns} turns x ({gen} generated + {obs} retrieved), "
          f"H200 (I = {hw.intensity:.1f}); TeFLOPs per prompt (all N samples)")
    names = [f"bs{s.block_size}xk{s.topk}+{s.local} (B={s.budget})" for s in budgets]
    print(f"{'model':<11} {'N':>3} {'dense':>9} " + " ".join(f"{n:>24}" for n in names))
    ok = True
    for name in ["Qwen2.5-3B", *QWEN3]:
        cfg = MODEL_CONFIGS[name]
        for n in samples:
            dense = trajectory_eflops(cfg, prompt_len, plan, n, hw).eflops
            if n == 1:
                # One sample: the sum of single-turn costs with the context grown by every earlier turn.
                by_turn = sum(dense_eflops(cfg, prompt_len + t * (gen + obs), gen, 1, hw).eflops for t in range(turns))
                ok &= abs(dense - by_turn) <= 1e-9 * dense
            cells = []
            for s in budgets:
                sparse = trajectory_eflops(cfg, prompt_len, plan, n, hw, sparse=s).eflops
                cells.append(f"{sparse / 1e12:>13.2f} ({dense / sparse:5.2f}x)")
            print(f"{name:<11} {n:>3} {dense / 1e12:>9.2f} " + " ".join(f"{c:>24}" for c in cells))
    print(f"turn-sum check (N = 1 rows == sum of single-turn costs): {'ok' if ok else 'FAILED'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--gen-lens", default="8192,32768")
    parser.add_argument("--samples", default="1,8")
    args = parser.parse_args(argv)
    samples = [int(s) for s in args.samples.split(",")]
    ok = paper_table(args.prompt_len, [int(g) for g in args.gen_lens.split(",")], samples)
    ok &= multi_turn_table(512, 4, 500, 500, samples)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
