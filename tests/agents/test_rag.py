"""The RAG baseline protocol: one retrieval per question, passages in the prompt, answer-only actions."""

from __future__ import annotations

import pytest

from seekrl.agents import make_protocol
from seekrl.agents.protocol import TrajectoryState
from seekrl.envs.client import InProcessClient


def test_prepare_puts_the_bm25_passages_into_the_prompt(bm25_index, shared_data):
    from seekrl.data import load_qa

    records = load_qa(shared_data / "multihop" / "questions.jsonl", limit=3)
    protocol = make_protocol("rag")
    docs = protocol.prepare([r.question for r in records], InProcessClient(bm25_index), topk=2)
    assert [len(d) for d in docs] == [2, 2, 2]
    prompt = protocol.messages(records[0].question)[0]["content"]
    title = docs[0][0]["contents"].partition("\n")[0].strip('"')
    assert f"Doc 1(Title: {title})" in prompt and "Doc 2(Title:" in prompt
    assert prompt.rstrip().endswith(f"Question: {records[0].question.strip()}")


def test_rag_answers_but_never_searches():
    protocol = make_protocol("rag")
    state = TrajectoryState()
    assert protocol.react(protocol.parse("<think>x</think><answer> Ulm </answer>"), state, False).answer == "Ulm"
    reaction = protocol.react(protocol.parse("<search>more</search>"), state, False)
    assert reaction.kind == "text" and reaction.tool_failure and "No search engine" in reaction.text


def test_messages_without_prepare_name_the_fix():
    with pytest.raises(KeyError, match="call prepare"):
        make_protocol("rag").messages("Who wrote Hamlet?")
    with pytest.raises(ValueError, match="needs a retriever"):
        make_protocol("rag").prepare(["q"], None, topk=3)


def test_rag_rollout_counts_one_retrieval(bm25_index, searcher, hotpot_questions):
    from seekrl.agents.rollout import RolloutConfig, RolloutEngine

    model, tokenizer = searcher
    protocol = make_protocol("rag")
    protocol.prepare(hotpot_questions[:2], InProcessClient(bm25_index), topk=2)
    engine = RolloutEngine(model, tokenizer, protocol, None, RolloutConfig(temperature=0.0, max_total_tokens=128))
    trajectories = engine.run(hotpot_questions[:2])
    plain = RolloutEngine(model, tokenizer, make_protocol("parametric"), None, RolloutConfig(temperature=0.0))
    # The passages are in the prompt: it is much longer than the same question's parametric prompt.
    for traj, question in zip(trajectories, hotpot_questions[:2], strict=True):
        assert len(traj.prompt_ids) > len(plain.render_prompt(question)) + 50
        assert traj.num_searches == 0 and traj.completion_ids
