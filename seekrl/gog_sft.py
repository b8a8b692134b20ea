"""Glance-or-Gaze stage 1: reflective SFT on Glance -> Decision -> Gaze (-> reflect) trajectories.

The paper (arXiv 2601.13942) has no code; these are this implementation's choices.

Trajectories come from one of two sources, then are filtered and rendered exactly as the VLM rollout engine
(seekrl.agents.vlm_rollout) would produce them, so SFT trains the same token sequences RL later samples:

- scripted (`scripted_turns`), when the knowledge base knows the answer region: a record with an answer region
  (`bbox`, 0-1000, e.g. the tile of a seekrl.envs.image_world composite) is answered by gazing at that region;
  a record without one by glancing at the whole image. The decision is written as a short `<think>` (the glance
  at the image in the prompt: which region does the question ask about?). Reflective variants, drawn with
  `mix` probabilities: `glance_first` (glance, the weak match prompts a gaze, then gaze at the region) and
  `wrong_region` (gaze first at a region that misses the answer region, the centre of a composite, whose weak
  match makes the observation ask for another region; reflect, gaze at the right one). The
  answer is read from the observation: the first gold answer that occurs in the retrieved entries' titles or
  captions (normalised, as SubEM); when none occurs the script has no answer and the filter drops it;
- teacher (`teacher_turns`): any OpenAI-compatible chat-completions endpoint serving a VLM (vLLM, SGLang, a
  hosted API; the user names the URL and model). The teacher gets the GoG prompt with the image as a
  base64 data URL; after each of its turns (generation stops at a closing action tag; a stopped tag is closed
  again, since OpenAI servers drop the stop string) the action is executed against the same knowledge base and
  the observation goes back as a user message (with the crop as a second image when crops are shown), until it
  answers or runs out of turns. Its replies are untrusted: parsed with the protocol's own parser, cut to
  `max_reply_chars`, and anything malformed ends the trajectory (then dropped by the filter);
- filter (`filter_reason`): keep a trajectory only if it ends in an answer that is correct (EM against the gold
  answers, `subem=True` for SubEM), every action executed without a tool failure, and the crop is sensible:
  every gaze box is valid, and when the record has an answer region the last gaze overlaps it with IoU >=
  `min_iou` (0.5), while a wrong-region gaze before it is allowed (that is the reflection);
- render (`render_gog_trajectory`): prompt through the processor (image placeholder tokens), then each policy
  turn (trained, `labels` = ids), each observation text and each crop shown (placeholder tokens) untrained
  (`labels` -100). The images of the example (question image, then crops, as PNG bytes) travel with it and the
  collator (`GoGCollator`) runs them through the image processor per batch and builds `mm_token_type_ids`, so
  the model computes the same M-RoPE positions as during the rollout;
- training (`run_gog_sft`): TRL `SFTTrainer` with that collator on pre-tokenised examples. Published settings
  (the GPU recipe): LoRA rank 8, 3 epochs, learning rate 1e-4, global batch 8. LoRA adapters are merged into
  the saved model, so the pass-rate and GRPO stages load a plain checkpoint. CPU runs train in float32.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

IGNORE = -100
TILE_WORDS = {(0, 0, 500, 500): "top-left", (500, 0, 1000, 500): "top-right", (0, 500, 500, 1000): "bottom-left",
              (500, 500, 1000, 1000): "bottom-right"}
CENTRE = (250, 250, 750, 750)
# What the scripts and observations say, for tokenizers trained offline (seekrl.testing.build_gog_world_model).
SCRIPT_PHRASES = (
    "<think> The question asks about the top-left quarter. I gaze at it. </think><gaze>[0, 0, 500, 500]</gaze>",
    "<think> I gaze at the middle of the picture. </think><gaze>[250, 250, 750, 750]</gaze>",
    "<think> Nothing there matches what the question asks about, the bottom-right quarter. I gaze at it. </think>"
    "<gaze>[500, 500, 1000, 1000]</gaze>",
    "<think> I first search with the whole picture. </think><glance></glance>",
    "<think> The whole picture does not match what the question asks about, the top-right quarter. I gaze at it. "
    "</think><gaze>[500, 0, 1000, 500]</gaze>",
    "<think> The region shows Kalomir. Kalomir, first recorded in Vasno. </think><answer> Kalomir </answer>",
    "<think> The question is about the whole picture. I search with it. </think><glance></glance>",
    "<think> The knowledge base says Spain. </think><answer> Spain </answer>",
    "<information>Image 1(Title: Kalomir) Kalomir, first recorded in Vasno.",
    "Nothing in the knowledge base matches this region closely (best similarity 0.52): it may be the wrong region. "
    "Gaze at another region, or search text.",
    "Nothing in the knowledge base matches the whole image closely (best similarity 0.61). Gaze at the region the "
    "question is about.", "The region follows as a new image.",
)
DEFAULT_MIX = {"gaze": 0.5, "glance_first": 0.25, "wrong_region": 0.25}


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def region_words(bbox) -> str:
    """How a script names a region: a quarter's name, else its box."""
    if tuple(bbox) == CENTRE:
        return "the middle of the picture"
    return f"the {TILE_WORDS[tuple(bbox)]} quarter" if tuple(bbox) in TILE_WORDS else f"the region {list(bbox)}"


def gold_in_entries(entries: list[dict], golds: list[str]) -> str | None:
    """The first gold answer whose normalised form occurs in a retrieved entry (title + caption), best entry first."""
    from seekrl.rewards import normalize_answer

    for entry in entries:
        text = f" {normalize_answer(str(entry.get('title', '')) + ' ' + str(entry.get('caption', '')))} "
        for gold in golds:
            norm = normalize_answer(gold)
            if norm and f" {norm} " in text:
                return gold
    return None


def distractor_box(bbox) -> tuple[int, int, int, int]:
    """A region that misses `bbox` (IoU < 0.2): the centre of the image, which straddles all four quarters of a
    composite (so the knowledge base matches it weakly and the observation asks for another region), else the
    quarter farthest from `bbox`."""
    options = [CENTRE] + sorted(TILE_WORDS, key=lambda q: iou(q, bbox))
    return next((box for box in options if iou(box, bbox) < 0.2), options[1])


# --- rendering ------------------------------------------------------------------------------------------------

@dataclass
class Rendered:
    """One rendered trajectory and what its actions did."""

    input_ids: list[int]
    labels: list[int]
    images: list = field(default_factory=list)  # PIL images in token order
    answer: str | None = None
    actions: list[str] = field(default_factory=list)
    gazes: list = field(default_factory=list)
    image_results: list = field(default_factory=list)
    tool_failures: int = 0
    finished: bool = False

    def example(self, **meta) -> dict:
        return {"input_ids": self.input_ids, "labels": self.labels,
                "image_bytes": [png_bytes(image) for image in self.images], **meta}


def render_gog_trajectory(processor, protocol, question: str, image, turns: list[str], client=None,
                          topk: int = 3) -> Rendered:
    """Token ids and labels of one GoG trajectory (`turns`: the policy's texts), rendered as the VLM rollout
    engine would: observations and shown crops untrained. Actions run against `protocol.image_searcher` (glance,
    gaze) and `client` (text search); a turn that is not a valid action is kept and counted as a tool failure."""
    from seekrl.agents.vlm_rollout import image_placeholder, render_vl_prompt

    ids, _, _ = render_vl_prompt(processor, protocol, question, image)
    tok = processor.tokenizer
    state = protocol.new_state(image)
    out = Rendered(input_ids=list(ids), labels=[IGNORE] * len(ids), images=[state.image])
    for i, turn in enumerate(turns):
        piece = tok(turn, add_special_tokens=False)["input_ids"]
        out.input_ids += piece
        out.labels += piece
        shown = len(state.images)
        searches = state.num_searches
        action = protocol.parse(turn)
        reaction = protocol.react(action, state, ended=False)
        if reaction.tool_failure:
            out.tool_failures += 1
        if action.kind in ("glance", "gaze") and state.num_searches > searches:
            out.actions.append(action.kind)
        if reaction.kind == "finish":
            out.answer, out.finished = reaction.answer, reaction.answer is not None
            break
        if reaction.kind == "search":
            out.actions.append("search")
            state.num_searches += 1
            from seekrl.envs.client import ToolError

            try:
                docs = client.search([reaction.query], topk)[0] if client is not None else None
            except ToolError:
                docs = None
            if docs is None:
                out.tool_failures += 1
            text = protocol.format_observation(docs) if docs is not None else protocol.search_failed_text
        else:
            text = reaction.text
        obs = tok(text, add_special_tokens=False)["input_ids"] if text else []
        for crop in state.images[shown:]:
            crop_ids, _, _ = image_placeholder(processor, crop)
            obs += crop_ids
            out.images.append(crop)
        out.input_ids += obs
        out.labels += [IGNORE] * len(obs)
    out.gazes = list(state.gazes)
    out.image_results = list(state.image_results)
    return out


# --- sources --------------------------------------------------------------------------------------------------

def scripted_turns(protocol, question: str, image, golds: list[str], bbox=None,
                   variant: str = "gaze") -> list[str] | None:
    """The turns of one scripted trajectory (module docstring), or None when the knowledge base does not return
    a gold answer for the answer region. Runs the image searches it needs (cached by the knowledge base)."""
    state = protocol.new_state(image)
    target = tuple(bbox) if bbox is not None else None

    def search(box) -> list[dict]:
        from seekrl.agents.actions import Action

        protocol.react(Action("gaze" if box else "glance", str(list(box)) if box else ""), state, ended=False)
        return state.image_results[-1] if state.image_results else []

    turns = []
    if target is None:
        found = gold_in_entries(search(None), golds)
        if found is None:
            return None
        turns.append("<think> The question is about the whole picture. I search with it. </think><glance></glance>")
        return turns + [f"<think> The knowledge base says {found}. </think><answer> {found} </answer>"]
    where = region_words(target)
    if variant == "glance_first":
        turns.append("<think> I first search with the whole picture. </think><glance></glance>")
        entries = search(None)
        if gold_in_entries(entries[:1], golds) is None:
            turns.append(f"<think> The whole picture does not match what the question asks about, {where}. I gaze "
                         f"at it. </think><gaze>{list(target)}</gaze>")
        else:
            variant = "gaze_done"
    elif variant == "wrong_region":
        wrong = distractor_box(target)
        turns.append(f"<think> I gaze at {region_words(wrong)}. </think><gaze>{list(wrong)}</gaze>")
        if gold_in_entries(search(wrong)[:1], golds) is not None:
            return None  # the wrong region found the answer: not a reflection
        turns.append(f"<think> Nothing there matches what the question asks about, {where}. I gaze at it. "
                     f"</think><gaze>{list(target)}</gaze>")
    else:
        turns.append(f"<think> The question asks about {where}. I gaze at it. </think><gaze>{list(target)}</gaze>")
    entries = state.image_results[-1] if variant == "gaze_done" else search(target)
    found = gold_in_entries(entries, golds)
    if found is None:
        return None
    return turns + [answer_turn(entries[0], found)]


def answer_turn(entry: dict, answer: str) -> str:
    """A script's last turn: restate the best entry as the observation showed it (title, then caption;
    neutralised, since retrieved text is untrusted), then answer. The restated caption puts the answer after
    the same words as in the observation, so that reading it is a copy (on the quickstart world, with its
    base model's tokenizer and untied output layer: seekrl.testing.build_gog_world_model)."""
    from seekrl.agents.actions import neutralize
    from seekrl.agents.gog import MAX_CAPTION_CHARS

    title = neutralize(" ".join(str(entry.get("title", "")).split()))
    caption = neutralize(" ".join(str(entry.get("caption", "")).split())[:MAX_CAPTION_CHARS])
    return f"<think> The region shows {title}. {caption} </think><answer> {answer} </answer>"


class TeacherError(RuntimeError):
    """The teacher endpoint failed (unreachable, HTTP error, malformed response); the message says how."""


class TeacherClient:
    """An OpenAI-compatible `/v1/chat/completions` endpoint serving a VLM (the user's URL and model name)."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0,
                 temperature: float = 0.0, max_tokens: int = 512, max_reply_chars: int = 4000):
        import httpx

        if not url.startswith(("http://", "https://")):
            raise ValueError(f"teacher url must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1), "
                             f"got {url!r}")
        url = url.rstrip("/")
        self.endpoint = url if url.endswith("/chat/completions") else f"{url}/chat/completions"
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.max_reply_chars = max_reply_chars
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s)

    def complete(self, messages: list[dict], stop: list[str]) -> tuple[str, str | None]:
        """(reply text, finish_reason) of one chat completion."""
        import httpx

        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "max_tokens": self.max_tokens, "stop": stop}
        try:
            response = self.client.post(self.endpoint, json=payload, headers=self.headers)
        except httpx.HTTPError as err:
            raise TeacherError(f"cannot reach the teacher at {self.endpoint}: {err}") from None
        if response.status_code != 200:
            raise TeacherError(f"teacher {self.endpoint} answered HTTP {response.status_code}: "
                               f"{response.text[:200]}")
        try:
            choice = response.json()["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise TeacherError(f"teacher {self.endpoint} returned no choices[0].message.content") from None
        if not isinstance(content, str):
            raise TeacherError(f"teacher {self.endpoint} returned a non-string message content")
        return content[:self.max_reply_chars], choice.get("finish_reason")

    def close(self) -> None:
        self.client.close()


def _data_url(image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def _close_action(text: str, tags: tuple[str, ...]) -> str:
    """Re-append the closing tag an OpenAI server removed with the stop string (`<gaze>[..]` -> `...</gaze>`)."""
    last = max(((text.rfind(f"<{tag}>"), tag) for tag in tags), default=(-1, ""))
    if last[0] >= 0 and f"</{last[1]}>" not in text[last[0]:]:
        return text + f"</{last[1]}>"
    return text


def teacher_turns(teacher: TeacherClient, protocol, question: str, image, client=None, topk: int = 3) -> list[str]:
    """The teacher's turns for one question (module docstring); the trajectory ends at an answer, an invalid
    action, or `protocol.max_turns` searches."""
    from seekrl.agents.gog import PROMPT
    from seekrl.envs.client import ToolError

    state = protocol.new_state(image)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_url(state.image)}},
                                             {"type": "text", "text": PROMPT.format(question=question.strip())}]}]
    stops = [f"</{tag}>" for tag in protocol.action_tags]
    turns: list[str] = []
    for _ in range(protocol.max_turns + 1):
        reply, _ = teacher.complete(messages, stops)
        turn = _close_action(reply, protocol.action_tags)
        turns.append(turn)
        shown = len(state.images)
        reaction = protocol.react(protocol.parse(turn), state, ended=False)
        if reaction.kind == "finish" or reaction.tool_failure:
            break
        if reaction.kind == "search":
            state.num_searches += 1
            try:
                docs = client.search([reaction.query], topk)[0] if client is not None else None
            except ToolError:
                docs = None
            text = protocol.format_observation(docs) if docs is not None else protocol.search_failed_text
        else:
            text = reaction.text
        content: list[dict] = [{"type": "text", "text": text}]
        content += [{"type": "image_url", "image_url": {"url": _data_url(crop)}} for crop in state.images[shown:]]
        messages += [{"role": "assistant", "content": turn}, {"role": "user", "content": content}]
    return turns


# --- filter ---------------------------------------------------------------------------------------------------

def filter_reason(rendered: Rendered, golds: list[str], bbox=None, min_iou: float = 0.5,
                  subem: bool = False) -> str | None:
    """Why a trajectory is dropped, or None when it is kept (module docstring)."""
    from seekrl.rewards import cover_exact_match, exact_match

    if not rendered.finished or rendered.answer is None:
        return "no answer"
    if rendered.tool_failures:
        return "invalid action or failed tool call"
    score = cover_exact_match if subem else exact_match
    if not score(rendered.answer, golds):
        return "wrong answer"
    if bbox is not None and rendered.gazes and iou(rendered.gazes[-1], tuple(bbox)) < min_iou:
        return "last gaze misses the answer region"
    return None


@dataclass
class SFTRecord:
    """One training question for trajectory building: the image, gold answers, optional answer region."""

    id: str
    question: str
    image: Any
    golds: list[str]
    bbox: tuple[int, int, int, int] | None = None


def records_from_qa(records, regions: dict[str, list[int]] | None = None) -> list[SFTRecord]:
    """SFTRecords from seekrl.data QARecords (first image; answer region from `bbox` in the record's metadata,
    as seekrl.envs.image_world writes it, or from `regions` by id)."""
    from seekrl.data import open_image

    out = []
    for r in records:
        if not r.images:
            raise ValueError(f"record {r.id!r} has no image: reflective SFT needs image questions")
        box = (regions or {}).get(r.id) or r.metadata.get("bbox")
        out.append(SFTRecord(r.id, r.question, open_image(r.images[0]), list(r.answers),
                             tuple(int(v) for v in box) if box is not None else None))
    return out


def build_examples(processor, protocol, records: list[SFTRecord], source: str = "scripted", teacher=None,
                   client=None, topk: int = 3, mix: dict[str, float] | None = None, samples: int = 1,
                   seed: int = 0, min_iou: float = 0.5, subem: bool = False) -> tuple[list[dict], dict]:
    """Build, filter and render SFT examples; returns (examples, stats: kept / dropped by reason / by variant).

    `samples` trajectories per record (scripted: each with its own variant drawn from `mix`; teacher: repeated
    requests, useful with a sampling temperature)."""
    rng = random.Random(seed)
    mix = mix or DEFAULT_MIX
    variants, weights = list(mix), list(mix.values())
    examples: list[dict] = []
    stats: dict[str, Any] = {"records": len(records), "kept": 0, "dropped": {}, "variants": {}}
    for record in records:
        for _ in range(samples):
            if source == "teacher":
                if teacher is None:
                    raise ValueError("source 'teacher' needs a TeacherClient")
                variant = "teacher"
                turns = teacher_turns(teacher, protocol, record.question, record.image, client, topk)
            elif source == "scripted":
                variant = rng.choices(variants, weights)[0] if record.bbox is not None else "glance"
                turns = scripted_turns(protocol, record.question, record.image, record.golds, record.bbox,
                                       variant)
            else:
                raise ValueError(f"unknown trajectory source {source!r}; use scripted or teacher")
            if turns is None:
                stats["dropped"]["kb has no answer"] = stats["dropped"].get("kb has no answer", 0) + 1
                continue
            rendered = render_gog_trajectory(processor, protocol, record.question, record.image, turns, client, topk)
            reason = filter_reason(rendered, record.golds, record.bbox, min_iou, subem)
            if reason is not None:
                stats["dropped"][reason] = stats["dropped"].get(reason, 0) + 1
                continue
            stats["kept"] += 1
            stats["variants"][variant] = stats["variants"].get(variant, 0) + 1
            examples.append(rendered.example(id=record.id, variant=variant))
    rng.shuffle(examples)
    return examples, stats


# --- reading drills -------------------------------------------------------------------------------------------

class FixedEntrySearcher:
    """An image searcher that answers every search with one made-up entry (score 1.0): a reading drill's KB."""

    def __init__(self, entry: dict):
        self.entry = {"id": "drill", "title": str(entry["title"]), "caption": str(entry["caption"]), "score": 1.0}

    def image_search(self, images: list, topk: int | None = None) -> list[list[dict]]:
        return [[dict(self.entry)] for _ in images]


def bare_messages(question: str) -> list[dict]:
    """A bare drill's user turn: the image and `Question: ...`, without the GoG prompt's instructions."""
    text = f"Question: {question.strip()}\n"
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def drill_examples(processor, protocol, drills: list[dict], images: dict, bare: bool = False) -> list[dict]:
    """Rendered reading drills (seekrl.envs.image_world.ImageWorld.reading_drills): the plain gaze trajectory at
    the asked region, whose search returns the drill's made-up entry, answered from it. `images`: image_id -> image.

    The same turns and rendering as a scripted `gaze` trajectory; only the knowledge base differs, so the name
    in the answer can only be read from the observation (the image never tells it). `bare` drops the prompt's
    instructions (`bare_messages`): under half the length (on the quickstart world 148 tokens on average; its
    scripted trajectories average 353), so more drills per second, and a short context is where the text
    quickstart's tiny model first learnt to read (seekrl.sft.reading_examples' bare drills)."""
    import copy

    drilled = copy.copy(protocol)
    if bare:
        drilled.messages = bare_messages
    examples = []
    for drill in drills:
        drilled.image_searcher = FixedEntrySearcher(drill["entry"])
        box, gold = tuple(drill["bbox"]), drill["golds"][0]
        turns = [f"<think> The question asks about {region_words(box)}. I gaze at it. </think><gaze>{list(box)}</gaze>",
                 answer_turn(drill["entry"], gold)]
        rendered = render_gog_trajectory(processor, drilled, drill["question"], images[drill["image_id"]], turns)
        reason = filter_reason(rendered, drill["golds"], box)
        if reason is not None:
            raise ValueError(f"reading drill {drill['id']} does not render as a correct gaze trajectory: {reason}")
        examples.append(rendered.example(id=drill["id"], variant="drill"))
    return examples


# --- training -------------------------------------------------------------------------------------------------

class GoGCollator:
    """Pads pre-tokenised GoG examples (right padding; labels -100) and runs their images through the image
    processor: `pixel_values`, `image_grid_thw`, and `mm_token_type_ids` (1 on image tokens) so that Qwen2.5-VL
    computes its multimodal positions as the rollout did."""

    def __init__(self, processor):
        self.processor = processor
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.image_token_id = tok.convert_tokens_to_ids("<|image_pad|>")

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        from seekrl.envs.image_kb import open_rgb

        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[row, :n] = torch.tensor(e["input_ids"])
            labels[row, :n] = torch.tensor(e["labels"])
            mask[row, :n] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask,
                 "mm_token_type_ids": (ids == self.image_token_id).long()}
        images = [open_rgb(data) for e in examples for data in e["image_bytes"]]
        if images:
            vision = self.processor.image_processor(images=images, return_tensors="pt")
            batch["pixel_values"] = vision["pixel_values"]
            batch["image_grid_thw"] = vision["image_grid_thw"]
        return batch


def run_gog_sft(model_path: str, examples: list[dict], out_dir: str | Path, epochs: float = 3.0,
                learning_rate: float = 1e-4, batch_size: int = 8, gradient_accumulation_steps: int = 1,
                lora=None, seed: int = 0, use_cpu: bool = True, progress: bool = False,
                report_to: list[str] | None = None) -> tuple[Path, list[dict]]:
    """TRL SFTTrainer on rendered GoG examples; saves the model (LoRA merged) and processor to out_dir/final.

    `lora`: a peft.LoraConfig, or None for full fine-tuning. Returns (final directory, log history)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from seekrl.models import load_model, load_processor

    if not examples:
        raise ValueError("no SFT example survived the filter: nothing to train on (see the build stats)")
    out = Path(out_dir)
    processor = load_processor(model_path)
    model = load_model(model_path, dtype="float32" if use_cpu else "auto")
    args = SFTConfig(
        output_dir=str(out / "hf"),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        logging_steps=5,
        save_strategy="no",
        report_to=report_to or [],
        use_cpu=use_cpu,
        bf16=not use_cpu,
        gradient_checkpointing=False,
        max_length=None,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        seed=seed,
        data_seed=seed,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    columns = [{"input_ids": e["input_ids"], "labels": e["labels"], "image_bytes": e["image_bytes"]}
               for e in examples]
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(columns),
                         processing_class=processor, data_collator=GoGCollator(processor), peft_config=lora)
    trainer.train()
    final = out / "final"
    trained = trainer.model
    if lora is not None:
        trained = trained.merge_and_unload()
    trained.save_pretrained(final)
    processor.save_pretrained(final)
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    return final, trainer.state.log_history
