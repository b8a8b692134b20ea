"""Two GRPO steps with trl.GRPOTrainer and the seekrl rollout_func, against the real retrieval server on loopback."""

from __future__ import annotations

import torch

from seekrl.agents import SearchR1
from seekrl.agents.rollout import RolloutConfig
from seekrl.agents.trl_adapter import make_rollout_func, question_of
from seekrl.config import RewardSpec
from seekrl.data import load_qa
from seekrl.envs.client import HTTPClient
from seekrl.models import load_model, load_tokenizer
from seekrl.rewards import build_reward_funcs


def test_question_of_accepts_strings_and_messages():
    assert question_of("Who?") == "Who?"
    assert question_of([{"role": "system", "content": "s"}, {"role": "user", "content": "Who?"}]) == "Who?"


def test_two_grpo_steps_move_the_policy_and_log_search_behaviour(tiny_searcher_dir, bm25_server, shared_data,
                                                                  tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    records = load_qa(shared_data / "multihop" / "questions.jsonl", limit=2)
    dataset = Dataset.from_list([{"prompt": r.question, "golden_answers": r.answers} for r in records])
    tokenizer = load_tokenizer(tiny_searcher_dir)
    model = load_model(tiny_searcher_dir, dtype="float32")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    client = HTTPClient(bm25_server.url, timeout_s=10, max_retries=1)
    config = RolloutConfig(max_new_tokens_per_turn=40, max_total_tokens=240, max_obs_tokens=80, temperature=1.0)
    inner = make_rollout_func(SearchR1(max_turns=2), client, config, seed=0)
    received: list[list] = []
    outputs: list[dict] = []

    def rollout_func(prompts, trainer):
        received.append(list(prompts))
        out = inner(prompts, trainer)
        outputs.append(out)
        return out

    funcs, weights = build_reward_funcs([RewardSpec("format", 1.0, {"protocol": "search_r1"}), RewardSpec("em", 1.0)])
    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4, max_steps=2,
        learning_rate=5e-3, beta=0.0, loss_type="dapo", reward_weights=weights, max_completion_length=240,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer, rollout_func=rollout_func)
    trainer.train()

    # TRL hands over each prompt already repeated num_generations times; one completion comes back for each.
    assert len(received) == 2
    for prompts, out in zip(received, outputs):
        assert len(prompts) == 4 and len(set(prompts)) == 1
        assert all(len(v) == 4 for v in out.values())
        for ids, mask, logprobs in zip(out["completion_ids"], out["env_mask"], out["logprobs"]):
            assert len(ids) == len(mask) == len(logprobs)
    assert sum(sum(n) for n in (o["num_searches"] for o in outputs)) > 0, "the policy searched the server"
    observed = sum(m.count(0) for o in outputs for m in o["env_mask"])
    assert observed > 0, "observation tokens were appended (and masked)"

    moved = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    assert moved > 0, "GRPO changed the policy's parameters"

    logs = [entry for entry in trainer.state.log_history if "rollout/search_rate" in entry]
    assert len(logs) == 2
    assert all(0.0 <= e["rollout/search_rate"] <= 1.0 and e["rollout/tool_failures"] >= 0 for e in logs)
    assert any(e["rollout/search_rate"] > 0 for e in logs)
    assert all("rewards/format/mean" in e and "rewards/em/mean" in e for e in logs)
    client.close()


def test_rollout_config_from_recipe_takes_the_kinetics_budget():
    from seekrl.agents.trl_adapter import rollout_config_from_recipe
    from seekrl.config import load_recipe_dict

    dense = rollout_config_from_recipe(load_recipe_dict({"rollout": {"max_obs_tokens": 99}, "env": {"topk": 5}}))
    assert (dense.attention, dense.block_topk, dense.max_obs_tokens, dense.topk) == ("dense", None, 99, 5)
    sparse = rollout_config_from_recipe(load_recipe_dict(
        {"rollout": {"attention": "block_topk"}, "kinetics": {"block_size": 16, "topk": 64, "local": 32}}))
    assert sparse.attention == "block_topk"
    assert (sparse.block_topk.block_size, sparse.block_topk.topk, sparse.block_topk.local) == (16, 64, 32)


def test_kinetics_plan_sets_the_rollout_budget():
    from seekrl.agents.trl_adapter import apply_kinetics_plan
    from seekrl.config import load_recipe_dict
    from seekrl.kernels.kinetics import MODEL_CONFIGS, block_topk_eflops

    recipe = load_recipe_dict({})
    assert apply_kinetics_plan(recipe, MODEL_CONFIGS["Qwen3-8B"], 512) is None and recipe.rollout.attention == "dense"
    budget = float(block_topk_eflops(MODEL_CONFIGS["Qwen3-8B"], 512, 1024, 8, "h200", 32, 16, 128)) * 1.01
    recipe = load_recipe_dict({"kinetics": {"eflops_budget": budget, "local": 128}})
    plan = apply_kinetics_plan(recipe, MODEL_CONFIGS["Qwen3-8B"], 512)
    assert plan.eflops <= budget
    assert recipe.rollout.attention == "block_topk"
    assert (recipe.kinetics.block_size, recipe.kinetics.topk) == (plan.block_size, plan.topk)
    assert (recipe.rollout.max_total_tokens, recipe.grpo.num_generations) == (plan.max_new_tokens, plan.group_size)
    # The planner maximises generated tokens x samples: at least what the reference point buys.
    assert plan.max_new_tokens * plan.group_size >= 1024 * 8
