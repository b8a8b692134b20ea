"""Protocol format checking: is a completion a well-formed trajectory of its agent protocol?

A completion is read as a sequence of tag blocks (`<tag>content</tag>`); between blocks only whitespace is
allowed, and at the very end only whitespace and end-of-turn markers (`<|im_end|>`, `<|endoftext|>`, `</s>`,
`<|eot_id|>`). Each `<information>` observation the environment appended must follow a tool call; its content
is opaque (retrieved text may contain anything, including tag-like strings). Inside the model's own blocks no
other protocol tag may open. The block order each protocol accepts ("think?" = an optional `<think>` block, or a
required one with `require_think=True`, which is Search-R1's own stricter check):

- search_r1: (think? search information)* think? answer
- adasearch (mode "adaptive", the default): think? assessment, then after "yes": think? answer (no tools:
  parametric knowledge); after "no": the search_r1 loop. The other modes of `agent.adasearch_mode`:
  "decide": think? assessment (the trajectory ends there); "parametric": think? answer; "search": the search_r1
  loop
- gog: (think? (search | glance | gaze) information)* think? answer

Content rules: answer and search non-empty; assessment "yes" or "no" (case and whitespace ignored);
glance empty; gaze `[x1, y1, x2, y2]` of numbers with 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000.
So there is exactly one answer, it is the last block, and nothing follows it. A trajectory in which the
environment had to append a corrective line after an invalid action is not well formed.

>>> format_error("<think>need facts</think><search>capital of France</search>"
...              "<information>Doc 1(Title: Paris) Paris is the capital.</information><answer>Paris</answer>")
>>> format_error("<answer>Paris</answer> because I know", protocol="search_r1")
"text outside tags: 'because I know'"
"""

from __future__ import annotations

import difflib
import re

from .answers import CORRECTIVE

PROTOCOLS = ("search_r1", "adasearch", "gog")
ADASEARCH_MODES = ("adaptive", "decide", "parametric", "search")

_TAGS = {
    "search_r1": ("think", "search", "information", "answer"),
    "adasearch": ("think", "assessment", "search", "information", "answer"),
    "gog": ("think", "search", "glance", "gaze", "information", "answer"),
}
_TAG_PATTERNS = {p: re.compile(r"<(/?)(" + "|".join(tags) + r")>") for p, tags in _TAGS.items()}
# One letter per block so that the order of a whole trajectory is checked by one regular expression.
_LETTER = {
    "think": "T",
    "search": "S",
    "information": "I",
    "answer": "A",
    "assessment": "D",
    "glance": "G",
    "gaze": "Z",
}
_TRAILING_END_MARKERS = re.compile(r"(?:\s|<\|im_end\|>|<\|endoftext\|>|</s>|<\|eot_id\|>)+\Z")
_NUMBER = r"\s*(\d+(?:\.\d+)?)\s*"
_BBOX = re.compile(r"\s*\[" + ",".join([_NUMBER] * 4) + r"\]\s*")


def _grammar(protocol: str, mode: str, decision: str | None, require_think: bool) -> re.Pattern:
    t = "T" if require_think else "T?"
    search_loop = f"(?:{t}SI)*{t}A"
    if protocol == "search_r1" or (protocol == "adasearch" and mode == "search"):
        return re.compile(search_loop)
    if protocol == "gog":
        return re.compile(f"(?:{t}[SGZ]I)*{t}A")
    if mode == "decide":
        return re.compile(f"{t}D")
    if mode == "parametric":
        return re.compile(f"{t}A")
    # adaptive: "yes" means the model's own knowledge suffices, so that branch has no tool calls.
    return re.compile(f"{t}D{t}A" if decision == "yes" else f"{t}D{search_loop}")


def check_protocol(protocol: str, mode: str = "adaptive") -> None:
    """Raise a ValueError naming the closest valid value when `protocol` (or the AdaSearch `mode`) is unknown.

    >>> check_protocol("adasearh")
    Traceback (most recent call last):
    ...
    ValueError: unknown protocol 'adasearh'; did you mean 'adasearch'? (one of search_r1, adasearch, gog)
    """
    for what, value, valid in (("protocol", protocol, PROTOCOLS), ("AdaSearch mode", mode, ADASEARCH_MODES)):
        if value not in valid:
            close = difflib.get_close_matches(str(value), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            raise ValueError(f"unknown {what} {value!r}{hint} (one of {', '.join(valid)})")


def _blocks(text: str, protocol: str) -> list[tuple[str, str]] | str:
    """Split into (tag, content) blocks, or return the reason the text is not a sequence of blocks."""
    tag_re = _TAG_PATTERNS[protocol]
    blocks: list[tuple[str, str]] = []
    pos = 0
    while True:
        opening = tag_re.search(text, pos)
        between = text[pos : opening.start() if opening else len(text)]
        if between.strip():
            return f"text outside tags: {between.strip()[:60]!r}"
        if opening is None:
            return blocks
        closing_slash, tag = opening.groups()
        if closing_slash:
            return f"</{tag}> without an opening <{tag}>"
        if tag == "information":
            end = text.find("</information>", opening.end())
            if end < 0:
                return "unclosed <information>"
            blocks.append((tag, text[opening.end() : end]))
            pos = end + len("</information>")
            continue
        closing = tag_re.search(text, opening.end())
        if closing is None or closing.groups() != ("/", tag):
            found = f"<{closing.group(1)}{closing.group(2)}>" if closing else "the end"
            return f"<{tag}> not closed before {found}"
        blocks.append((tag, text[opening.end() : closing.start()]))
        pos = closing.end()


def _bad_content(tag: str, content: str) -> str | None:
    if tag in ("answer", "search") and not content.strip():
        return f"empty <{tag}>"
    if tag == "assessment" and content.strip().lower() not in ("yes", "no"):
        return f"<assessment> must be yes or no, got {content.strip()[:30]!r}"
    if tag == "glance" and content.strip():
        return "<glance> must be empty: <glance></glance>"
    if tag == "gaze":
        match = _BBOX.fullmatch(content)
        if match is None:
            return f"<gaze> must be [x1, y1, x2, y2], got {content.strip()[:40]!r}"
        x1, y1, x2, y2 = (float(v) for v in match.groups())
        if not (0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000):
            return f"<gaze> box {content.strip()} must satisfy 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000"
    return None


def format_error(
    text: str, protocol: str = "search_r1", require_think: bool = False, mode: str = "adaptive"
) -> str | None:
    """None when `text` is a well-formed trajectory of `protocol`, else the first reason it is not.

    `mode` is the AdaSearch mode (`agent.adasearch_mode`); the other protocols ignore it.

    >>> format_error("<assessment>yes</assessment><search>q</search><information>d</information>"
    ...              "<answer>a</answer>", protocol="adasearch")
    'block order assessment search information answer is not valid for adasearch after assessment yes'
    >>> format_error("<glance></glance><information>d</information><gaze>[500, 0, 400, 10]</gaze>"
    ...              "<information>d</information><answer>a</answer>", protocol="gog")
    '<gaze> box [500, 0, 400, 10] must satisfy 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000'
    """
    check_protocol(protocol, mode)
    corrective = CORRECTIVE.search(text)
    if corrective:
        return f"an invalid action was corrected by the environment: {corrective.group(0).strip()[:60]!r}"
    blocks = _blocks(_TRAILING_END_MARKERS.sub("", text), protocol)
    if isinstance(blocks, str):
        return blocks
    for tag, content in blocks:
        problem = _bad_content(tag, content)
        if problem:
            return problem
    decision = next((c.strip().lower() for tag, c in blocks if tag == "assessment"), None)
    order = "".join(_LETTER[tag] for tag, _ in blocks)
    if _grammar(protocol, mode, decision, require_think).fullmatch(order) is None:
        after = f" after assessment {decision}" if decision else ""
        return f"block order {' '.join(tag for tag, _ in blocks) or '(none)'} is not valid for {protocol}{after}"
    return None
