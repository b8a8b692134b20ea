"""What a protocol is: prompts, the action grammar, and what each action does to a trajectory.

The rollout engine is protocol-agnostic. After every turn it asks the protocol to `react` to the parsed action,
and gets back a `Reaction`: finish (with an answer or without), run a search, or append a fixed text (a
corrective observation after an invalid action, or nothing at all to let the policy continue). The search
results come back through `format_observation`. All strings the policy sees live in the protocol modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seekrl.agents.actions import Action, neutralize, parse_action


@dataclass
class TrajectoryState:
    """What a protocol may read and update about one trajectory while it runs."""

    num_searches: int = 0
    num_turns: int = 0
    tool_failures: int = 0
    decision: str | None = None
    answer: str | None = None
    searches: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reaction:
    """What the engine does after a turn.

    kind: `finish` (trajectory over; `answer` may be None), `search` (run `query`, then `format_observation`),
    `text` (append `text`, which may be empty, and keep generating). `tool_failure` marks an invalid action.
    """

    kind: str
    answer: str | None = None
    query: str = ""
    text: str = ""
    tool_failure: bool = False


def format_documents(docs: list[dict]) -> str:
    """Search-R1's passage list: `Doc i(Title: T) text` per line, untrusted text neutralised."""
    lines = []
    for i, doc in enumerate(docs, 1):
        contents = str(doc.get("contents", ""))
        title, _, text = contents.partition("\n")
        lines.append(f"Doc {i}(Title: {neutralize(title.strip().strip(chr(34)))}) {neutralize(text.strip())}")
    return "\n".join(lines) + ("\n" if lines else "")


class Protocol:
    """Base protocol: Search-R1's observation format and the shared search/answer reactions."""

    name = "base"
    action_tags: tuple[str, ...] = ("search", "answer")
    uses_tools = True
    invalid_text = ""
    search_failed_text = ""

    def __init__(self, max_turns: int = 4, max_query_chars: int = 512):
        self.max_turns = max_turns
        self.max_query_chars = max_query_chars

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Generation stops at the first closing action tag."""
        return tuple(f"</{tag}>" for tag in self.action_tags)

    def messages(self, question: str) -> list[dict]:
        """Chat messages of the prompt for one question (rendered with the tokenizer's chat template)."""
        raise NotImplementedError

    def parse(self, turn: str) -> Action:
        return parse_action(turn, self.action_tags, self.max_query_chars)

    def format_observation(self, docs: list[dict]) -> str:
        return f"\n\n<information>{format_documents(docs)}</information>\n\n"

    def react(self, action: Action, state: TrajectoryState, ended: bool) -> Reaction:
        """Decide what happens after `action`. `ended`: the turn stopped at EOS or a length limit."""
        if action.kind == "answer":
            return Reaction("finish", answer=action.content)
        if action.kind == "none" or (ended and action.is_invalid):
            # The policy stopped without a complete action: nothing more to do.
            return Reaction("finish")
        if action.kind == "search" and self.uses_tools:
            if state.num_searches >= self.max_turns:
                # Out of tool calls: the episode ends unanswered (the policy was told the limit in its prompt).
                return Reaction("finish")
            return Reaction("search", query=action.content)
        return Reaction("text", text=self.invalid_text, tool_failure=True)
