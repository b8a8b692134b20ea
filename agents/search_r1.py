"""Search-R1 (Jin et al., 2025): think, search any number of times, answer.

The prompt and the corrective text are Search-R1's own, so checkpoints trained with it behave as expected.

>>> p = SearchR1()
>>> p.react(p.parse("<think>x</think><search>Eiffel tower height</search>"), TrajectoryState(), False).query
'Eiffel tower height'
>>> p.format_observation([{"id": "1", "contents": '"Eiffel Tower"\\nIt is 330 m tall.'}])
'\\n\\n<information>Doc 1(Title: Eiffel Tower) It is 330 m tall.\\n</information>\\n\\n'
"""

from __future__ import annotations

from seekrl.agents.protocol import Protocol, TrajectoryState

__all__ = ["SearchR1", "TrajectoryState", "PROMPT", "INVALID_ACTION"]

PROMPT = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get "
    "new information. After reasoning, if you find you lack some knowledge, you can call a search engine by "
    "<search> query </search> and it will return the top searched results between <information> and "
    "</information>. You can search as many times as your want. If you find no further external knowledge "
    "needed, you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>. Question: {question}\n"
)

INVALID_ACTION = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
    "</search>. If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n"
)

SEARCH_FAILED = "\n\n<information>The search engine did not answer. Try again or answer.</information>\n\n"


class SearchR1(Protocol):
    name = "search_r1"
    action_tags = ("search", "answer")
    invalid_text = INVALID_ACTION
    search_failed_text = SEARCH_FAILED

    def messages(self, question: str) -> list[dict]:
        return [{"role": "user", "content": PROMPT.format(question=question.strip())}]
