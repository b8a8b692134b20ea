"""Glance-or-Gaze (text parts): the action grammar and prompts of the GoG protocol.

A vision-language policy glances at the whole image, then answers, searches text, searches the whole image
(`<glance></glance>`), or gazes at a region (`<gaze>[x1, y1, x2, y2]</gaze>`, coordinates 0-1000 relative to the
image) and searches the crop. This module holds the strings and the parsing; the image search itself and the
VLM rollouts arrive with the Glance-or-Gaze issue, so until then an image action gets a tool-failure
observation saying image search is unavailable.

>>> parse_bbox("[120, 340, 560, 780]")
(120, 340, 560, 780)
>>> parse_bbox("[560, 340, 120, 780]") is None
True
"""

from __future__ import annotations

import re

from seekrl.agents.actions import Action
from seekrl.agents.protocol import Protocol, Reaction, TrajectoryState
from seekrl.agents.search_r1 import SEARCH_FAILED

PROMPT = (
    "Answer the question about the image. Reason inside <think> and </think> first every time you get new "
    "information. If the image alone is not enough, you can search: <search> query </search> searches text, "
    "<glance></glance> searches with the whole image, and <gaze>[x1, y1, x2, y2]</gaze> searches with the region "
    "of the image inside that box (coordinates from 0 to 1000, relative to the image width and height). Results "
    "come back between <information> and </information>. If a region gives nothing useful, gaze at another. When "
    "you know the answer, provide it inside <answer> and </answer>, without detailed illustrations. For example, "
    "<answer> Beijing </answer>. Question: {question}\n"
)

INVALID_ACTION = (
    "\nMy previous action is invalid. I can search text with <search> query </search>, the whole image with "
    "<glance></glance>, a region with <gaze>[x1, y1, x2, y2]</gaze> (0 <= x1 < x2 <= 1000, 0 <= y1 < y2 <= 1000), "
    "or answer with <answer> and </answer>. Let me try again.\n"
)

IMAGE_SEARCH_UNAVAILABLE = "\n\n<information>Image search is not available here.</information>\n\n"

_BBOX = re.compile(r"^\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]$")


def parse_bbox(text: str) -> tuple[int, int, int, int] | None:
    """`[x1, y1, x2, y2]` with 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000 (rounded to ints), else None."""
    m = _BBOX.match(text.strip())
    if not m:
        return None
    x1, y1, x2, y2 = (round(float(v)) for v in m.groups())
    if not (0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000):
        return None
    return x1, y1, x2, y2


class GlanceOrGaze(Protocol):
    name = "gog"
    action_tags = ("search", "glance", "gaze", "answer")
    invalid_text = INVALID_ACTION
    search_failed_text = SEARCH_FAILED

    def messages(self, question: str) -> list[dict]:
        return [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": PROMPT.format(question=question.strip())}]}]

    def react(self, action: Action, state: TrajectoryState, ended: bool) -> Reaction:
        if action.kind == "gaze" and parse_bbox(action.content) is None:
            return Reaction("text", text=self.invalid_text, tool_failure=True)
        if action.kind in ("glance", "gaze"):
            return Reaction("text", text=IMAGE_SEARCH_UNAVAILABLE, tool_failure=True)
        return super().react(action, state, ended)
