"""Reading a rollout's completion: its text, the final answer, the AdaSearch assessment, the number of searches.

A completion is what TRL passes to reward functions: a string, or (for conversational prompts) a list of chat
messages `{"role", "content"}` whose content is a string or a list of `{"type": "text", "text": ...}` parts.
In a seekrl rollout the completion holds the model's turns *and* what the environment appended: the
`<information>...</information>` observations, and after an invalid action Search-R1's corrective line ("My
previous action is invalid. ... put the answer between <answer> and </answer> ...", on a line of its own; every
seekrl protocol uses that form). Neither is the model's: nothing in them counts as an answer, an assessment or
an action, even though the corrective line quotes tags and retrieved documents may contain anything.

Only the completion is read, never the prompt: the Search-R1 prompt itself contains an example
`<answer> Beijing </answer>`, which must never be mistaken for the model's answer.

>>> extract_answer("<think>easy</think><answer> Paris </answer>")
'Paris'
>>> extract_answer("<search>capital</search><information>Doc 1 <answer>Rome</answer></information>") is None
True
"""

from __future__ import annotations

import re
from typing import Any

# An observation runs to its closing tag, or to the end of the text when the rollout stopped inside it.
_OBSERVATION = re.compile(r"<information>.*?(?:</information>|\Z)", re.DOTALL)
CORRECTIVE = re.compile(r"\nMy previous action is invalid\.[^\n]*\n")
_ASSESSMENT = re.compile(r"<assessment>(.*?)</assessment>", re.DOTALL)
# An action counts once its closing tag is there: the rollout engine executes a tool call at the closing tag.
_ACTION = re.compile(r"<(search|glance|gaze)>.*?</\1>", re.DOTALL)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (part.get("text") or "" for part in content if isinstance(part, dict) and part.get("type") == "text")
        return "".join(texts)
    if content is None:
        return ""
    raise TypeError(f"message content must be a string or a list of parts, got {type(content).__name__}")


def completion_text(completion: str | list[dict]) -> str:
    """The completion as one string; chat messages are concatenated in order.

    A message with a role other than "assistant" (a tool or user turn carrying an observation) is wrapped in
    `<information>...</information>` unless it already is, so that it reads as the observation it is.

    >>> completion_text([{"role": "assistant", "content": "<search>q</search>"},
    ...                  {"role": "tool", "content": "Doc 1(Title: T) text"}])
    '<search>q</search><information>Doc 1(Title: T) text</information>'
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, list):
        raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")
    pieces = []
    for message in completion:
        if not isinstance(message, dict):
            raise TypeError(f"chat messages must be dicts with 'role' and 'content', got {message!r}")
        text = _content_text(message.get("content"))
        if message.get("role", "assistant") != "assistant" and not text.lstrip().startswith("<information>"):
            text = f"<information>{text}</information>"
        pieces.append(text)
    return "".join(pieces)


def strip_observations(text: str) -> str:
    """The text without what the environment appended: `<information>` observations (an unclosed one up to the
    end) and corrective lines after invalid actions.

    >>> strip_observations("<search>q</search><information>Doc</information><answer>a</answer>")
    '<search>q</search><answer>a</answer>'
    >>> strip_observations("<answr>x</answr>\\nMy previous action is invalid. Use <answer> and </answer>.\\n")
    '<answr>x</answr>'
    """
    return CORRECTIVE.sub("", _OBSERVATION.sub("", text))


def extract_answer(completion: str | list[dict]) -> str | None:
    """The stripped text of the last complete `<answer>...</answer>` outside observations; None if there is none.

    An `<answer>` without its closing tag does not count (a truncated rollout has not answered).

    >>> extract_answer("<answer>Berlin</answer> wait, <answer> Bonn </answer>")
    'Bonn'
    >>> extract_answer("<answer>Bonn") is None
    True
    >>> extract_answer([{"role": "assistant", "content": "<answer>42</answer>"}])
    '42'
    """
    text = strip_observations(completion_text(completion))
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return text[start + len("<answer>") : end].strip()


def extract_assessment(completion: str | list[dict]) -> str | None:
    """The AdaSearch decision: "yes" or "no" from the first `<assessment>` outside observations, else None.

    Case and surrounding whitespace are ignored; anything other than yes/no is no decision.

    >>> extract_assessment("<think>I know this</think><assessment> Yes </assessment>")
    'yes'
    >>> extract_assessment("<assessment>maybe</assessment>") is None
    True
    """
    match = _ASSESSMENT.search(strip_observations(completion_text(completion)))
    if match is None:
        return None
    decision = match.group(1).strip().lower()
    return decision if decision in ("yes", "no") else None


def count_searches(completion: str | list[dict]) -> int:
    """Tool calls made: closed `<search>`, `<glance>` and `<gaze>` actions outside observations.

    >>> count_searches("<search>a</search><information>x</information><gaze>[0, 0, 10, 10]</gaze><answer>b</answer>")
    2
    """
    return len(_ACTION.findall(strip_observations(completion_text(completion))))
