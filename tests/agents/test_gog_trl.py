"""GRPO with images through TRL: VLGRPOTrainer gives every forward pass the rollout's images, crops included."""

from __future__ import annotations

import pytest
import torch

from seekrl.agents.gog import GlanceOrGaze
from seekrl.agents.rollout import RolloutConfig
from seekrl.agents.vlm_trl import VLGRPOTrainer, make_vl_rollout_func
from seekrl.config import RewardSpec
from seekrl.envs.client import InProcessImageClient
from seekrl.envs.image_kb import ImageKB
from seekrl.gog_sft import png_bytes
from seekrl.models import load_model, load_processor
from seekrl.rewards import build_reward_funcs


def _rows(world, n):
    images = {c.id: png_bytes(world.composite_image(c)) for c in world.composites}
    return [{"prompt": q["question"], "golden_answers": q["golden_answers"], "question_image": images[q["image_id"]]}
            for q in world.questions("train")[:n]]


def _trainer(tmp_path, gazer_dir, world, paths, rows, beta=0.001, steps=2):
    from datasets import Dataset
    from trl import GRPOConfig

    protocol = GlanceOrGaze(max_turns=3, image_searcher=InProcessImageClient(ImageKB.load(paths["index"])),
                            image_topk=1, show_crops=True)
    funcs, _ = build_reward_funcs([RewardSpec(name="gog", args={"format_weight": 0.1})])
    args = GRPOConfig(output_dir=str(tmp_path / "hf"), num_generations=4, per_device_train_batch_size=16,
                      max_steps=steps, learning_rate=1e-3, beta=beta, use_cpu=True, bf16=False, report_to=[],
                      logging_steps=1, save_strategy="no", max_completion_length=320, disable_tqdm=True,
                      loss_type="dapo", seed=0, temperature=0.7)
    config = RolloutConfig(max_new_tokens_per_turn=64, max_total_tokens=320, temperature=0.7)
    return VLGRPOTrainer(model=load_model(gazer_dir, dtype="float32"), reward_funcs=funcs, args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=load_processor(gazer_dir),
                         rollout_func=make_vl_rollout_func(protocol, None, config, seed=0))


def test_grpo_steps_move_language_and_vision_weights(tmp_path, tiny_gazer_dir, demo_world):
    world, paths = demo_world
    trainer = _trainer(tmp_path, tiny_gazer_dir, world, paths, _rows(world, 16))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    # The vision tower only gets a gradient when the loss forward pass received the images.
    assert any(n.startswith("model.visual") for n in moved)
    assert any(n.startswith("model.language_model") for n in moved)
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logged) == 2
    assert all("rollout/gaze_rate" in h and "rollout/images" in h for h in logged)
    assert max(h["rewards/gog/mean"] for h in logged) > 0  # some rollout answered in the protocol's format


def test_scored_batch_reproduces_rollout_logprobs_with_crops(tmp_path, tiny_gazer_dir, demo_world):
    """The batch TRL buffers carries each sample's images: a forward pass over it gives the sampling logprobs."""
    world, paths = demo_world
    rows = _rows(world, 8)
    trainer = _trainer(tmp_path, tiny_gazer_dir, world, paths, rows, beta=0.0)
    inputs = [dict(row) for row in rows[:4] for _ in range(4)]
    out = trainer._generate_and_score_completions(inputs)
    assert max(out["num_images"]) > 1  # a crop was shown mid-trajectory
    assert out["pixel_values"].shape[0] == int(out["image_grid_thw"].prod(dim=-1).sum())
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, out["completion_ids"].shape[1], batch_size=3,
            pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"], num_images=out["num_images"])
    generated = (out["completion_mask"] * out["tool_mask"]).bool()
    logits = _logits(trainer, ids, mask, out) / 0.7  # the rollouts sampled at temperature 0.7
    # TRL's path (per-sample images split by num_images, in chunks of 3 rows) = one forward with every image.
    whole = torch.log_softmax(logits, dim=-1).gather(-1, out["completion_ids"][..., None])[..., 0]
    assert (logps - whole).abs()[generated].max() < 1e-4
    # The rollout sampled from that distribution, image placeholders excluded (never sampled).
    logits[..., trainer.image_token_id] = float("-inf")
    logits[..., trainer.model.config.video_token_id] = float("-inf")
    sampled = torch.log_softmax(logits, dim=-1).gather(-1, out["completion_ids"][..., None])[..., 0]
    assert (sampled - out["sampling_per_token_logps"]).abs()[generated].max() < 1e-4


def _logits(trainer, ids, mask, out):
    """Completion logits of the whole batch in one forward pass with all its images."""
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=mask, pixel_values=out["pixel_values"],
                               image_grid_thw=out["image_grid_thw"],
                               mm_token_type_ids=(ids == trainer.image_token_id).long()).logits
    width = out["completion_ids"].shape[1]
    return logits[:, -width - 1:-1].float()


def test_rows_without_images_are_refused(tmp_path, tiny_gazer_dir, demo_world):
    world, paths = demo_world
    rows = _rows(world, 4)
    trainer = _trainer(tmp_path, tiny_gazer_dir, world, paths, rows)
    with pytest.raises(ValueError, match="question_image"):
        trainer._generate_and_score_completions([{"prompt": "What is it?", "golden_answers": ["x"]}] * 4)
