"""AdaSearch: an explicit, interpretable decision between parametric knowledge and search.

The policy first reasons and writes `<assessment>yes</assessment>` ("my own knowledge suffices") or
`<assessment>no</assessment>` ("I need to search"). Modes, each usable for training and evaluation:

- `decide`: the adaptive prompt, but the trajectory ends at the assessment (stage-2 decision training). The
  prompt is the adaptive one on purpose: the decision is trained in exactly the context in which the adaptive
  agent makes it, so what stage 2 learns is what inference uses. It also ends at an invalid first action (a
  tool failure, no corrective retry): the trajectory *is* the decision. With retries, a malformed start ran on
  to the token limit, and its many unlikely tokens outweighed the one decision token in the GRPO gradient
  (norms of 4-10 against 0.4-0.7 without retries, on the quickstart); when the retry then matched the label,
  the junk was rewarded too, and the format collapsed within a dozen steps;
- `parametric`: no tools, answer directly (stage-1 parametric solving, and the oracle for pseudo-labels);
- `search`: the Search-R1 loop with AdaSearch's search prompt;
- `adaptive`: decide, then act on the decision in the same trajectory: after `yes` only `<answer>` is valid,
  after `no` the search loop runs;
- `routed`: AdaSearch's inference as its stages train it (agents/routed.py): decide (the `decide` trajectory),
  then solve with the prompt of the mode the decision names, `parametric` after `yes`, `search` after `no`
  (or no valid assessment), so each half runs in exactly the context its stage trained. A protocol object in
  this mode renders the decision prompt; `seekrl.agents.routed.make_engine` runs the two rollouts.

The paper's prompts are not public; these are this project's, kept stable because checkpoints depend on them.

>>> p = AdaSearch(mode="adaptive")
>>> s = TrajectoryState()
>>> p.react(p.parse("<think>I know this.</think><assessment> Yes </assessment>"), s, False).kind, s.decision
('text', 'yes')
>>> p.react(p.parse("<search>x</search>"), s, False).tool_failure
True
"""

from __future__ import annotations

from seekrl.agents.actions import Action
from seekrl.agents.protocol import Protocol, Reaction, TrajectoryState
from seekrl.agents.search_r1 import PROMPT as SEARCH_PROMPT
from seekrl.agents.search_r1 import SEARCH_FAILED

MODES = ("adaptive", "decide", "parametric", "search", "routed")

PARAMETRIC_PROMPT = (
    "Answer the given question from your own knowledge; no search engine is available. Reason inside <think> "
    "and </think>, then provide the answer inside <answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>. Question: {question}\n"
)

ADAPTIVE_PROMPT = (
    "Answer the given question. First decide whether your own knowledge suffices: reason inside <think> and "
    "</think>, then write <assessment>yes</assessment> if you can answer reliably without searching, or "
    "<assessment>no</assessment> if you need to search. If yes, provide the answer inside <answer> and </answer> "
    "right away. If no, you can call a search engine by <search> query </search> and it will return the top "
    "searched results between <information> and </information>; reason inside <think> and </think> every time "
    "you get new information, search again if needed, and provide the answer inside <answer> and </answer>, "
    "without detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)

INVALID = {
    "assess_first": "\nMy previous action is invalid. I must first give my assessment: <assessment>yes</assessment> "
                    "if my own knowledge suffices, <assessment>no</assessment> if I need to search.\n",
    "bad_assessment": "\nMy previous action is invalid. The assessment must be exactly "
                      "<assessment>yes</assessment> or <assessment>no</assessment>.\n",
    "answer_only": "\nMy previous action is invalid. I answer from my own knowledge, so I should put the answer "
                   "between <answer> and </answer>.\n",
    "search_or_answer": "\nMy previous action is invalid. If I want to search, I should put the query between "
                        "<search> and </search>. If I want to give the final answer, I should put the answer "
                        "between <answer> and </answer>. Let me try again.\n",
}


class AdaSearch(Protocol):
    name = "adasearch"
    action_tags = ("assessment", "search", "answer")
    search_failed_text = SEARCH_FAILED

    def __init__(self, mode: str = "adaptive", max_turns: int = 4, max_query_chars: int = 512):
        if mode not in MODES:
            raise ValueError(f"unknown AdaSearch mode {mode!r}; choose one of {MODES}")
        super().__init__(max_turns, max_query_chars)
        self.mode = mode
        self.uses_tools = mode in ("adaptive", "search", "routed")
        self.action_tags = {
            "decide": ("assessment", "search", "answer"),
            "parametric": ("search", "answer"),
            "search": ("search", "answer"),
            "adaptive": ("assessment", "search", "answer"),
            "routed": ("assessment", "search", "answer"),
        }[mode]

    def messages(self, question: str) -> list[dict]:
        template = {
            "decide": ADAPTIVE_PROMPT,
            "parametric": PARAMETRIC_PROMPT,
            "search": SEARCH_PROMPT,
            "adaptive": ADAPTIVE_PROMPT,
            "routed": ADAPTIVE_PROMPT,
        }[self.mode]
        return [{"role": "user", "content": template.format(question=question.strip())}]

    def _invalid(self, key: str) -> Reaction:
        if self.mode == "decide":
            return Reaction("finish", tool_failure=True)
        return Reaction("text", text=INVALID[key], tool_failure=True)

    def react(self, action: Action, state: TrajectoryState, ended: bool) -> Reaction:
        if self.mode == "routed":
            raise RuntimeError("a routed AdaSearch agent is two rollouts: run it with seekrl.agents.routed.make_engine")
        if action.kind == "none" or (ended and action.is_invalid):
            return Reaction("finish")
        needs_decision = self.mode in ("decide", "adaptive") and state.decision is None
        if action.kind == "assessment":
            if not needs_decision:
                return self._invalid("answer_only" if self.mode == "parametric" or state.decision == "yes"
                                     else "search_or_answer")
            verdict = action.content.strip().lower()
            if verdict not in ("yes", "no"):
                return self._invalid("bad_assessment")
            state.decision = verdict
            if self.mode == "decide":
                return Reaction("finish")
            # Continue generating right after the assessment: nothing is appended.
            return Reaction("text", text="")
        if needs_decision:
            return self._invalid("assess_first")
        if self.mode == "parametric" or state.decision == "yes":
            if action.kind == "answer":
                return Reaction("finish", answer=action.content)
            return self._invalid("answer_only")
        if action.is_invalid:
            return self._invalid("search_or_answer")
        return super().react(action, state, ended)
