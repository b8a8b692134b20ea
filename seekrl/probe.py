"""Measure a policy in memory: parametric solve rates (AdaSearch's pseudo-labels) and held-out agent metrics.

Used by the `label` stage (solve rates of the training questions), by the periodic evaluation during GRPO and by
the quickstart's final table, so all three measure the same way:

- `solve_rates`: k answers per question sampled in AdaSearch's parametric mode (no search), EM against the golds;
- `agent_metrics`: the agent run greedily on questions (EM, search rate, tool failures) plus, for AdaSearch,
  F1_aware of its assessments against labels from the same model's solve rates, and `decision_reward`, the share
  of assessments that equal the label (what the decide stage optimises).
"""

from __future__ import annotations

from collections import Counter

import torch

from seekrl.rewards import exact_match, f1_aware, solve_rate_labels


def _engine(model, tokenizer, protocol, client, recipe, temperature: float, seed: int, batch: int):
    from seekrl.agents.rollout import RolloutConfig
    from seekrl.agents.routed import make_engine

    r = recipe.rollout
    config = RolloutConfig(max_new_tokens_per_turn=r.max_new_tokens_per_turn, max_total_tokens=r.max_total_tokens,
                           max_obs_tokens=r.max_obs_tokens, temperature=temperature, top_p=r.top_p,
                           topk=recipe.env.topk, max_batch_size=batch)
    return make_engine(model, tokenizer, protocol, client, config, seed=seed)


@torch.no_grad()
def solve_rates(model, tokenizer, recipe, questions: list[str], golds: list[list[str]], samples: int,
                temperature: float, seed: int = 0, batch: int = 64) -> list[float]:
    """Per question: the share of `samples` parametric-mode answers that are EM-correct."""
    from seekrl.agents import make_protocol

    protocol = make_protocol("adasearch", recipe.agent.max_turns, recipe.agent.max_query_chars, "parametric")
    engine = _engine(model, tokenizer, protocol, None, recipe, temperature, seed, batch)
    per_chunk = max(1, batch // samples)
    rates = []
    for start in range(0, len(questions), per_chunk):
        chunk = questions[start:start + per_chunk]
        trajectories = engine.run([q for q in chunk for _ in range(samples)])
        for i in range(len(chunk)):
            answers = [t.answer or "" for t in trajectories[i * samples:(i + 1) * samples]]
            rates.append(sum(exact_match(a, golds[start + i]) for a in answers) / samples)
    return rates


@torch.no_grad()
def agent_metrics(model, tokenizer, recipe, client, records: list[dict], seed: int = 0, batch: int = 64,
                  breakdown: tuple[str, ...] = ()) -> dict:
    """Greedy agent on `records` (`question`, `golden_answers`): em, search_rate, tool_failures; for AdaSearch also
    f1_aware, decision_reward and label_yes_rate against labels from this model's parametric solve rates.

    `breakdown`: record keys (e.g. `("known", "kind")` of the quickstart world) to count the outcomes by, from the
    same rollouts: `metrics["breakdown"]` lists one row per combination seen, `{key: value, ..., "decision",
    "label", "correct", "n"}` (decision and label None outside AdaSearch)."""
    from seekrl.agents import make_protocol

    was_training = model.training
    model.eval()
    try:
        a = recipe.agent
        protocol = make_protocol(a.protocol, a.max_turns, a.max_query_chars, a.adasearch_mode)
        engine = _engine(model, tokenizer, protocol, client if protocol.uses_tools else None, recipe, 0.0, seed,
                         batch)
        questions = [r["question"] for r in records]
        golds = [r["golden_answers"] for r in records]
        trajectories = []
        for start in range(0, len(questions), batch):
            trajectories += engine.run(questions[start:start + batch])
        n = max(1, len(records))
        correct = [bool(exact_match(t.answer or "", g)) for t, g in zip(trajectories, golds)]
        decisions = labels = [None] * len(records)
        metrics = {
            "em": sum(correct) / n,
            "search_rate": sum(t.num_searches > 0 for t in trajectories) / n,
            "tool_failures": sum(t.tool_failures for t in trajectories) / n,
        }
        if a.protocol == "adasearch":
            rates = solve_rates(model, tokenizer, recipe, questions, golds, recipe.label.samples,
                                recipe.label.temperature, seed, batch)
            labels = solve_rate_labels(rates, recipe.label.threshold)
            decisions = [t.decision if t.decision is not None else ("yes" if t.num_searches == 0 else "no")
                         for t in trajectories]
            metrics["f1_aware"] = f1_aware(decisions, labels)
            metrics["decision_reward"] = sum(d == lab for d, lab in zip(decisions, labels)) / n
            metrics["label_yes_rate"] = sum(lab == "yes" for lab in labels) / n
            metrics["decision_yes_rate"] = sum(d == "yes" for d in decisions) / n
        if breakdown:
            metrics["breakdown"] = _breakdown(records, breakdown, decisions, labels, correct)
        return metrics
    finally:
        if was_training:
            model.train()


def _breakdown(records: list[dict], keys: tuple[str, ...], decisions: list, labels: list,
               correct: list[bool]) -> list[dict]:
    """Rows of `agent_metrics(breakdown=keys)`, sorted by their values."""
    counts = Counter((*(r.get(k) for k in keys), d, lab, ok)
                     for r, d, lab, ok in zip(records, decisions, labels, correct, strict=True))
    names = (*keys, "decision", "label", "correct")
    return [{**dict(zip(names, group)), "n": n} for group, n in sorted(counts.items(), key=lambda item: str(item[0]))]
