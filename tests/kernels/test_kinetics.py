"""Kinetics cost model: hand-computed values from the formulas, parameter counts, planner, `seekrl cost`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from seekrl.kernels import kinetics
from seekrl.kernels.kinetics import (
    HardwareProfile,
    block_topk_eflops,
    dense_eflops,
    plan,
    trajectory_eflops,
)

# P = 1e9, 2 layers x head_dim 8 -> d = 16, 4 query heads, 2 KV heads; I = 10.
CFG = {"num_parameters": 1e9, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
       "head_dim": 8}
HW = HardwareProfile("test", peak_flops=10.0, bandwidth=1.0)


def test_dense_cost_by_hand():
    cost = dense_eflops(CFG, prompt_len=100, gen_len=10, num_samples=3, hardware=HW)
    # (2 P L_out + 2 (2 L_in + L_out) L_out H_q d) N = (2e10 + 2 * 210 * 10 * 4 * 16) * 3
    assert cost.compute == 60_000_806_400
    # 2 (2 L_in + N L_out) L_out H_kv d = 2 * 230 * 10 * 2 * 16
    assert cost.memory == 147_200
    assert cost.eflops == 60_000_806_400 + 10 * 147_200


def test_block_topk_cost_by_hand():
    # B = 8 + 4 * 5 = 28 <= L_in: kv = 28 * 10 = 280.
    cost = block_topk_eflops(CFG, prompt_len=100, gen_len=10, num_samples=3, hardware=HW, block_size=4, topk=5,
                             local=8)
    # (2 P L_out + 4 kv H_q d + ((2 L_in + L_out) // bs) L_out H_q d) N = (2e10 + 71680 + 52 * 640) * 3
    assert cost.compute == 60_000_314_880
    # 4 kv H_kv d N + ((2 L_in + N L_out) // bs) L_out H_kv d = 107520 + 57 * 320
    assert cost.memory == 125_760
    assert float(cost) == cost.compute + 10 * cost.memory


def test_block_topk_kv_when_the_context_is_shorter_than_the_budget():
    # L_in = 20 < B = 28 <= L_in + L_out: kv = 28 * 50 - 0.5 * 8^2 = 1368 (the paper's formula).
    cost = block_topk_eflops(CFG, prompt_len=20, gen_len=50, num_samples=1, hardware=HW, block_size=4, topk=5,
                             local=8)
    assert cost.memory == 4 * 1368 * 2 * 16 + (90 // 4) * 50 * 2 * 16
    # L_in + L_out = 25 < B: every token is attended, kv = 140 - 32 + 4.5 = L_in L_out + L_out^2 / 2 = 112.5.
    short = block_topk_eflops(CFG, prompt_len=20, gen_len=5, num_samples=1, hardware=HW, block_size=4, topk=5,
                              local=8)
    assert short.memory == 4 * 112.5 * 2 * 16 + (45 // 4) * 5 * 2 * 16


def test_multi_turn_cost_sums_turns_with_the_growing_context():
    turns = [(10, 30), (20, 0)]
    single = trajectory_eflops(CFG, 100, turns, num_samples=1, hardware=HW)
    by_turn = dense_eflops(CFG, 100, 10, 1, HW).eflops + dense_eflops(CFG, 140, 20, 1, HW).eflops
    assert single.eflops == pytest.approx(by_turn, rel=1e-12)
    # With N = 3 samples the prompt stays shared, the 40 tokens of turn 1 are each sample's own.
    group = trajectory_eflops(CFG, 100, turns, num_samples=3, hardware=HW)
    second_memory = 2 * (2 * 100 + 3 * (2 * 40 + 20)) * 20 * 2 * 16
    assert group.memory == dense_eflops(CFG, 100, 10, 3, HW).memory + second_memory
    sparse = kinetics.BlockTopK(4, 5, 8)
    sparse_single = trajectory_eflops(CFG, 100, [(10, 0)], 2, HW, sparse=sparse)
    assert sparse_single == block_topk_eflops(CFG, 100, 10, 2, HW, block_size=4, topk=5, local=8)


def test_hardware_profiles():
    assert kinetics.get_hardware("b200").intensity == 562.5
    assert kinetics.get_hardware("h200").intensity == pytest.approx(989.4 / 4.8)
    assert kinetics.get_hardware("h100").intensity == pytest.approx(989.4 / 3.35)
    assert kinetics.get_hardware("a100").intensity == pytest.approx(312 / 2.039)
    cpu = kinetics.get_hardware("cpu")
    assert cpu.peak_flops > 1e8 and cpu.bandwidth > 1e8
    with pytest.raises(ValueError, match="unknown hardware"):
        kinetics.get_hardware("tpu")


def test_parameter_count_matches_the_model(tiny_text_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_text_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_text_dir)
    shape = kinetics.model_shape(config)
    assert shape.num_parameters == model.num_parameters()
    assert (shape.num_layers, shape.num_heads, shape.num_kv_heads, shape.head_dim) == (2, 4, 2, 16)


@pytest.mark.parametrize("name,billions", [("Qwen3-0.6B", 0.596), ("Qwen3-8B", 8.191), ("Qwen3-32B", 32.762),
                                           ("Qwen2.5-3B", 3.086)])
def test_builtin_configs_give_the_published_sizes(name, billions):
    assert kinetics.count_parameters(kinetics.MODEL_CONFIGS[name]) / 1e9 == pytest.approx(billions, abs=1e-3)


def test_planner_maximises_tokens_times_samples_within_budget():
    kwargs = dict(block_sizes=[4], topks=[2, 5], max_new_tokens=[100, 200], group_sizes=[2, 4], local=8,
                  hardware=HW)
    budget = block_topk_eflops(CFG, 50, 200, 2, HW, block_size=4, topk=5, local=8).eflops
    chosen = plan(CFG, 50, budget, **kwargs)
    assert chosen.max_new_tokens * chosen.group_size == 400
    assert chosen.eflops <= budget
    # 200 x 4 does not fit even at the smallest top-k.
    assert block_topk_eflops(CFG, 50, 200, 4, HW, block_size=4, topk=2, local=8).eflops > budget
    # Among the plans with 400 tokens, the larger attention budget wins when it fits.
    assert chosen.topk == 5
    with pytest.raises(ValueError, match="cheapest needs"):
        plan(CFG, 50, 1.0, **kwargs)


def test_plan_from_recipe_section():
    from seekrl.config import KineticsSection

    section = KineticsSection(eflops_budget=1e15, hardware="b200", local=0)
    chosen = kinetics.plan_from_section(section, kinetics.MODEL_CONFIGS["Qwen3-0.6B"], prompt_len=512)
    assert chosen.max_new_tokens in section.planner_max_new_tokens
    assert chosen.group_size in section.planner_group_sizes
    assert chosen.eflops <= 1e15
    with pytest.raises(ValueError, match="eflops_budget"):
        kinetics.plan_from_section(KineticsSection(), kinetics.MODEL_CONFIGS["Qwen3-0.6B"], prompt_len=512)


def test_cost_command_prints_dense_and_sparse(tmp_path):
    import json

    from seekrl.cli import app

    (tmp_path / "config.json").write_text(json.dumps(kinetics.MODEL_CONFIGS["Qwen3-4B"]))
    result = CliRunner().invoke(app, ["cost", "--model", str(tmp_path), "--prompt-len", "512", "--gen-len",
                                      "4096", "--num-samples", "8", "--hardware", "b200", "--block-size", "16",
                                      "--topk", "64", "--budget", "1e16"])
    assert result.exit_code == 0, result.output
    dense = dense_eflops(kinetics.MODEL_CONFIGS["Qwen3-4B"], 512, 4096, 8, "b200").eflops
    sparse = block_topk_eflops(kinetics.MODEL_CONFIGS["Qwen3-4B"], 512, 4096, 8, "b200", block_size=16, topk=64)
    assert f"{dense:.3e}" in result.output and f"{sparse.eflops:.3e}" in result.output
    assert "plan for 1.000e+16" in result.output


def test_cost_command_user_errors_exit_2():
    from seekrl.cli import app

    bad_model = CliRunner().invoke(app, ["cost", "--model", "no-such-model", "--prompt-len", "1", "--gen-len", "1"])
    assert bad_model.exit_code == 2 and "unknown model" in bad_model.output
    bad_len = CliRunner().invoke(app, ["cost", "--model", "Qwen3-8B", "--prompt-len", "1", "--gen-len", "a,b"])
    assert bad_len.exit_code == 2 and "comma-separated" in bad_len.output
