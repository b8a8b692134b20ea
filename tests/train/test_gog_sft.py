"""Reflective SFT for Glance-or-Gaze: scripted and teacher trajectories, the filter, rendering, LoRA training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi import FastAPI, Request

from seekrl.agents.gog import GlanceOrGaze
from seekrl.envs.client import InProcessImageClient
from seekrl.envs.image_kb import ImageKB, crop
from seekrl.gog_sft import (
    IGNORE,
    SFTRecord,
    TeacherClient,
    TeacherError,
    build_examples,
    drill_examples,
    render_gog_trajectory,
    run_gog_sft,
    scripted_turns,
)
from seekrl.models import load_processor


@pytest.fixture(scope="module")
def world_records(demo_world):
    world, paths = demo_world
    protocol = GlanceOrGaze(max_turns=3, image_searcher=InProcessImageClient(ImageKB.load(paths["index"])),
                            image_topk=2, show_crops=True)
    images = {c.id: world.composite_image(c) for c in world.composites}
    records = [SFTRecord(q["id"], q["question"], images[q["image_id"]], q["golden_answers"], tuple(q["bbox"]))
               for q in world.questions("train")]
    return protocol, records


def test_scripted_variants_render_like_rollouts(tiny_vl_dir, world_records):
    protocol, records = world_records
    processor = load_processor(tiny_vl_dir)
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    record = records[0]
    for variant, gazes in (("gaze", 1), ("glance_first", 1), ("wrong_region", 2)):
        turns = scripted_turns(protocol, record.question, record.image, record.golds, record.bbox, variant)
        assert turns is not None and turns[-1].endswith(f"<answer> {record.golds[0]} </answer>")
        rendered = render_gog_trajectory(processor, protocol, record.question, record.image, turns)
        assert rendered.answer == record.golds[0] and rendered.tool_failures == 0
        assert rendered.actions.count("gaze") == gazes and rendered.gazes[-1] == record.bbox
        # The question's image plus one crop per gaze, each crop the gazed region.
        assert len(rendered.images) == 1 + gazes
        assert rendered.images[-1].tobytes() == crop(rendered.images[0], record.bbox).tobytes()
        # Trained tokens are exactly the turns; prompt, observations and crops are not trained.
        trained = [t for t, lab in zip(rendered.input_ids, rendered.labels) if lab != IGNORE]
        assert trained == [t for turn in turns for t in tok(turn, add_special_tokens=False)["input_ids"]]
        assert all(lab == IGNORE for t, lab in zip(rendered.input_ids, rendered.labels) if t == image_id)
        vision = processor.image_processor(images=rendered.images, return_tensors="pt")
        assert rendered.input_ids.count(image_id) == int(vision["image_grid_thw"].prod(dim=-1).sum()) // 4
    assert "Gaze at another region" in tok.decode(
        render_gog_trajectory(processor, protocol, record.question, record.image,
                              scripted_turns(protocol, record.question, record.image, record.golds, record.bbox,
                                             "wrong_region")).input_ids)


def test_filter_drops_wrong_answers_and_missed_regions(tiny_vl_dir, world_records):
    protocol, records = world_records
    processor = load_processor(tiny_vl_dir)
    wrong = [SFTRecord(r.id, r.question, r.image, ["Nobody"], r.bbox) for r in records[:4]]
    _, stats = build_examples(processor, protocol, wrong)
    assert stats["kept"] == 0 and stats["dropped"] == {"kb has no answer": 4}
    from seekrl.gog_sft import filter_reason

    record = records[0]
    turns = ["<gaze>[500, 500, 1000, 1000]</gaze>" if record.bbox != (500, 500, 1000, 1000)
             else "<gaze>[0, 0, 500, 500]</gaze>", f"<answer> {record.golds[0]} </answer>"]
    rendered = render_gog_trajectory(processor, protocol, record.question, record.image, turns)
    assert filter_reason(rendered, record.golds, record.bbox) == "last gaze misses the answer region"
    rendered = render_gog_trajectory(processor, protocol, record.question, record.image, ["<answer> x </answer>"])
    assert filter_reason(rendered, record.golds, record.bbox) == "wrong answer"
    rendered = render_gog_trajectory(processor, protocol, record.question, record.image, ["<gaze>[5, 5]</gaze>"])
    assert filter_reason(rendered, record.golds, record.bbox) == "no answer"
    kept, stats = build_examples(processor, protocol, records[:8], seed=1)
    assert stats["kept"] == len(kept) > 0 and sum(stats["variants"].values()) == len(kept)


def _teacher_app(replies: list[str], seen: list[dict]):
    """An OpenAI-compatible chat-completions server that plays back `replies` in order (one per request)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request):
        body = await request.json()
        seen.append(body)
        text = replies[min(len(seen), len(replies)) - 1]
        return {"id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}

    return app


def test_teacher_trajectories_over_http(tiny_vl_dir, world_records):
    from seekrl.testing import ThreadServer

    protocol, records = world_records
    processor = load_processor(tiny_vl_dir)
    record = records[0]
    box = list(record.bbox)
    # The server drops the stop string, as OpenAI servers do: the client closes the tag again.
    replies = [f"<think> The question names a quarter. </think><gaze>{box}",
               f"<think> Found it. </think><answer> {record.golds[0]} </answer>"]
    seen: list[dict] = []
    server = ThreadServer(_teacher_app(replies, seen)).start()
    try:
        teacher = TeacherClient(f"{server.url}/v1", "teacher-vlm")
        kept, stats = build_examples(processor, protocol, [record], source="teacher", teacher=teacher)
        assert stats["kept"] == 1 and stats["variants"] == {"teacher": 1}
        first, second = seen
        assert first["model"] == "teacher-vlm" and "</gaze>" in first["stop"]
        parts = first["messages"][0]["content"]
        assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
        assert record.question in parts[1]["text"]
        assert second["messages"][1] == {"role": "assistant", "content": replies[0] + "</gaze>"}
        observation = second["messages"][2]["content"]
        assert observation[0]["text"].startswith("\n\n<information>Image 1(Title: ")
        assert observation[1]["image_url"]["url"].startswith("data:image/png;base64,")  # the crop
        tok = processor.tokenizer
        trained = tok.decode([t for t, lab in zip(kept[0]["input_ids"], kept[0]["labels"]) if lab != IGNORE])
        assert trained == replies[0] + "</gaze>" + replies[1]

        # A teacher that answers wrongly is filtered out.
        seen.clear()
        replies[1] = "<answer> somebody else </answer>"
        _, stats = build_examples(processor, protocol, [record], source="teacher", teacher=teacher)
        assert stats["kept"] == 0 and stats["dropped"] == {"wrong answer": 1}
        teacher.close()
    finally:
        server.stop()
    with pytest.raises(TeacherError, match="cannot reach the teacher"):
        TeacherClient(f"{server.url}/v1", "teacher-vlm", timeout_s=2).complete([], [])


def test_lora_sft_merges_into_the_saved_model(tmp_path, tiny_vl_dir, world_records):
    from peft import LoraConfig
    from safetensors.torch import load_file

    protocol, records = world_records
    processor = load_processor(tiny_vl_dir)
    examples, _ = build_examples(processor, protocol, records[:4], mix={"gaze": 1.0})
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    final, history = run_gog_sft(str(tiny_vl_dir), examples, tmp_path / "sft", epochs=1, learning_rate=1e-2,
                                 batch_size=2, lora=lora)
    base = load_file(str(tiny_vl_dir / "model.safetensors"))
    merged = load_file(str(final / "model.safetensors"))
    assert set(merged) == set(base)  # no adapter weights left: merged
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    assert load_processor(final).image_processor.merge_size == 2
    assert json.loads((tmp_path / "sft" / "log_history.json").read_text())


def test_reading_drills_render_the_made_up_entry_and_answer_from_it(tiny_vl_dir, demo_world, world_records):
    from seekrl.envs.image_world import TILE_NAMES

    world, _ = demo_world
    protocol, _ = world_records
    processor = load_processor(tiny_vl_dir)
    tok = processor.tokenizer
    drills = world.reading_drills(12, seed=1)
    composites = {c.id: c for c in world.composites}
    images = {c.id: world.composite_image(c) for c in world.composites if c.split == "train"}
    examples = drill_examples(processor, protocol, drills, images)
    for drill, example in zip(drills, examples, strict=True):
        prompt, _, rest = tok.decode(example["input_ids"]).partition("<|im_start|>assistant")
        entry, gold = drill["entry"], drill["golds"][0]
        assert f"Question: {drill['question']}" in prompt and gold not in prompt
        # The gaze at the asked tile retrieves the drill's entry, not the tile's own, and the answer comes from it.
        assert f"<gaze>{drill['bbox']}</gaze>" in rest and f"(Title: {entry['title']}) {entry['caption']}" in rest
        own = world.thing[composites[drill["image_id"]].tiles[TILE_NAMES.index(drill["tile"])]]
        assert own.caption not in rest or own.caption == entry["caption"]
        assert rest.endswith(f"<answer> {gold} </answer>")
        # Trained: the policy's turns only, never the observation: the answer turn restates the entry it read.
        trained = tok.decode([t for t, lab in zip(example["input_ids"], example["labels"]) if lab != IGNORE])
        assert "<information>" not in trained and "Title:" not in trained
        assert trained.endswith(f"The region shows {entry['title']}. {entry['caption']} </think><answer> {gold} "
                                "</answer>")
        # Shown: the composite, then the crop of the asked tile.
        assert len(example["image_bytes"]) == 2


def test_reading_drills_need_the_composite_world_and_whole_epochs(tmp_path):
    from seekrl.config import RecipeError, load_recipe
    from seekrl.gog_stages import validate_gog_recipe

    path = Path(__file__).resolve().parents[2] / "recipes" / "gog_quickstart.yaml"
    no_world = load_recipe(path, ["world.enabled=false", f"gog.image_index_dir={tmp_path}",
                                  "gog.sft.bare_reading_drills=10"])
    with pytest.raises(RecipeError, match="drill on the composite world: set world.enabled true"):
        validate_gog_recipe(no_world)
    fractional = load_recipe(path, ["gog.sft.reading_drills=10", "gog.sft.epochs=2.5"])
    with pytest.raises(RecipeError, match="whole epochs: give gog.sft.epochs as a whole number, not 2.5"):
        validate_gog_recipe(fractional)
    validate_gog_recipe(load_recipe(path, ["gog.sft.reading_drills=10", "gog.sft.epochs=2"]))
