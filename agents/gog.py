"""Glance-or-Gaze: the action grammar, prompts and image actions of the GoG protocol.

A vision-language policy glances at the whole image, then answers, searches text (`<search>q</search>`, through
the rollout engine's retrieval client, as in Search-R1), searches the knowledge base with the whole image
(`<glance></glance>`), or gazes at a region (`<gaze>[x1, y1, x2, y2]</gaze>`) and searches with the crop. Every
string the policy sees is in this module's constants.

Image actions, as executed here (the paper, arXiv 2601.13942, has no code; these are this implementation's
choices):
- gaze coordinates are 0-1000, relative to the image width and height (Qwen2-VL style). `parse_bbox` accepts
  `[x1, y1, x2, y2]` (also with parentheses or no brackets, integers or decimals), clamps every coordinate into
  [0, 1000] and rounds; a box that is empty after clamping (x1 >= x2 or y1 >= y2: reversed, or wholly outside
  the image) is an invalid action. The format reward (seekrl.rewards) stays strict about out-of-range
  coordinates; the environment is lenient so that an almost-right box still shows something;
- the crop is taken by seekrl.envs.image_kb.crop: scaled to pixels, clamped, each side at least `MIN_SIDE` = 28
  pixels. It is searched as an image (the same pixels in-process or over HTTP);
- `<glance>` searches the whole image; any text inside it is ignored (the format reward penalises it);
- every glance and gaze counts as a search against `max_turns`, like `<search>`;
- observation: `<information>Image i(Title: T) caption ...</information>`, titles and captions neutralised
  (retrieved text is untrusted);
- reflection: when the best match of a gaze scores below `reflect_below` (cosine similarity; 0.8 is calibrated
  for the offline descriptor: an exact tile of a seekrl.envs.image_world composite scores >= 0.98, a region
  spanning several tiles <= 0.75), the observation ends with `REFLECT_GAZE`, asking for another region. A weak
  glance gets `REFLECT_GLANCE`, pointing at a gaze. CLIP-style encoders score on another scale: set
  `reflect_below` for them;
- a search that fails (server down, bad request) gets `IMAGE_SEARCH_FAILED` and counts as a tool failure; with
  no image searcher or no image in the state, image actions get `IMAGE_SEARCH_UNAVAILABLE` (a tool failure).

Where a trajectory carries its images (for the VLM rollout engine): `GlanceOrGaze.new_state(image)` returns a
`GoGState` holding the question's image (`state.image`); `state.images` is everything the policy is shown, in
order: the question's image first, then, with `show_crops=True`, each gaze crop. A reaction that adds crops
appends them to `state.images`; the engine inserts them (one image placeholder each) right after that
reaction's observation text. `state.gazes` and `state.image_results` record each image search. The text-only
engine creates a plain `TrajectoryState` (no image): image actions then get `IMAGE_SEARCH_UNAVAILABLE`.

>>> parse_bbox("[120, 340, 560, 780]")
(120, 340, 560, 780)
>>> parse_bbox("[560, 340, 120, 780]") is None
True
>>> parse_bbox("[-20, 0, 1200.4, 500.6]")  # clamped, rounded
(0, 0, 1000, 501)
>>> format_image_results([{"id": "a", "title": "Kalomir", "caption": "<b>Kalomir</b>, first recorded in Vasno."}])
'Image 1(Title: Kalomir) &lt;b&gt;Kalomir&lt;/b&gt;, first recorded in Vasno.\\n'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from seekrl.agents.actions import Action, neutralize
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
IMAGE_SEARCH_FAILED = "\n\n<information>The image search did not answer. Try again or answer.</information>\n\n"
NO_IMAGE_RESULTS = "No image in the knowledge base matches.\n"
REFLECT_GAZE = ("Nothing in the knowledge base matches this region closely (best similarity {score:.2f}): it may "
                "be the wrong region. Gaze at another region, or search text.\n")
REFLECT_GLANCE = ("Nothing in the knowledge base matches the whole image closely (best similarity {score:.2f}). "
                  "Gaze at the region the question is about.\n")
CROP_SHOWN = "The region follows as a new image.\n"

REFLECT_BELOW = 0.8
IMAGE_TOPK = 3
MAX_CAPTION_CHARS = 300

_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BBOX = re.compile(r"^\s*[\[(]?" + ",".join([_NUM] * 4) + r"[\])]?\s*$")


def parse_bbox(text: str) -> tuple[int, int, int, int] | None:
    """`[x1, y1, x2, y2]` in 0-1000 coordinates, clamped into [0, 1000] and rounded; None when it is not four
    numbers or the clamped box is empty (x1 >= x2 or y1 >= y2)."""
    m = _BBOX.match(text)
    if not m:
        return None
    x1, y1, x2, y2 = (min(1000, max(0, round(float(v)))) for v in m.groups())
    if not (x1 < x2 and y1 < y2):
        return None
    return x1, y1, x2, y2


def format_image_results(entries: list[dict]) -> str:
    """`Image i(Title: T) caption` per entry, one per line; untrusted text neutralised, captions cut."""
    lines = []
    for i, entry in enumerate(entries, 1):
        title = neutralize(" ".join(str(entry.get("title", "")).split()))
        caption = neutralize(" ".join(str(entry.get("caption", "")).split())[:MAX_CAPTION_CHARS])
        lines.append(f"Image {i}(Title: {title}) {caption}")
    return "\n".join(lines) + ("\n" if lines else "")


@dataclass
class GoGState(TrajectoryState):
    """A GoG trajectory's state: the question's image and what the image actions did (see the module notes)."""

    image: Any = None  # the question's image (RGB PIL image)
    images: list = field(default_factory=list)  # shown to the policy, in order: the image, then shown crops
    gazes: list = field(default_factory=list)  # the clamped 0-1000 box of each gaze
    image_results: list = field(default_factory=list)  # the entries of each glance/gaze, in order


class GlanceOrGaze(Protocol):
    """The GoG protocol. `image_searcher` has `image_search(images, topk) -> list[list[{id, title, caption,
    score}]]` and raises seekrl.envs.client.ToolError on failure (`InProcessImageClient`, `HTTPClient`)."""

    name = "gog"
    action_tags = ("search", "glance", "gaze", "answer")
    invalid_text = INVALID_ACTION
    search_failed_text = SEARCH_FAILED

    def __init__(self, max_turns: int = 4, max_query_chars: int = 512, image_searcher=None,
                 image_topk: int = IMAGE_TOPK, reflect_below: float | None = REFLECT_BELOW, show_crops: bool = False,
                 min_side: int | None = None):
        super().__init__(max_turns, max_query_chars)
        self.image_searcher = image_searcher
        self.image_topk = image_topk
        self.reflect_below = reflect_below
        self.show_crops = show_crops
        self.min_side = min_side

    def messages(self, question: str) -> list[dict]:
        return [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": PROMPT.format(question=question.strip())}]}]

    def new_state(self, image=None) -> GoGState:
        """The state of a trajectory about `image` (PIL image, encoded bytes or a path; None: no image)."""
        if image is None:
            return GoGState()
        from seekrl.envs.image_kb import as_rgb

        rgb = as_rgb(image)
        return GoGState(image=rgb, images=[rgb])

    def query_image(self, action: Action, state: TrajectoryState):
        """What an image action searches: (image, bbox or None), or the Reaction when there is nothing to search."""
        bbox = None
        if action.kind == "gaze":
            bbox = parse_bbox(action.content)
            if bbox is None:
                return Reaction("text", text=self.invalid_text, tool_failure=True)
        image = getattr(state, "image", None)
        if self.image_searcher is None or image is None:
            return Reaction("text", text=IMAGE_SEARCH_UNAVAILABLE, tool_failure=True)
        if state.num_searches >= self.max_turns:
            return Reaction("finish")
        if bbox is None:
            return image, None
        from seekrl.envs.image_kb import MIN_SIDE, crop

        return crop(image, bbox, self.min_side or MIN_SIDE), bbox

    def image_observation(self, entries: list[dict], gaze: bool) -> str:
        """The observation text for the entries of one glance (`gaze` False) or gaze."""
        body = format_image_results(entries) if entries else NO_IMAGE_RESULTS
        best = entries[0]["score"] if entries else float("-inf")
        if self.reflect_below is not None and best < self.reflect_below:
            body += (REFLECT_GAZE if gaze else REFLECT_GLANCE).format(score=max(best, -1.0))
        if gaze and self.show_crops:
            body += CROP_SHOWN
        return f"\n\n<information>{body}</information>\n\n"

    def react(self, action: Action, state: TrajectoryState, ended: bool) -> Reaction:
        if action.kind not in ("glance", "gaze"):
            return super().react(action, state, ended)
        from seekrl.envs.client import ToolError

        query = self.query_image(action, state)
        if isinstance(query, Reaction):
            return query
        image, bbox = query
        state.num_searches += 1
        state.searches.append("<glance></glance>" if bbox is None else f"<gaze>{list(bbox)}</gaze>")
        if bbox is not None and isinstance(state, GoGState):
            state.gazes.append(bbox)
        try:
            entries = self.image_searcher.image_search([image], self.image_topk)[0]
        except ToolError:
            return Reaction("text", text=IMAGE_SEARCH_FAILED, tool_failure=True)
        if isinstance(state, GoGState):
            state.image_results.append(entries)
            if bbox is not None and self.show_crops:
                state.images.append(image)
        return Reaction("text", text=self.image_observation(entries, gaze=bbox is not None))
