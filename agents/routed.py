"""AdaSearch's routed agent: decide, then solve with the prompt of the mode the decision names.

AdaSearch trains solving and deciding apart: stage 1 trains the parametric prompt (answer from knowledge) and the
search prompt (the Search-R1 loop), stage 2 trains the assessment under the decision prompt. The routed agent
uses each part where it was trained: one `decide` rollout, then per question a `parametric` rollout after `yes`
or a `search` rollout after `no`. A missing or malformed assessment routes to search, the safe side (F1_aware
counts it as a search too).

The returned `Trajectory` is the two rollouts joined for evaluation and serving: the decision's completion, then
the solving completion (its own prompt is not part of it), with searches, turns, tool failures, tokens and eFLOPs
summed; `prompt_ids` is the decision prompt. It is not a training sample: each half trains in its own stage.

>>> from seekrl.agents import make_protocol
>>> make_protocol("adasearch", adasearch_mode="routed").messages("Who wrote Hamlet?")[0]["content"][:26]
'Answer the given question.'
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from seekrl.agents.adasearch import AdaSearch
from seekrl.agents.rollout import RolloutConfig, RolloutEngine, Trajectory


QUESTION_CACHE = 4096


def is_routed(protocol) -> bool:
    return isinstance(protocol, AdaSearch) and protocol.mode == "routed"


def make_engine(model, tokenizer, protocol, client=None, config: RolloutConfig | None = None,
                seed: int | None = None):
    """A RolloutEngine for `protocol`, or a RoutedEngine for AdaSearch's routed mode."""
    if is_routed(protocol):
        return RoutedEngine(model, tokenizer, protocol, client, config, seed=seed)
    return RolloutEngine(model, tokenizer, protocol, client, config, seed=seed)


class RoutedEngine:
    """The routed AdaSearch agent (module docstring), with the RolloutEngine interface the jobs use: `run`,
    `run_ids` (decision-prompt ids, as `render_prompt` makes them), `render_prompt`, `generator`, `model`."""

    def __init__(self, model, tokenizer, protocol: AdaSearch, client=None, config: RolloutConfig | None = None,
                 seed: int | None = None):
        turns, chars = protocol.max_turns, protocol.max_query_chars
        self.protocol, self.model, self.tokenizer = protocol, model, tokenizer
        self.decider = RolloutEngine(model, tokenizer, AdaSearch("decide", turns, chars), None, config, seed=seed)
        self.solvers = {
            "yes": RolloutEngine(model, tokenizer, AdaSearch("parametric", turns, chars), None, config, seed=seed),
            "no": RolloutEngine(model, tokenizer, AdaSearch("search", turns, chars), client, config, seed=seed),
        }
        self.config = self.decider.config
        # One random stream for all three rollouts, so seeding `generator` seeds the whole agent.
        self.generator = self.decider.generator
        for engine in self.solvers.values():
            engine.generator = self.generator
        # Prompt ids -> question, for run_ids; bounded, since a caller may render prompts it never runs.
        self._question_of: OrderedDict[tuple[int, ...], str] = OrderedDict()

    def render_prompt(self, question: str) -> list[int]:
        """The decision prompt's ids (remembered, so `run_ids` can render the solving prompt of the question)."""
        ids = self.decider.render_prompt(question)
        self._question_of[tuple(ids)] = question
        while len(self._question_of) > QUESTION_CACHE:
            self._question_of.popitem(last=False)
        return ids

    def run(self, questions: list[str], interrupt: Callable[[int], bool] | None = None) -> list[Trajectory]:
        return self.run_ids([self.render_prompt(q) for q in questions], interrupt)

    def run_ids(self, prompts: list[list[int]], interrupt: Callable[[int], bool] | None = None) -> list[Trajectory]:
        try:
            questions = [self._question_of[tuple(p)] for p in prompts]
        except KeyError:
            raise ValueError("RoutedEngine.run_ids takes decision prompts made by its render_prompt") from None
        decisions = self.decider.run_ids(prompts, interrupt)
        solved: list[Trajectory | None] = [None] * len(prompts)
        for verdict, engine in self.solvers.items():
            rows = [i for i, d in enumerate(decisions) if (d.decision or "no") == verdict
                    and d.stop_reason != "interrupted"]
            if not rows:
                continue
            sub = None if interrupt is None else (lambda k, rows=rows: interrupt(rows[k]))
            for i, traj in zip(rows, engine.run([questions[i] for i in rows], sub), strict=True):
                solved[i] = traj
        for p in prompts:
            self._question_of.pop(tuple(p), None)
        return [join(d, s) for d, s in zip(decisions, solved, strict=True)]


def join(decision: Trajectory, solved: Trajectory | None) -> Trajectory:
    """The decision rollout followed by the solving rollout (None: interrupted before it started)."""
    if solved is None:
        return decision
    both = (decision, solved)
    return Trajectory(
        prompt_ids=decision.prompt_ids,
        completion_ids=decision.completion_ids + solved.completion_ids,
        logprobs=decision.logprobs + solved.logprobs,
        env_mask=decision.env_mask + solved.env_mask,
        text=decision.text + solved.text,
        answer=solved.answer,
        num_searches=solved.num_searches,
        num_turns=sum(t.num_turns for t in both),
        decision=decision.decision,
        tool_failures=sum(t.tool_failures for t in both),
        truncated=solved.truncated,
        stop_reason=solved.stop_reason,
        searches=list(solved.searches),
        search_results=list(solved.search_results),
        turn_tokens=decision.turn_tokens + solved.turn_tokens,
        eflops=sum(t.eflops for t in both),
        eflops_dense=sum(t.eflops_dense for t in both),
    )
