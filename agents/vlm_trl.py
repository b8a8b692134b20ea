"""GRPO with images: the VLM rollout engine as a TRL `rollout_func`, and the trainer that feeds its images to the
policy's forward passes.

How TRL 1.16's `GRPOTrainer` handles images (read from its source): with a `rollout_func` it passes only the
prompts to the function and returns no images from it; the images of the forward passes (old, reference and
current log-probabilities) are the dataset's `image`/`images` column, re-processed with the processor together
with the *prompt* text. A Glance-or-Gaze trajectory also holds the crops it was shown mid-completion, whose
placeholder tokens are in `completion_ids`; those would have no pixels (Qwen2.5-VL raises "Image features and
image tokens do not match"), and positions would be computed without `mm_token_type_ids`.

So `VLGRPOTrainer` (a `GRPOTrainer` subclass, nothing else changed):
- the question's image is the dataset column `question_image` (encoded bytes, a path, or a PIL image), a name
  TRL does not treat as an image column; the trainer hands this batch's images to the rollout function
  (`trainer.rollout_images`, aligned with the prompts);
- the rollout function returns, besides TRL's keys, `pixel_values`, `image_grid_thw` and `num_images` of every
  image in each trajectory (question image, then crops, in token order: seekrl.agents.vlm_rollout.vision_batch).
  The trainer takes them out before TRL sees the dict, uses them for the log-probabilities it computes right
  after the rollout (reference model with beta > 0, old policy when generation and optimisation are misaligned),
  and puts them into the batch TRL buffers, splits and shuffles per sample (`split_pixel_values_by_grid`, the
  path TRL has for Qwen's `image_grid_thw`), so the loss forward pass gets each sample's own images;
- every forward pass gets `mm_token_type_ids` (1 on `<|image_pad|>`), so Qwen2.5-VL computes its M-RoPE
  positions from the whole [prompt | completion] sequence, the positions the rollout sampled with.
"""

from __future__ import annotations

from typing import Any

from seekrl.agents.trl_adapter import question_of, rollout_metrics, trajectories_to_trl
from seekrl.agents.vlm_rollout import VLRolloutEngine, vision_batch

IMAGE_COLUMN = "question_image"
VISION_KEYS = ("pixel_values", "image_grid_thw", "num_images")


def gog_metrics(trajectories) -> dict[str, float]:
    """Rollout averages plus the Glance-or-Gaze action split: share of rollouts with a text search / glance /
    gaze, gazes per rollout, images shown per rollout."""
    n = max(1, len(trajectories))
    metrics = rollout_metrics(trajectories)
    for kind in ("search", "glance", "gaze"):
        name = "text_search" if kind == "search" else kind  # rollout/search_rate counts every tool call
        metrics[f"rollout/{name}_rate"] = sum(kind in t.actions for t in trajectories) / n
    metrics["rollout/gazes"] = sum(t.actions.count("gaze") for t in trajectories) / n
    metrics["rollout/images"] = sum(t.num_images for t in trajectories) / n
    return metrics


def vl_trajectories_to_trl(trajectories) -> dict[str, list]:
    """TRL's dict for VLM trajectories: the text fields, the action split the rewards and logs read, and the
    vision tensors (`VISION_KEYS`) that `VLGRPOTrainer` takes out."""
    out = trajectories_to_trl(trajectories)
    out["num_text_searches"] = [t.actions.count("search") for t in trajectories]
    out["num_glances"] = [t.actions.count("glance") for t in trajectories]
    out["num_gazes"] = [t.actions.count("gaze") for t in trajectories]
    out["gazes"] = [[list(b) for b in t.gazes] for t in trajectories]
    out.update(vision_batch(trajectories))
    return out


def make_vl_rollout_func(protocol, client=None, config=None, seed: int | None = None):
    """A `rollout_func(prompts, trainer)` for `VLGRPOTrainer`: rolls out `protocol` (gog) with the trainer's
    current policy and processor on the prompts' questions and `trainer.rollout_images`."""
    state: dict[str, Any] = {"engine": None}

    def rollout_func(prompts: list, trainer) -> dict[str, list]:
        images = getattr(trainer, "rollout_images", None)
        if images is None or len(images) != len(prompts):
            raise ValueError(f"the VLM rollout needs one image per prompt in the dataset column {IMAGE_COLUMN!r} "
                             "(and VLGRPOTrainer, which hands them over)")
        model = trainer.accelerator.unwrap_model(trainer.model)
        engine = state["engine"]
        if engine is None or engine.model is not model:
            engine = state["engine"] = VLRolloutEngine(model, trainer.processing_class, protocol, client, config,
                                                       seed=seed)
        trajectories = engine.run([question_of(p) for p in prompts], list(images))
        metrics_store = getattr(trainer, "_metrics", None)
        if metrics_store is not None:
            mode = "train" if trainer.model.training else "eval"
            for key, value in gog_metrics(trajectories).items():
                metrics_store[mode][key].append(value)
        return vl_trajectories_to_trl(trajectories)

    return rollout_func


def _grpo_trainer_class():
    from trl import GRPOTrainer

    return GRPOTrainer


class VLGRPOTrainer(_grpo_trainer_class()):
    """TRL GRPOTrainer for rollouts that carry their own images (module docstring). Pass the processor as
    `processing_class` and a `make_vl_rollout_func` rollout function."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.rollout_func is None:
            raise ValueError("VLGRPOTrainer needs a rollout_func (seekrl.agents.vlm_trl.make_vl_rollout_func)")
        self.image_token_id = self._tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.rollout_images: list | None = None
        self._vision: dict | None = None
        inner = self.rollout_func

        def capture(prompts, trainer):
            output = dict(inner(prompts, trainer))
            missing = [k for k in VISION_KEYS if k not in output]
            if missing:
                raise ValueError(f"the rollout function returned no {missing}: use make_vl_rollout_func")
            self._vision = {k: output.pop(k) for k in VISION_KEYS}
            return output

        self.rollout_func = capture

    def _generate_and_score_completions(self, inputs):
        if any(IMAGE_COLUMN not in x or x[IMAGE_COLUMN] is None for x in inputs):
            raise ValueError(f"every training row needs its image in the column {IMAGE_COLUMN!r}")
        self.rollout_images = [x[IMAGE_COLUMN] for x in inputs]
        try:
            output = super()._generate_and_score_completions(inputs)
            device = self.accelerator.device
            vision = self._vision
            if vision["pixel_values"] is not None:
                output["pixel_values"] = vision["pixel_values"].to(device)
                output["image_grid_thw"] = vision["image_grid_thw"].to(device)
                output["num_images"] = list(vision["num_images"])
            return output
        finally:
            self.rollout_images, self._vision = None, None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, pixel_values=None,
                                           image_grid_thw=None, num_images=None, **kwargs):
        if pixel_values is None and self._vision is not None and self._vision["pixel_values"] is not None:
            # Right after the rollout (old / reference log-probabilities): the rollout's images, in row order.
            device = input_ids.device
            pixel_values = self._vision["pixel_values"].to(device)
            image_grid_thw = self._vision["image_grid_thw"].to(device)
            num_images = list(self._vision["num_images"])
        if pixel_values is not None:
            kwargs["mm_token_type_ids"] = (input_ids == self.image_token_id).long()
        return super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size, compute_entropy=compute_entropy,
            compute_aux_loss=compute_aux_loss, pixel_values=pixel_values, image_grid_thw=image_grid_thw,
            num_images=num_images, **kwargs)
