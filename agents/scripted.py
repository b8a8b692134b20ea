"""Scripted agents: no model, fixed behaviour, the same `Trajectory` records as a policy's rollouts.

They check the plumbing around a policy. `ScriptedReader` searches the question once and answers with a gold
answer when one appears in a retrieved passage, else "unknown": run through `seekrl eval`, its EM must equal
the retriever's answer recall at the same top-k, so retrieval, protocol formatting and scoring agree.

An agent, for `seekrl.evaluate`, is any object with `run(records) -> list[Trajectory]` (one trajectory per
`QARecord`, in order); `ScriptedReader` reads the records' gold answers, which is what makes it an oracle reader.

>>> class OneDocClient:  # returns the same passage for every query
...     def search(self, queries, topk): return [[{"id": "7", "contents": '"Ulm"\\nEinstein was born in Ulm.'}]
...                                              for _ in queries]
>>> from seekrl.data import QARecord
>>> reader = ScriptedReader(OneDocClient(), topk=1)
>>> [t.answer for t in reader.run([QARecord("a", "Where was Einstein born?", ["Ulm"]),
...                                QARecord("b", "Where did he die?", ["Princeton"])])]
['Ulm', 'unknown']
"""

from __future__ import annotations

from seekrl.agents.rollout import Trajectory
from seekrl.agents.search_r1 import SearchR1
from seekrl.rewards import normalize_answer

UNKNOWN = "unknown"


def answer_in_passages(golds: list[str], docs: list[dict]) -> str | None:
    """The first gold answer whose normalised form occurs in a normalised passage (title and text), else None."""
    passages = [normalize_answer(str(doc.get("contents", ""))) for doc in docs]
    for gold in golds:
        norm = normalize_answer(gold)
        # A gold that normalises to "" ("The") would match every passage.
        if norm and any(norm in passage for passage in passages):
            return gold
    return None


class ScriptedReader:
    """Search the raw question once (`topk` passages), answer a gold string found in them, else "unknown"."""

    name = "scripted:reader"

    def __init__(self, client, topk: int = 3):
        if client is None:
            raise ValueError("the scripted reader searches: give it a retriever (an index directory or a URL)")
        self.client = client
        self.topk = topk
        # Search-R1's observation format, so the trajectory text reads like a policy's.
        self.protocol = SearchR1()

    def run(self, records) -> list[Trajectory]:
        results = self.client.search([r.question for r in records], self.topk)
        trajectories = []
        for record, docs in zip(records, results, strict=True):
            answer = answer_in_passages(record.answers, docs) or UNKNOWN
            text = (f"<search>{record.question}</search>{self.protocol.format_observation(docs)}"
                    f"<answer>{answer}</answer>")
            trajectories.append(Trajectory(
                prompt_ids=[], text=text, answer=answer, num_searches=1, num_turns=2, stop_reason="answer",
                searches=[record.question],
            ))
        return trajectories


SCRIPTED_AGENTS = {"scripted:reader": ScriptedReader}
