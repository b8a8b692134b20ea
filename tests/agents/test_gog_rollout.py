"""The VLM rollout engine: images through the processor, crops inserted mid-trajectory, M-RoPE positions, and
log-probabilities that a training forward pass over the whole trajectory reproduces."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from seekrl.agents.gog import GlanceOrGaze
from seekrl.agents.rollout import RolloutConfig
from seekrl.agents.vlm_rollout import VLRolloutEngine, image_placeholder, mrope_positions, vision_batch
from seekrl.envs.client import InProcessImageClient
from seekrl.envs.image_kb import ImageKB
from seekrl.models import load_model, load_processor


@pytest.fixture(scope="module")
def gazer(tiny_gazer_dir):
    model = load_model(tiny_gazer_dir, dtype="float32")
    model.eval()
    return model, load_processor(tiny_gazer_dir)


@pytest.fixture(scope="module")
def protocol(demo_world):
    _, paths = demo_world
    return GlanceOrGaze(max_turns=3, image_searcher=InProcessImageClient(ImageKB.load(paths["index"])),
                        image_topk=1, show_crops=True)


def _questions(world, n=8):
    images = {c.id: world.composite_image(c) for c in world.composites}
    rows = world.questions("train")[:n]
    return [r["question"] for r in rows], [images[r["image_id"]] for r in rows]


def _full_forward_logprobs(model, traj, temperature: float):
    """Per completion token, its log-probability under one forward pass over [prompt | completion] with every
    image's pixels (what the GRPO trainer computes), at the sampling temperature, placeholders excluded."""
    ids = torch.tensor([traj.prompt_ids + traj.completion_ids])
    vision = vision_batch([traj])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=vision["pixel_values"],
                       image_grid_thw=vision["image_grid_thw"],
                       mm_token_type_ids=(ids == model.config.image_token_id).long()).logits
    logits = logits[0].float() / temperature
    logits[:, [model.config.image_token_id, model.config.video_token_id]] = float("-inf")
    logp = torch.log_softmax(logits, dim=-1)
    start = len(traj.prompt_ids) - 1
    return [logp[start + i, tok].item() for i, tok in enumerate(traj.completion_ids)]


def test_mrope_positions_match_the_model(gazer):
    model, processor = gazer
    a, b = Image.new("RGB", (112, 84), (200, 30, 30)), Image.new("RGB", (56, 140), (0, 90, 200))
    ids_a, _, grid_a = image_placeholder(processor, a)
    ids_b, _, grid_b = image_placeholder(processor, b)
    text = processor.tokenizer("look <gaze>[0, 0, 500, 500]</gaze> here", add_special_tokens=False)["input_ids"]
    ids = text + ids_a + text + ids_b + text[:3]
    ours, nxt = mrope_positions(ids, [grid_a, grid_b], 0, model.config.image_token_id, 2)
    tensor = torch.tensor([ids])
    ref, _ = model.model.get_rope_index(tensor, (tensor == model.config.image_token_id).long(),
                                        image_grid_thw=torch.tensor([grid_a, grid_b]))
    assert torch.equal(ours, ref[:, 0])
    assert nxt == int(ref.max()) + 1
    # A chunk continues from where the previous one stopped.
    split = len(text) + len(ids_a)
    first, mid = mrope_positions(ids[:split], [grid_a], 0, model.config.image_token_id, 2)
    second, _ = mrope_positions(ids[split:], [grid_b], mid, model.config.image_token_id, 2)
    assert torch.equal(torch.cat([first, second], dim=1), ours)


def test_crops_are_inserted_and_logprobs_match_training_forward(gazer, protocol, demo_world):
    model, processor = gazer
    world, _ = demo_world
    questions, images = _questions(world)
    engine = VLRolloutEngine(model, processor, protocol, None,
                             RolloutConfig(max_new_tokens_per_turn=64, max_total_tokens=320, temperature=0.7), seed=0)
    trajs = engine.run(questions, images)
    image_id = model.config.image_token_id
    with_crops = [t for t in trajs if t.num_images > 1]
    assert with_crops, [t.text[:80] for t in trajs]
    for traj in trajs:
        # One image per gaze that showed its crop, plus the question's image.
        assert traj.num_images == 1 + traj.actions.count("gaze")
        assert len(traj.gazes) == traj.actions.count("gaze")
        tokens = traj.prompt_ids + traj.completion_ids
        expected = sum(t * h * w // 4 for t, h, w in traj.image_grid_thw)
        assert sum(tok == image_id for tok in tokens) == expected
        # Crop tokens are observation tokens: masked from the loss, logprob 0.
        for tok, keep, lp in zip(traj.completion_ids, traj.env_mask, traj.logprobs):
            if tok == image_id:
                assert keep == 0 and lp == 0.0
        assert len(traj.completion_ids) <= 320
    for traj in with_crops[:2]:
        full = _full_forward_logprobs(model, traj, 0.7)
        sampled = [(f, lp) for f, lp, keep in zip(full, traj.logprobs, traj.env_mask) if keep]
        assert max(abs(f - lp) for f, lp in sampled) < 1e-3
        # The crop shown is the gazed region of the question's image.
        from seekrl.envs.image_kb import crop

        assert traj.images[1].tobytes() == crop(traj.images[0], traj.gazes[0]).tobytes()


def test_batched_equals_alone_greedy(gazer, protocol, demo_world):
    model, processor = gazer
    world, _ = demo_world
    questions, images = _questions(world, 4)
    config = RolloutConfig(max_new_tokens_per_turn=64, max_total_tokens=320, temperature=0.0)
    together = VLRolloutEngine(model, processor, protocol, None, config).run(questions, images)
    alone = VLRolloutEngine(model, processor, protocol, None, config).run(questions[2:3], images[2:3])[0]
    assert together[2].completion_ids[:40] == alone.completion_ids[:40]


def test_vl_engine_errors(gazer, protocol):
    model, processor = gazer
    with pytest.raises(ValueError, match="dense attention only"):
        VLRolloutEngine(model, processor, protocol, None, RolloutConfig(attention="block_topk"))
    with pytest.raises(ValueError, match="processor"):
        VLRolloutEngine(model, processor.tokenizer, protocol)
    engine = VLRolloutEngine(model, processor, protocol)
    with pytest.raises(ValueError, match="one image per question"):
        engine.run(["What is it?"], [])
    with pytest.raises(TypeError, match="run\\(questions, images\\)"):
        engine.run_ids([[1, 2, 3]])
