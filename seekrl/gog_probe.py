"""Measure a Glance-or-Gaze policy in memory: pass rates (the complexity levels of stage 2) and agent metrics.

Used by the pass-rate (`label`) stage of a gog recipe, the GoG quickstart and `seekrl eval --protocol gog`, so
all measure the same way:

- `pass_rates`: k rollouts per question sampled at a temperature, the share whose answer is correct (EM, or
  SubEM); `level_of` sorts a rate into level 0 (mastered, rate > level1_max), 1 (solved about half the time,
  level1_min <= rate <= level1_max) or 2 (frequently failed, rate < level1_min);
- `trajectory_stats` / `gog_agent_metrics`: per rollout and averaged: accuracy (EM, SubEM), answer rate, search
  rate and its split by action (text search / glance / gaze: the share of questions with at least one),
  gazes per question, gaze share (gazes among all tool calls), on-target gazes (the share of gazes whose box
  overlaps the question's answer region with IoU >= 0.5, when the record has one), images shown, eFLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

ON_TARGET_IOU = 0.5


@dataclass
class GoGQuestion:
    """One image question: the question, its image (PIL / bytes / path), gold answers, optional answer region."""

    id: str
    question: str
    image: Any
    golds: list[str]
    bbox: tuple[int, int, int, int] | None = None


def questions_from_records(records) -> list[GoGQuestion]:
    """GoGQuestions from seekrl.data QARecords (first image; `bbox` from the metadata where the world wrote one)."""
    out = []
    for r in records:
        if not r.images:
            raise ValueError(f"record {r.id!r} has no image")
        box = r.metadata.get("bbox")
        out.append(GoGQuestion(r.id, r.question, r.images[0], list(r.answers),
                               tuple(int(v) for v in box) if box is not None else None))
    return out


def level_of(rate: float, level1_min: float = 0.25, level1_max: float = 0.75) -> int:
    """0 mastered, 1 solved about half the time, 2 frequently failed (module docstring).

    >>> [level_of(r) for r in (1.0, 0.75, 0.5, 0.25, 0.0)]
    [0, 1, 1, 1, 2]
    """
    if rate > level1_max:
        return 0
    return 1 if rate >= level1_min else 2


def _score(answer: str | None, golds: list[str], accuracy: str) -> float:
    from seekrl.rewards import cover_exact_match, exact_match

    return (cover_exact_match if accuracy == "subem" else exact_match)(answer or "", golds)


def _engine(model, processor, protocol, rollout, temperature: float, seed: int, batch: int, client=None):
    from seekrl.agents.rollout import RolloutConfig
    from seekrl.agents.vlm_rollout import VLRolloutEngine

    config = RolloutConfig(max_new_tokens_per_turn=rollout.max_new_tokens_per_turn,
                           max_total_tokens=rollout.max_total_tokens, max_obs_tokens=rollout.max_obs_tokens,
                           temperature=temperature, top_p=rollout.top_p, max_batch_size=batch)
    return VLRolloutEngine(model, processor, protocol, client, config, seed=seed)


@torch.no_grad()
def pass_rates(model, processor, protocol, questions: list[GoGQuestion], rollout, samples: int,
               temperature: float, seed: int = 0, batch: int = 32, accuracy: str = "em", client=None) -> list[float]:
    """Per question: the share of `samples` sampled rollouts whose answer is correct."""
    engine = _engine(model, processor, protocol, rollout, temperature, seed, batch, client)
    correct = [0.0] * len(questions)
    for i, q, traj in _rollouts(engine, questions, samples, batch):
        correct[i] += _score(traj.answer, q.golds, accuracy)
    return [c / samples for c in correct]


def _rollouts(engine, questions: list[GoGQuestion], samples: int, batch: int):
    """(question index, question, trajectory) for `samples` rollouts of each question, in question order,
    `batch` rollouts at a time."""
    per_chunk = max(1, batch // samples)
    for start in range(0, len(questions), per_chunk):
        chunk = questions[start:start + per_chunk]
        trajs = engine.run([q.question for q in chunk for _ in range(samples)],
                           [q.image for q in chunk for _ in range(samples)])
        for i, traj in enumerate(trajs):
            yield start + i // samples, chunk[i // samples], traj


def trajectory_stats(traj, question: GoGQuestion) -> dict:
    """One rollout's numbers (module docstring)."""
    from seekrl.gog_sft import iou
    from seekrl.rewards import cover_exact_match, exact_match

    counts = traj.action_counts()
    on_target = None
    if question.bbox is not None and traj.gazes:
        on_target = sum(iou(g, question.bbox) >= ON_TARGET_IOU for g in traj.gazes)
    return {
        "em": exact_match(traj.answer or "", question.golds),
        "subem": cover_exact_match(traj.answer or "", question.golds),
        "answered": traj.answer is not None,
        "num_searches": traj.num_searches, "num_text_searches": counts["search"], "num_glances": counts["glance"],
        "num_gazes": counts["gaze"], "on_target_gazes": on_target, "num_images": traj.num_images,
        "gazes": [list(g) for g in traj.gazes], "eflops": traj.eflops, "eflops_dense": traj.eflops_dense,
    }


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def summarize_stats(lines: list[dict]) -> dict:
    """Averages of `trajectory_stats` lines (module docstring)."""
    calls = sum(x["num_searches"] for x in lines)
    gazes = sum(x["num_gazes"] for x in lines)
    targeted = [x for x in lines if x.get("on_target_gazes") is not None]
    return {
        "n": len(lines),
        "em": _mean(x["em"] for x in lines), "subem": _mean(x["subem"] for x in lines),
        "answer_rate": _mean(x["answered"] for x in lines),
        "search_rate": _mean(x["num_searches"] > 0 for x in lines),
        "text_search_rate": _mean(x["num_text_searches"] > 0 for x in lines),
        "glance_rate": _mean(x["num_glances"] > 0 for x in lines),
        "gaze_rate": _mean(x["num_gazes"] > 0 for x in lines),
        "gazes": _mean(x["num_gazes"] for x in lines),
        "gaze_share": gazes / calls if calls else 0.0,
        "on_target_gaze_share": (sum(x["on_target_gazes"] for x in targeted) / sum(x["num_gazes"] for x in targeted)
                                 if targeted else 0.0),
        "eflops": _mean(x["eflops"] for x in lines),
    }


@torch.no_grad()
def gog_agent_metrics(model, processor, protocol, questions: list[GoGQuestion], rollout, seed: int = 0,
                      batch: int = 32, client=None, temperature: float = 0.0,
                      samples: int = 1) -> tuple[dict, list[dict]]:
    """The agent on `questions`: (averages, per-rollout lines). Greedy by default. With `temperature` > 0, the
    policy as it is sampled (what GRPO trains): `samples` rollouts per question, each its own line, so that
    accuracy is the mean pass rate and the action shares are over all rollouts."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if samples > 1 and temperature <= 0:
        raise ValueError("greedy rollouts of one question are all the same: give a temperature > 0 with samples > 1")
    was_training = model.training
    model.eval()
    try:
        engine = _engine(model, processor, protocol, rollout, temperature, seed, batch, client)
        lines = [{"id": q.id, "answer": traj.answer, **trajectory_stats(traj, q)}
                 for _, q, traj in _rollouts(engine, questions, samples, batch)]
        return summarize_stats(lines), lines
    finally:
        model.train(was_training)


class GoGEvalAgent:
    """`seekrl eval --protocol gog`: a VLM rolled out by the VLM engine with the image knowledge base of
    `options.image_retriever` (and the text retriever of `options.retriever`, when given); one per worker."""

    def __init__(self, options):
        from seekrl.agents.gog import GlanceOrGaze
        from seekrl.evaluate import open_client
        from seekrl.models import load_model, load_processor

        self.options = options
        self.model = load_model(options.model, dtype=options.dtype)
        if options.gpus_per_worker > 0 and torch.cuda.is_available():
            self.model.to("cuda")
        self.model.eval()
        self.processor = load_processor(options.model)
        self.client = open_client(options.retriever, options.topk)
        self.protocol = GlanceOrGaze(options.max_turns, options.max_query_chars,
                                     image_searcher=open_image_client(options.image_retriever, options.image_topk),
                                     image_topk=options.image_topk, reflect_below=options.reflect_below,
                                     show_crops=options.show_crops)

    def run(self, benchmark: str, records, attention: str, settings) -> list[tuple[list, dict]]:
        """Per record: (its sampled trajectories, {})."""
        from seekrl.agents.rollout import RolloutConfig
        from seekrl.agents.vlm_rollout import VLRolloutEngine
        from seekrl.evaluate import EvalError, question_seed

        if attention != "dense":
            raise EvalError("--protocol gog runs dense attention only")
        o = self.options
        config = RolloutConfig(max_new_tokens_per_turn=o.max_new_tokens_per_turn, max_total_tokens=o.max_total_tokens,
                               max_obs_tokens=o.max_obs_tokens, temperature=o.temperature, top_p=o.top_p, topk=o.topk,
                               max_batch_size=max(o.batch_size, o.num_samples), hardware=o.hardware)
        engine = VLRolloutEngine(self.model, self.processor, self.protocol, self.client, config, seed=o.seed)
        if o.temperature <= 0:
            return [([t], {}) for t in engine.run([r.question for r in records], [r.images[0] for r in records])]
        out = []
        for record in records:
            engine.generator.manual_seed(question_seed(o.seed, benchmark, record.id))
            out.append((engine.run([record.question] * o.num_samples, [record.images[0]] * o.num_samples), {}))
        return out


def open_image_client(image_retriever: str, topk: int = 3):
    """The image knowledge base client: an http(s) URL of a server with /image_search, or an image index directory."""
    from seekrl.envs.client import HTTPClient, InProcessImageClient

    if image_retriever.startswith(("http://", "https://")):
        return HTTPClient(image_retriever, default_topk=topk)
    from seekrl.envs.image_kb import ImageKB

    return InProcessImageClient(ImageKB.load(image_retriever), default_topk=topk)
