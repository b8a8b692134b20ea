"""GRPO for Glance-or-Gaze on Ray Train: `seekrl train` for a recipe with `agent.protocol: gog`.

The text path (seekrl.train) with three differences, kept apart here so that path stays as it is:
- training rows carry the question's image (`question_image`: an absolute path, or encoded bytes for images
  embedded in the data file) beside `prompt`, `golden_answers` and `id`; with levels from a pass-rate stage
  only the rows of the recipe's `gog.levels.train_on` are kept;
- each worker loads the policy's processor and builds the GoG protocol with an image searcher (the image index
  in-process, or an `/image_search` server), the VLM rollout function and `VLGRPOTrainer`
  (seekrl.agents.vlm_trl), which gives the rollout's images, crops included, to every forward pass;
- the final save writes the processor (image processor + tokenizer) beside the model.
Everything else (GRPO settings, checkpoints through Ray Train, resume, LoRA, DeepSpeed) is seekrl.train's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from seekrl.config import Recipe, RecipeError, recipe_to_dict, recipe_to_yaml
from seekrl.train import FINAL_DIR, RECIPE_FILE, RunPlan, TrainError, init_ray

log = logging.getLogger(__name__)

LEVEL_SETS = {"level2": {2}, "level1": {1}, "level1+2": {1, 2}, "all": {0, 1, 2}}


def image_ref(ref) -> str | bytes:
    """A QARecord image as rows carry it to Ray workers: an absolute path, or the encoded bytes."""
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref)
    return str(Path(ref).resolve())


def gog_rows(recipe: Recipe, levels: dict[str, int] | None = None) -> list[dict]:
    """Training rows with their images; with `levels` (question id -> 0/1/2) only `gog.levels.train_on`."""
    from seekrl.data import load_from_spec

    if not recipe.data.train:
        raise RecipeError("data.train is empty: give at least one dataset with images (or world.enabled)")
    rows = []
    for spec in recipe.data.train:
        for record in load_from_spec(spec, recipe.data.max_answer_chars):
            if not record.images:
                raise RecipeError(f"{spec.path}: record {record.id!r} has no image; Glance-or-Gaze trains on image "
                                  "questions (FVQA / InfoSeek parquet, OK-VQA jsonl + images, the composite world)")
            rows.append({"prompt": record.question, "golden_answers": record.answers, "id": record.id,
                         "question_image": image_ref(record.images[0])})
    if levels is not None:
        keep = LEVEL_SETS[recipe.gog.levels.train_on]
        rows = [r for r in rows if levels.get(r["id"]) in keep]
        if not rows:
            raise TrainError(f"no training question is at {recipe.gog.levels.train_on} "
                             f"(pass-rate levels: {sorted(set(levels.values()))}); choose another "
                             "gog.levels.train_on or measure with more gog.levels.samples")
    if not rows:
        raise RecipeError("data.train has no usable records")
    return rows


def image_searcher(gog):
    """The client the glance/gaze actions search: the image index in-process, or an /image_search server."""
    from seekrl.envs.client import HTTPClient, InProcessImageClient

    if gog.image_url:
        return HTTPClient(gog.image_url, default_topk=gog.image_topk)
    if not gog.image_index_dir:
        raise RecipeError("agent.protocol gog needs an image knowledge base: gog.image_index_dir (seekrl retriever "
                          "build --kind image) or gog.image_url")
    from seekrl.envs.image_kb import ImageKB

    return InProcessImageClient(ImageKB.load(gog.image_index_dir), default_topk=gog.image_topk)


def make_gog_protocol(recipe: Recipe, searcher=None):
    from seekrl.agents.gog import GlanceOrGaze

    a, g = recipe.agent, recipe.gog
    return GlanceOrGaze(a.max_turns, a.max_query_chars, image_searcher=searcher if searcher is not None
                        else image_searcher(g), image_topk=g.image_topk, reflect_below=g.reflect_below,
                        show_crops=g.show_crops)


def check_gog(recipe: Recipe) -> None:
    """What a gog run needs that can be checked before any model loads."""
    from seekrl.models import is_vision_language

    if recipe.agent.protocol != "gog":
        raise RecipeError(f"agent.protocol is {recipe.agent.protocol!r}; this path runs gog recipes")
    if recipe.rollout.attention != "dense":
        raise RecipeError("rollout.attention must be dense for the vision-language rollout")
    if recipe.gog.image_index_dir:
        if not Path(recipe.gog.image_index_dir).is_dir():
            raise RecipeError(f"gog.image_index_dir {recipe.gog.image_index_dir!r} is not a directory: build one "
                              "with `seekrl retriever build --kind image`")
        recipe.gog.image_index_dir = str(Path(recipe.gog.image_index_dir).resolve())
    elif not recipe.gog.image_url:
        raise RecipeError("agent.protocol gog needs gog.image_index_dir or gog.image_url")
    if not is_vision_language(recipe.model.name_or_path):
        raise RecipeError(f"model {recipe.model.name_or_path!r} has no vision tower: Glance-or-Gaze needs a VLM "
                          "(Qwen2.5-VL; seekrl-tiny-vl offline)")


def plan_gog_run(recipe: Recipe, resume: bool = False, levels: dict[str, int] | None = None) -> RunPlan:
    from seekrl.models import resolve_model_path
    from seekrl.rewards import build_reward_funcs
    from seekrl.zero import check_deepspeed

    build_reward_funcs(recipe.rewards)
    check_gog(recipe)
    if recipe.env.kind == "index":
        if not recipe.env.index_dir or not Path(recipe.env.index_dir).is_dir():
            raise RecipeError(f"env.index_dir {recipe.env.index_dir!r} is not a directory")
        recipe.env.index_dir = str(Path(recipe.env.index_dir).resolve())
    if recipe.grpo.per_device_train_batch_size % recipe.grpo.num_generations:
        raise RecipeError(f"grpo.per_device_train_batch_size ({recipe.grpo.per_device_train_batch_size}) must be a "
                          f"multiple of grpo.num_generations ({recipe.grpo.num_generations})")
    check_deepspeed(recipe)
    output_dir = Path(recipe.output.dir).resolve()
    storage = output_dir / "ray"
    if (storage / recipe.name).exists() and not resume:
        raise TrainError(f"{storage / recipe.name} holds an earlier run: pass --resume to continue it, or set "
                         "output.dir (or name) for a new run")
    rows = gog_rows(recipe, levels)
    model_path = resolve_model_path(recipe.model.name_or_path)
    if Path(model_path).exists():
        model_path = str(Path(model_path).resolve())
    return RunPlan(recipe=recipe, rows=rows, output_dir=output_dir, storage_path=storage, model_path=model_path)


def gog_train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: the VLM policy, its processor and a VLGRPOTrainer; train; save (rank 0)."""
    import ray.train
    import torch
    from datasets import Dataset
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    from seekrl.agents.trl_adapter import rollout_config_from_recipe
    from seekrl.agents.vlm_trl import VLGRPOTrainer, make_vl_rollout_func
    from seekrl.config import load_recipe_dict
    from seekrl.models import load_model, load_processor
    from seekrl.rewards import build_reward_funcs
    from seekrl.train import RayProgressCallback, grpo_args, lora_config, make_client, save_final
    from seekrl.zero import gathered_for_save, prepare_worker, wrap_rollout

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(config["output_dir"]) / "tensorboard")
    recipe = load_recipe_dict(config["recipe"])
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(recipe.seed)
    use_cpu = not recipe.ray.use_gpu
    prepare_worker(recipe)

    processor = load_processor(config["model_path"])
    model = load_model(config["model_path"], dtype=recipe.model.dtype,
                       attn_implementation=recipe.model.attn_implementation)
    searcher = image_searcher(recipe.gog)
    protocol = make_gog_protocol(recipe, searcher)
    client = make_client(recipe.env)
    rollout_func = make_vl_rollout_func(protocol, client, rollout_config_from_recipe(recipe), seed=recipe.seed + rank)
    funcs, _ = build_reward_funcs(recipe.rewards)
    work_dir = Path(config["output_dir"]) / "hf"
    trainer = VLGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=grpo_args(recipe, str(work_dir), use_cpu),
        train_dataset=Dataset.from_list(config["rows"]),
        processing_class=processor,
        rollout_func=wrap_rollout(rollout_func, recipe),
        peft_config=lora_config(recipe),
    )
    trainer.add_callback(RayTrainReportCallback())
    if rank == 0:
        trainer.add_callback(RayProgressCallback(recipe.name))
    trainer = prepare_trainer(trainer)

    resume_from = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        import shutil

        with checkpoint.as_directory() as ckpt_dir:
            local = work_dir / "resume"
            shutil.rmtree(local, ignore_errors=True)
            shutil.copytree(Path(ckpt_dir) / RayTrainReportCallback.CHECKPOINT_NAME, local)
            resume_from = str(local)
    trainer.train(resume_from_checkpoint=resume_from)
    with gathered_for_save(trainer, recipe):
        if rank == 0:
            save_final(trainer, recipe, Path(config["output_dir"]))
    for closable in (client, searcher):
        if closable is not None and hasattr(closable, "close"):
            closable.close()


def train_gog_grpo(recipe: Recipe, resume: bool = False, levels: dict[str, int] | None = None):
    """One GRPO run of a gog recipe on Ray (embedded or at `ray.address`); returns the Ray Train Result."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    import json

    plan = plan_gog_run(recipe, resume, levels)
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    (plan.output_dir / RECIPE_FILE).write_text(recipe_to_yaml(recipe))
    (plan.output_dir / "train_ids.json").write_text(json.dumps([r["id"] for r in plan.rows]))
    init_ray(recipe)
    trainer = TorchTrainer(
        gog_train_loop_per_worker,
        train_loop_config={"recipe": recipe_to_dict(recipe), "rows": plan.rows, "output_dir": str(plan.output_dir),
                           "model_path": plan.model_path},
        scaling_config=ScalingConfig(num_workers=recipe.ray.num_workers, use_gpu=recipe.ray.use_gpu,
                                     resources_per_worker=dict(recipe.ray.resources_per_worker) or None),
        run_config=RunConfig(
            name=recipe.name,
            storage_path=str(plan.storage_path),
            checkpoint_config=CheckpointConfig(num_to_keep=recipe.ray.num_checkpoints_to_keep),
            failure_config=FailureConfig(max_failures=recipe.ray.max_failures),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise TrainError(f"training failed: {result.error}")
    if not (plan.output_dir / FINAL_DIR / "config.json").exists():
        raise TrainError(f"training finished without saving {plan.output_dir / FINAL_DIR}")
    return result
