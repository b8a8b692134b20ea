"""The routed AdaSearch agent: decide, then solve with the parametric or search prompt (seekrl.agents.routed)."""

from __future__ import annotations

import pytest

from seekrl.agents import AdaSearch, make_protocol
from seekrl.agents.rollout import RolloutConfig, RolloutEngine
from seekrl.agents.routed import RoutedEngine, make_engine
from seekrl.envs.client import InProcessClient

CONFIG = dict(max_new_tokens_per_turn=32, max_total_tokens=160, max_obs_tokens=64, topk=2)


def test_routed_is_the_decision_then_the_mode_it_names(searcher, bm25_index, hotpot_questions):
    """Sampled with a seed, the routed agent must equal its three parts run by hand on one random stream: the
    decision on every question, then the parametric mode on the `yes` questions and the search mode on the rest."""
    model, tok = searcher
    client = InProcessClient(bm25_index, default_topk=2)
    config = RolloutConfig(temperature=1.0, **CONFIG)
    questions = list(hotpot_questions) * 2
    engine = make_engine(model, tok, make_protocol("adasearch", 3, adasearch_mode="routed"), client, config, seed=3)
    assert isinstance(engine, RoutedEngine)
    routed = engine.run(questions)

    decider = RolloutEngine(model, tok, AdaSearch("decide", 3), None, config, seed=3)
    parametric = RolloutEngine(model, tok, AdaSearch("parametric", 3), None, config)
    search = RolloutEngine(model, tok, AdaSearch("search", 3), client, config)
    parametric.generator = search.generator = decider.generator
    decide = decider.run(questions)
    said_yes = [i for i, d in enumerate(decide) if d.decision == "yes"]
    said_no = [i for i, d in enumerate(decide) if d.decision != "yes"]
    assert said_yes and said_no, f"the test needs both decisions, got {[d.decision for d in decide]}"
    solved = dict(zip(said_yes, parametric.run([questions[i] for i in said_yes])))
    solved |= dict(zip(said_no, search.run([questions[i] for i in said_no])))

    assert [t.decision for t in routed] == [t.decision for t in decide]
    for i, (r, d) in enumerate(zip(routed, decide, strict=True)):
        s = solved[i]
        assert r.answer == s.answer and r.searches == s.searches
        assert r.num_searches == s.num_searches and (r.decision != "yes" or r.num_searches == 0)
        assert r.text == d.text + s.text
        assert r.completion_ids == d.completion_ids + s.completion_ids
        assert r.num_turns == d.num_turns + s.num_turns
        assert r.tool_failures == d.tool_failures + s.tool_failures
        assert r.eflops == pytest.approx(d.eflops + s.eflops)
        assert r.prompt_ids == d.prompt_ids


def test_routed_run_ids_takes_its_own_prompts(searcher, bm25_index):
    model, tok = searcher
    engine = make_engine(model, tok, AdaSearch("routed", 2), InProcessClient(bm25_index), RolloutConfig(**CONFIG))
    ids = engine.render_prompt("Who wrote Hamlet?")
    assert ids == RolloutEngine(model, tok, AdaSearch("decide", 2), None).render_prompt("Who wrote Hamlet?")
    assert len(engine.run_ids([ids])) == 1
    with pytest.raises(ValueError, match="decision prompts made by its render_prompt"):
        engine.run_ids([ids[:-1]])


def test_a_routed_protocol_is_not_rolled_out_alone():
    p = AdaSearch("routed")
    with pytest.raises(RuntimeError, match="make_engine"):
        p.react(p.parse("<assessment>yes</assessment>"), None, False)
