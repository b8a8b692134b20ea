"""Agent protocols (Search-R1, AdaSearch, Glance-or-Gaze) and the batched multi-turn rollout engine."""

from seekrl.agents.actions import Action, neutralize, parse_action
from seekrl.agents.adasearch import AdaSearch
from seekrl.agents.gog import GlanceOrGaze
from seekrl.agents.protocol import Protocol, Reaction, TrajectoryState
from seekrl.agents.search_r1 import SearchR1

__all__ = [
    "Action", "AdaSearch", "GlanceOrGaze", "Protocol", "Reaction", "SearchR1", "TrajectoryState", "make_protocol",
    "neutralize", "parse_action",
]


def make_protocol(name: str, max_turns: int = 4, max_query_chars: int = 512, adasearch_mode: str = "adaptive"):
    """The protocol object for a recipe's `agent.protocol` (parametric = AdaSearch's parametric mode)."""
    if name == "search_r1":
        return SearchR1(max_turns, max_query_chars)
    if name == "adasearch":
        return AdaSearch(adasearch_mode, max_turns, max_query_chars)
    if name == "parametric":
        return AdaSearch("parametric", max_turns, max_query_chars)
    if name == "gog":
        return GlanceOrGaze(max_turns, max_query_chars)
    if name == "rag":
        from seekrl.agents.rag import RAG

        return RAG(max_turns, max_query_chars)
    raise ValueError(f"unknown protocol {name!r}; choose one of search_r1, adasearch, parametric, gog, rag")
