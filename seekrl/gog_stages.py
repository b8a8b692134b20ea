"""Glance-or-Gaze training in one job: `seekrl train` for a recipe with `agent.protocol: gog`.

The stages of a gog recipe run in order, each from the model the previous one produced (as in seekrl.stages,
whose stage files, `--resume` and `stages.json` summary this follows):

- `sft`: stage 1, reflective SFT (seekrl.gog_sft): trajectories of the training questions, scripted from the
  knowledge base or played by a teacher endpoint (`gog.sft.source`), filtered (answer correct, crop sensible),
  then TRL SFTTrainer (LoRA rank 8, 3 epochs, lr 1e-4, global batch 8 by default, as published). On the
  composite world, reading drills (`gog.sft.bare_reading_drills`, `gog.sft.reading_drills`; see gog_sft_stage)
  come first and in between. Writes `sft_data.json` (what was kept and dropped, and why) into the stage directory;
- `label`: stage 2's complexity levels: every training question's pass rate under the current model
  (`gog.levels.samples` rollouts at `gog.levels.temperature`), sorted into level 0 / 1 / 2
  (seekrl.gog_probe.level_of), written to `levels.json`;
- `grpo`: GRPO on Ray Train (seekrl.gog_train) on the training questions of `gog.levels.train_on` (level 2 by
  default, the published setting; level1 / level1+2 / all for ablations) when a label stage ran before it,
  else on all of them. Reward: the recipe's `rewards`, e.g. `gog` = (1 - lambda) * accuracy + lambda * format.

With `world.enabled` the composite-image world (seekrl.envs.image_world, sizes in `gog.world_*`) is generated
into output.dir/world first and fills in data.train / data.eval / gog.image_index_dir where the recipe leaves
them empty; model `seekrl-tiny-gog` is a tiny Qwen2.5-VL whose tokenizer was trained on that world's text.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path

from seekrl.config import DatasetSpec, Recipe, RecipeError, recipe_to_dict, recipe_to_yaml

log = logging.getLogger(__name__)

GOG_WORLD_MODEL = "seekrl-tiny-gog"
STAGE_FILE = "stage.json"
LEVELS_FILE = "levels.json"


def prepare_gog_world(recipe: Recipe, out: Path):
    """Generate (or reuse) the composite world in out/world and point data, gog and model at it."""
    from seekrl.envs.image_world import generate_image_world, load_image_world, write_image_world

    world_dir = out / "world"
    g = recipe.gog
    if (world_dir / "world.json").exists() and (world_dir / "index" / "manifest.json").exists():
        world = load_image_world(world_dir)
    else:
        data_dir = Path(os.environ.get("SEEKRL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
        if not (data_dir / "multimodal").is_dir():
            raise RecipeError(f"the composite world is built from the images in {data_dir}/multimodal: set "
                              "SEEKRL_SHARED_DATA to the shared/data folder")
        world = generate_image_world(recipe.seed, data_dir=data_dir, num_train=g.world_num_train,
                                     num_heldout=g.world_num_heldout, tile=g.world_tile)
        write_image_world(world, world_dir)
    if not recipe.data.train:
        recipe.data.train = [DatasetSpec(path=str(world_dir / "train.jsonl"))]
    if not recipe.data.eval:
        recipe.data.eval = [DatasetSpec(path=str(world_dir / "heldout.jsonl"))]
    if not g.image_index_dir and not g.image_url:
        g.image_index_dir = str(world_dir / "index")
    if recipe.model.name_or_path == GOG_WORLD_MODEL:
        base = world_dir / "base_model"
        if not (base / "config.json").exists():
            from seekrl.testing import build_gog_world_model

            build_gog_world_model(world, base, seed=recipe.seed)
        recipe.model.name_or_path = str(base)
    return world


def validate_gog_stages(recipe: Recipe, base: dict, stages: list, stages_dir: Path) -> list[Recipe]:
    """Each stage's recipe, checked before anything runs."""
    from seekrl.stages import _stage_recipe

    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise RecipeError(f"stage names must differ: {names}")
    checked = []
    for stage in stages:
        stage_recipe = _stage_recipe(base, recipe, stage, "placeholder", stages_dir / stage.name)
        if stage_recipe.agent.protocol != "gog":
            raise RecipeError(f"stage {stage.name!r}: a gog recipe's stages keep agent.protocol gog")
        sft = stage_recipe.gog.sft
        if stage.kind == "sft" and sft.source == "teacher" and not (sft.teacher_url and sft.teacher_model):
            raise RecipeError(f"stage {stage.name!r}: gog.sft.source teacher needs gog.sft.teacher_url and "
                              "gog.sft.teacher_model")
        if stage.kind == "sft" and (sft.reading_drills or sft.bare_reading_drills) and not recipe.world.enabled:
            raise RecipeError(f"stage {stage.name!r}: gog.sft.reading_drills and bare_reading_drills drill on the "
                              "composite world: set world.enabled true, or set both to 0")
        if stage.kind == "sft" and sft.reading_drills and sft.epochs != int(sft.epochs):
            raise RecipeError(f"stage {stage.name!r}: gog.sft.reading_drills spreads its drills over whole epochs: "
                              f"give gog.sft.epochs as a whole number, not {sft.epochs}")
        if sft.batch_size % sft.per_device_batch_size:
            raise RecipeError(f"gog.sft.batch_size ({sft.batch_size}) must be a multiple of "
                              f"gog.sft.per_device_batch_size ({sft.per_device_batch_size})")
        checked.append(stage_recipe)
    return checked


def validate_gog_recipe(recipe: Recipe) -> list[Recipe]:
    """`seekrl recipe validate` for a gog recipe: every stage's recipe (the recipe plus its overrides) checked."""
    from seekrl.config import StageSpec
    from seekrl.rewards import build_reward_funcs

    base = recipe_to_dict(recipe)
    base["stages"], base["world"]["enabled"] = [], False
    stages = list(recipe.stages) or [StageSpec(name="grpo", kind="grpo")]
    checked = validate_gog_stages(recipe, base, stages, Path(recipe.output.dir) / "stages")
    for stage_recipe in checked:
        try:
            build_reward_funcs(stage_recipe.rewards)
        except ValueError as err:
            raise RecipeError(str(err)) from None
        if stage_recipe.rollout.attention != "dense":
            raise RecipeError("rollout.attention must be dense for the vision-language rollout")
    if not recipe.world.enabled and not (recipe.gog.image_index_dir or recipe.gog.image_url):
        raise RecipeError("agent.protocol gog needs an image knowledge base: gog.image_index_dir or gog.image_url "
                          "(or world.enabled for the composite world)")
    return checked


def _train_questions(recipe: Recipe):
    from seekrl.data import load_from_spec
    from seekrl.gog_probe import questions_from_records

    records = [r for spec in recipe.data.train for r in load_from_spec(spec, recipe.data.max_answer_chars)]
    if not records:
        raise RecipeError("data.train has no records")
    return questions_from_records(records)


def gog_sft_stage(recipe: Recipe, model_path: str, stage_dir: Path, world=None) -> Path:
    """Build, filter and train on reflective SFT trajectories; returns the trained model directory.

    On the composite `world`, reading drills (ImageWorld.reading_drills: a gaze whose knowledge-base entry is
    made up, so the answer can only be read from the observation) come in two places: `gog.sft.bare_reading_drills`
    bare drills (no prompt instructions) first, one pass alone (stage_dir/reading); then `gog.sft.reading_drills`
    drills with the full prompt spread over the epochs of the reflective SFT, each epoch the training
    trajectories once and an equal share of the drills, every drill a new one."""
    from seekrl.gog_sft import SFTRecord, TeacherClient, build_examples, drill_examples, run_gog_sft
    from seekrl.gog_train import make_gog_protocol
    from seekrl.models import load_processor
    from seekrl.train import lora_config, make_client

    s = recipe.gog.sft
    if (s.reading_drills or s.bare_reading_drills) and world is None:
        raise RecipeError("gog.sft.reading_drills and bare_reading_drills need the composite world "
                          "(world.enabled: true)")
    processor = load_processor(model_path)
    protocol = make_gog_protocol(recipe)
    client = make_client(recipe.env)
    teacher = None
    if s.source == "teacher":
        key = os.environ.get(s.teacher_api_key_env) if s.teacher_api_key_env else None
        teacher = TeacherClient(s.teacher_url, s.teacher_model, api_key=key, temperature=s.teacher_temperature,
                                max_tokens=s.teacher_max_tokens)
    records = [SFTRecord(q.id, q.question, q.image, q.golds, q.bbox) for q in _train_questions(recipe)]
    try:
        examples, stats = build_examples(processor, protocol, records, s.source, teacher, client, recipe.env.topk,
                                         dict(s.mix), s.samples, recipe.seed, s.min_iou, s.subem)
    finally:
        if teacher is not None:
            teacher.close()
    if s.reading_drills or s.bare_reading_drills:
        images = {c.id: world.composite_image(c) for c in world.composites if c.split == "train"}
    lora_recipe = Recipe()
    lora_recipe.model.lora = s.lora
    train_args = dict(batch_size=s.per_device_batch_size, learning_rate=s.learning_rate,
                      gradient_accumulation_steps=s.batch_size // s.per_device_batch_size,
                      lora=lora_config(lora_recipe), seed=recipe.seed, use_cpu=not recipe.ray.use_gpu,
                      report_to=list(recipe.output.report_to))
    stage_dir.mkdir(parents=True, exist_ok=True)
    if s.bare_reading_drills:
        bare = drill_examples(processor, protocol, world.reading_drills(s.bare_reading_drills, seed=recipe.seed + 1),
                              images, bare=True)
        log.warning("gog sft: %d bare reading drills, one pass", len(bare))
        model_path, _ = run_gog_sft(model_path, bare, stage_dir / "reading", epochs=1, **train_args)
        stats["bare_reading_drills"] = len(bare)
    epochs = s.epochs
    if s.reading_drills:
        drills = drill_examples(processor, protocol, world.reading_drills(s.reading_drills, seed=recipe.seed),
                                images)
        examples = examples * int(s.epochs) + drills
        random.Random(recipe.seed).shuffle(examples)
        epochs = 1
        stats["reading_drills"] = len(drills)
    (stage_dir / "sft_data.json").write_text(json.dumps(stats, indent=1))
    log.warning("gog sft: kept %d trajectories of %d questions (dropped: %s; variants: %s; reading drills: %d)",
                stats["kept"], stats["records"], stats["dropped"], stats["variants"], s.reading_drills)
    final, _ = run_gog_sft(model_path, examples, stage_dir, epochs=epochs, **train_args)
    return final


def levels_stage(recipe: Recipe, model_path: str, stage_dir: Path) -> Path:
    """Pass rate and level of every training question under `model_path`; returns the levels file."""
    from seekrl.gog_probe import level_of, pass_rates
    from seekrl.gog_train import make_gog_protocol
    from seekrl.models import load_model, load_processor
    from seekrl.train import make_client

    lv = recipe.gog.levels
    questions = _train_questions(recipe)
    model = load_model(model_path, dtype="float32" if not recipe.ray.use_gpu else recipe.model.dtype)
    if recipe.ray.use_gpu:
        import torch

        if torch.cuda.is_available():
            model.to("cuda")
    rates = pass_rates(model, load_processor(model_path), make_gog_protocol(recipe), questions, recipe.rollout,
                       lv.samples, lv.temperature, seed=recipe.seed, accuracy=lv.accuracy,
                       client=make_client(recipe.env))
    levels = {q.id: level_of(rate, lv.level1_min, lv.level1_max) for q, rate in zip(questions, rates, strict=True)}
    counts = {f"level{k}": sum(v == k for v in levels.values()) for k in (0, 1, 2)}
    record = {"model": model_path, "samples": lv.samples, "temperature": lv.temperature,
              "level1_min": lv.level1_min, "level1_max": lv.level1_max, "accuracy": lv.accuracy,
              "counts": counts, "pass_rates": {q.id: r for q, r in zip(questions, rates)}, "levels": levels}
    stage_dir.mkdir(parents=True, exist_ok=True)
    path = stage_dir / LEVELS_FILE
    path.write_text(json.dumps(record, indent=1))
    log.warning("gog levels over %d samples: %s (mean pass rate %.3f)", lv.samples, counts,
                sum(rates) / max(1, len(rates)))
    return path


def run_gog(recipe: Recipe, resume: bool = False) -> dict:
    """Run the stages of a gog recipe in order (module docstring); returns the `stages.json` summary."""
    from seekrl.config import StageSpec
    from seekrl.gog_train import train_gog_grpo
    from seekrl.models import resolve_model_path
    from seekrl.stages import _stage_recipe
    from seekrl.train import FINAL_DIR, TrainError

    out = Path(recipe.output.dir).resolve()
    stages_dir = out / "stages"
    if stages_dir.exists() and not resume:
        raise TrainError(f"{out} holds an earlier run: pass --resume to continue it, or set output.dir for a new run")
    out.mkdir(parents=True, exist_ok=True)
    world = prepare_gog_world(recipe, out) if recipe.world.enabled else None
    (out / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    base = recipe_to_dict(recipe)
    base["stages"], base["world"]["enabled"] = [], False
    stages = list(recipe.stages) or [StageSpec(name="grpo", kind="grpo")]
    validate_gog_stages(recipe, base, stages, stages_dir)

    model = resolve_model_path(recipe.model.name_or_path)
    levels: dict | None = None
    summary: dict = {"name": recipe.name, "world": str(out / "world") if world else None, "stages": []}
    for stage in stages:
        stage_dir = stages_dir / stage.name
        done = stage_dir / STAGE_FILE
        if resume and done.exists():
            info = json.loads(done.read_text())
        else:
            stage_recipe = _stage_recipe(base, recipe, stage, model, stage_dir)
            log.warning("gog stage %s (%s) from %s", stage.name, stage.kind, model)
            start = time.time()
            info = {"name": stage.name, "kind": stage.kind, "input_model": model}
            if stage.kind == "sft":
                info["model"] = str(gog_sft_stage(stage_recipe, model, stage_dir, world))
                info["sft_data"] = str(stage_dir / "sft_data.json")
            elif stage.kind == "label":
                info["model"] = model
                info["levels"] = str(levels_stage(stage_recipe, model, stage_dir))
            else:
                level_map = json.loads(Path(levels["levels"]).read_text())["levels"] if levels else None
                train_gog_grpo(stage_recipe, resume=resume and stage_dir.exists(), levels=level_map)
                info["model"] = str(stage_dir / FINAL_DIR)
                info["log_history"] = str(stage_dir / "log_history.json")
            info["seconds"] = round(time.time() - start, 1)
            stage_dir.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(info, indent=1))
        if stage.kind == "label":
            levels = info
        model = info["model"]
        summary["stages"].append(info)
    summary["final_model"] = model
    (out / "stages.json").write_text(json.dumps(summary, indent=1))
    return summary
