"""RAG baseline: retrieve top-k passages for the question once, then answer without further tools.

The standard "RAG" row of the Search-R1 / AdaSearch tables. Retrieval happens before generation, so the passages
are part of the prompt: `prepare(questions, client, topk)` runs one batched search for all questions and keeps
the documents, and `messages(question)` renders the prompt with them. The policy may only `<answer>`; a
`<search>` gets the corrective text and counts as a tool failure.

>>> class OneDocClient:  # any retrieval client: search(queries, topk) -> documents per query
...     def search(self, queries, topk): return [[{"id": "7", "contents": '"Ulm"\\nEinstein was born in Ulm.'}]]
>>> p = RAG()
>>> p.prepare(["Where was Einstein born?"], OneDocClient(), topk=1)
[[{'id': '7', 'contents': '"Ulm"\\nEinstein was born in Ulm.'}]]
>>> "Doc 1(Title: Ulm) Einstein was born in Ulm." in p.messages("Where was Einstein born?")[0]["content"]
True
"""

from __future__ import annotations

from seekrl.agents.protocol import Protocol, format_documents

PROMPT = (
    "Answer the given question using the retrieved documents below and your own knowledge. Reason inside "
    "<think> and </think>, then provide the answer inside <answer> and </answer>, without detailed "
    "illustrations. For example, <answer> Beijing </answer>.\n\nDocuments:\n{documents}\nQuestion: {question}\n"
)

ANSWER_ONLY = (
    "\nMy previous action is invalid. No search engine is available; I should put the answer between <answer> "
    "and </answer>.\n"
)


class RAG(Protocol):
    name = "rag"
    action_tags = ("search", "answer")
    uses_tools = False
    invalid_text = ANSWER_ONLY

    def __init__(self, max_turns: int = 4, max_query_chars: int = 512):
        super().__init__(max_turns, max_query_chars)
        self._documents: dict[str, list[dict]] = {}

    def prepare(self, questions: list[str], client, topk: int) -> list[list[dict]]:
        """Retrieve `topk` passages for every question of a batch (one call); returns them in question order.

        Raises the client's `ToolError` when retrieval fails: a RAG baseline without its documents would
        silently become the parametric baseline.
        """
        if client is None:
            raise ValueError("the rag protocol needs a retriever (an index directory or a /retrieve URL)")
        unique = list(dict.fromkeys(q.strip() for q in questions))
        results = client.search(unique, topk)
        # Only the current batch's passages are kept: a long evaluation does not accumulate them.
        self._documents = dict(zip(unique, results, strict=True))
        return [self._documents[q.strip()] for q in questions]

    def documents(self, question: str) -> list[dict]:
        """The passages retrieved for `question` by `prepare`."""
        try:
            return self._documents[question.strip()]
        except KeyError:
            raise KeyError(f"no documents retrieved for {question!r}; call prepare() with it first") from None

    def messages(self, question: str) -> list[dict]:
        docs = format_documents(self.documents(question))
        return [{"role": "user", "content": PROMPT.format(documents=docs, question=question.strip())}]
