"""Every reward as `reward_funcs` of TRL's GRPOTrainer: one CPU step on the tiny model.

The rollout is scripted (a TRL `rollout_func`, the hook seekrl's rollout engine uses): four AdaSearch
trajectories with `<information>` observations masked by `env_mask`, and the per-rollout fields `num_searches`
and `decision`. So the rewards see realistic completions and the logged per-reward means have known values.
"""

from __future__ import annotations

from collections import Counter

import pytest

from seekrl.rewards import build_reward_funcs

EINSTEIN = "Question: Where was Albert Einstein born?"
PARIS = "Question: What is the capital of France?"
OBS_E = "\n\n<information>Doc 1(Title: Albert Einstein) Einstein was born in Ulm.</information>\n\n"
OBS_P = "\n\n<information>Doc 1(Title: Paris) Paris is the capital of France.</information>\n\n"
# prompt -> the completions of its group, each as (text, is_observation) segments, num_searches, decision.
SCRIPTS = {
    EINSTEIN: [
        ([("<think>I know this</think><assessment>yes</assessment><answer>Ulm</answer>", False)], 0, "yes"),
        (
            [
                ("<assessment>no</assessment><search>Einstein birthplace</search>", False),
                (OBS_E, True),
                ("<answer>Munich</answer>", False),
            ],
            1,
            "no",
        ),
    ],
    PARIS: [
        (
            [
                ("<assessment>no</assessment><search>capital of France</search>", False),
                (OBS_P, True),
                ("<answer>Paris</answer>", False),
            ],
            1,
            "no",
        ),
        ([("<assessment>yes</assessment><answer>Paris, France</answer> sure", False)], 0, "yes"),
    ],
}
# Per completion (E1, E2, P1, P2), worked out by hand; E has label "yes", P label "no".
EXPECTED_MEANS = {
    "em": (1 + 0 + 1 + 0) / 4,
    "f1": (1 + 0 + 1 + 2 / 3) / 4,  # "paris france" vs "paris": P = 1/2, R = 1
    "subem": (1 + 0 + 1 + 1) / 4,
    "format": (1 + 1 + 1 + 0) / 4,  # P2 has text after its answer
    "decision": (1 + 0 + 1 + 0) / 4,
    "search_penalty": (1.0 + 0.1 + 0.91 + 0.0) / 4,
    "knowledge_bonus": (1.6 + 0.05 + 1.4 - 1.0) / 4,
    "gog": (0.9 + 0.0 + 0.9 + 0.0) / 4,  # <assessment> is not a GoG tag: format 0 everywhere
    "judge": (1 + 0 + 1 + 1) / 4,  # the loopback judge accepts "Paris, France"
}


def _scripted_rollout(prompts, trainer):
    import torch

    tok = trainer.processing_class
    seen: Counter = Counter()
    out = {k: [] for k in ("prompt_ids", "completion_ids", "logprobs", "env_mask", "num_searches", "decision")}
    for prompt in prompts:
        segments, num_searches, decision = SCRIPTS[prompt][seen[prompt] % 2]
        seen[prompt] += 1
        prompt_ids = tok(prompt)["input_ids"]
        completion_ids, env_mask = [], []
        for text, is_observation in segments:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            completion_ids += ids
            env_mask += [0 if is_observation else 1] * len(ids)
        completion_ids.append(tok.eos_token_id)
        env_mask.append(1)
        with torch.no_grad():
            logits = trainer.model(torch.tensor([prompt_ids + completion_ids])).logits[0, len(prompt_ids) - 1 : -1]
        logprobs = logits.log_softmax(-1).gather(-1, torch.tensor(completion_ids)[:, None])[:, 0]
        out["prompt_ids"].append(prompt_ids)
        out["completion_ids"].append(completion_ids)
        out["logprobs"].append(logprobs.tolist())
        out["env_mask"].append(env_mask)
        out["num_searches"].append(num_searches)
        out["decision"].append(decision)
    return out


@pytest.mark.timeout(120)
def test_one_grpo_step_with_every_reward(tiny_text_dir, judge_server, tmp_path, monkeypatch):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    specs = [
        {"name": "em", "weight": 1.0},
        {"name": "f1", "weight": 0.0},
        {"name": "subem", "weight": 0.0},
        {"name": "format", "weight": 0.2, "args": {"protocol": "adasearch"}},
        {"name": "decision", "weight": 0.5},
        {"name": "search_penalty", "weight": 0.0, "args": {"protocol": "adasearch"}},
        {"name": "knowledge_bonus", "weight": 0.0, "args": {"protocol": "adasearch"}},
        {"name": "gog", "weight": 0.0},
        {"name": "judge", "weight": 0.0, "args": {"url": judge_server.url, "model": "loopback-judge"}},
    ]
    funcs, weights = build_reward_funcs(specs)
    dataset = Dataset.from_list(
        [
            {"prompt": EINSTEIN, "question": EINSTEIN, "golden_answers": ["Ulm"], "decision_label": "yes"},
            {"prompt": PARIS, "question": PARIS, "golden_answers": ["Paris"], "decision_label": "no"},
        ]
    )
    config = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=128,
        max_steps=1,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        reward_weights=weights,
        seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_text_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=config,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny_text_dir),
        rollout_func=_scripted_rollout,
    )
    trainer.train()

    assert trainer.state.global_step == 1
    logged = next(entry for entry in trainer.state.log_history if "rewards/em/mean" in entry)
    for name, expected in EXPECTED_MEANS.items():
        assert logged[f"rewards/{name}/mean"] == pytest.approx(expected, abs=1e-6), name
    # The weighted sum TRL optimises: em + 0.2 * format + 0.5 * decision.
    assert logged["reward"] == pytest.approx(0.5 + 0.2 * 0.75 + 0.5 * 0.5, abs=1e-6)
    # One judge request per distinct (question, golds, answer); the answers differ, so four.
    assert len(judge_server.requests) == 4
    # The rewards differ within each group, so the advantages are non-zero and the step moved the weights.
    assert any(not (p.detach() == before[n]).all() for n, p in trainer.model.named_parameters())
