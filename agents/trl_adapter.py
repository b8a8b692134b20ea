"""The seekrl rollout engine as a TRL `rollout_func`.

TRL 1.16's `GRPOTrainer(rollout_func=...)` calls `rollout_func(prompts, trainer)` with this process's prompts,
each already repeated `num_generations` times by TRL's sampler, and expects exactly one completion per prompt:
`prompt_ids`, `completion_ids` and `logprobs`, plus any extra keys, which reach the reward functions as keyword
arguments. `env_mask` (1 on generated tokens, 0 on observations) becomes the loss mask, so retrieved tokens
never receive gradient.

Prompts are the dataset's `prompt` column: a question string, or chat messages whose last user message holds the
question. The protocol renders its own prompt around the question.

Rows may name their own protocol: TRL hands a rollout function the prompts only, so `RowsGRPOTrainer` (a
GRPOTrainer subclass, nothing else changed) keeps the rows being rolled out in `trainer.rollout_rows`, and a rollout
function made with `protocols={mode: protocol}` rolls out each row whose `mode` column names one of them with that
protocol (AdaSearch's decide stage rehearsing the stage-1 modes, seekrl.train.replay_rows); rows whose `mode` is
missing or None use the main protocol. A group is one row repeated, so it never mixes protocols.
"""

from __future__ import annotations

from typing import Any

from trl import GRPOTrainer

from seekrl.agents.protocol import Protocol
from seekrl.agents.rollout import RolloutConfig, RolloutEngine, Trajectory


def question_of(prompt: Any) -> str:
    """The question inside a dataset prompt (a string, or chat messages whose last user turn is the question)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        for message in reversed(prompt):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
                return str(content)
    raise ValueError(f"cannot find a question in prompt {prompt!r}: expected a string or chat messages")


def rollout_metrics(trajectories: list[Trajectory]) -> dict[str, float]:
    """Averages over a batch: search rate, searches, turns, tool failures, tokens, answer rate, truncation."""
    n = max(1, len(trajectories))
    decided = [t for t in trajectories if t.decision is not None]
    metrics = {
        "rollout/search_rate": sum(t.num_searches > 0 for t in trajectories) / n,
        "rollout/searches": sum(t.num_searches for t in trajectories) / n,
        "rollout/turns": sum(t.num_turns for t in trajectories) / n,
        "rollout/tool_failures": sum(t.tool_failures for t in trajectories) / n,
        "rollout/generated_tokens": sum(t.num_generated for t in trajectories) / n,
        "rollout/observation_tokens": sum(len(t.env_mask) - t.num_generated for t in trajectories) / n,
        "rollout/answer_rate": sum(t.answer is not None for t in trajectories) / n,
        "rollout/truncated": sum(t.truncated for t in trajectories) / n,
        "rollout/eflops": sum(t.eflops for t in trajectories) / n,
        "rollout/eflops_dense": sum(t.eflops_dense for t in trajectories) / n,
    }
    if decided:
        metrics["rollout/decision_yes"] = sum(t.decision == "yes" for t in decided) / len(decided)
    return metrics


def trajectories_to_trl(trajectories: list[Trajectory]) -> dict[str, list]:
    """The dict TRL expects from a rollout_func, with the per-rollout fields the rewards read."""
    return {
        "prompt_ids": [t.prompt_ids for t in trajectories],
        "completion_ids": [t.completion_ids for t in trajectories],
        "logprobs": [t.logprobs for t in trajectories],
        "env_mask": [t.env_mask for t in trajectories],
        "answer": [t.answer for t in trajectories],
        "num_searches": [t.num_searches for t in trajectories],
        "num_turns": [t.num_turns for t in trajectories],
        "decision": [t.decision for t in trajectories],
        "tool_failures": [t.tool_failures for t in trajectories],
        "truncated": [t.truncated for t in trajectories],
        "searches": [t.searches for t in trajectories],
        "eflops": [t.eflops for t in trajectories],
    }


def rollout_config_from_recipe(recipe) -> RolloutConfig:
    """The engine settings of a recipe: its rollout limits, the env's top-k, and the kinetics attention budget."""
    config = RolloutConfig(
        max_new_tokens_per_turn=recipe.rollout.max_new_tokens_per_turn,
        max_total_tokens=recipe.rollout.max_total_tokens,
        max_obs_tokens=recipe.rollout.max_obs_tokens,
        temperature=recipe.rollout.temperature,
        top_p=recipe.rollout.top_p,
        topk=recipe.env.topk,
        attention=recipe.rollout.attention,
        hardware=recipe.kinetics.hardware,
    )
    if recipe.rollout.attention == "block_topk":
        from seekrl.kernels.attention import settings_from_section

        config.block_topk = settings_from_section(recipe.kinetics)
    return config


def apply_kinetics_plan(recipe, model_config, prompt_len: int):
    """Let the Kinetics planner set a recipe's rollout budget when `kinetics.eflops_budget` is given.

    The plan (block size x top-k, max new tokens, group size; seekrl.kernels.kinetics.plan) is written into the
    recipe: `kinetics.block_size/topk`, `rollout.max_total_tokens`, `grpo.num_generations`, and rollouts switch
    to block top-k attention. Returns the plan, or None when no budget is set (the recipe stays as it is).
    """
    from seekrl.kernels.kinetics import plan_from_section

    if recipe.kinetics.eflops_budget is None:
        return None
    chosen = plan_from_section(recipe.kinetics, model_config, prompt_len)
    recipe.kinetics.block_size, recipe.kinetics.topk = chosen.block_size, chosen.topk
    recipe.rollout.max_total_tokens = chosen.max_new_tokens
    recipe.rollout.attention = "block_topk"
    recipe.grpo.num_generations = chosen.group_size
    return chosen


class RowsGRPOTrainer(GRPOTrainer):
    """TRL GRPOTrainer whose rollout function can read the rows it rolls out, `self.rollout_rows` (module
    docstring)."""

    rollout_rows: list[dict] | None = None

    def _generate_and_score_completions(self, inputs):
        self.rollout_rows = inputs
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self.rollout_rows = None


def make_rollout_func(protocol: Protocol, client=None, config: RolloutConfig | None = None, seed: int | None = None,
                      protocols: dict[str, Protocol] | None = None):
    """A `rollout_func(prompts, trainer)` that rolls out `protocol` with the trainer's current policy, or for a row
    whose `mode` is a key of `protocols`, that protocol (needs a RowsGRPOTrainer; module docstring).

    The engines use the unwrapped model (no DDP/DeepSpeed wrapper) and the trainer's tokenizer, and log
    `rollout/*` metrics (search rate, turns, tool failures, tokens) into the trainer's logs.
    """
    config = config or RolloutConfig()
    by_mode = {None: protocol, **(protocols or {})}
    engines: dict = {}

    def rollout_func(prompts: list, trainer) -> dict[str, list]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
        rows = getattr(trainer, "rollout_rows", None)
        if protocols and rows is None:
            raise ValueError("rows with their own protocol need a RowsGRPOTrainer (seekrl.agents.trl_adapter)")
        modes = [rows[i].get("mode") for i in range(len(prompts))] if protocols else [None] * len(prompts)
        unknown = sorted({m for m in modes if m not in by_mode})
        if unknown:
            raise ValueError(f"training rows name modes {unknown} without a protocol; known: {sorted(protocols)}")
        trajectories: list = [None] * len(prompts)
        for row_mode in dict.fromkeys(modes):
            engine = engines.get(row_mode)
            if engine is None or engine.model is not model:
                engine = engines[row_mode] = RolloutEngine(model, tokenizer, by_mode[row_mode], client, config,
                                                           seed=seed)
            index = [i for i, m in enumerate(modes) if m == row_mode]
            for i, traj in zip(index, engine.run([question_of(prompts[i]) for i in index]), strict=True):
                trajectories[i] = traj
        metrics_store = getattr(trainer, "_metrics", None)
        if metrics_store is not None:
            mode = "train" if trainer.model.training else "eval"
            for key, value in rollout_metrics(trajectories).items():
                metrics_store[mode][key].append(value)
        return trajectories_to_trl(trajectories)

    return rollout_func
