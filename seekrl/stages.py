"""Multi-stage runs: a recipe's `stages` run in order in one job, each starting from the previous stage's model.

Stage kinds:
- `sft`: warm start by TRL SFTTrainer on the scripted trajectories of a naive policy over the run's synthetic
  world (seekrl.sft; needs `world.enabled`), on the driver;
- `label`: AdaSearch pseudo-labels. Each training question's parametric solve rate (k = `label.samples` answers
  at `label.temperature`, EM) thresholded at `label.threshold` (`solve_rate_labels`), computed in a Ray task;
  written to `decision_labels.json` in the stage directory and next to the model it labelled; later GRPO stages
  get them as the `decision_label` column (what `decision_reward` reads);
- `grpo`: `seekrl.train.train` on Ray Train with the recipe plus the stage's `overrides`.

Each stage writes into output.dir/stages/<name>/ and marks itself done with `stage.json`; `--resume` skips the
stages that are done and resumes the first one that is not. `stages.json` in output.dir lists what each stage
produced and how long it took.

With `world.enabled` the world is generated first (output.dir/world: corpus, BM25 index, train and held-out
questions) and fills in data.train, data.eval and env where the recipe leaves them empty; model
`seekrl-tiny-world` is a tiny model whose tokenizer was trained on that world.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from seekrl.config import DatasetSpec, Recipe, RecipeError, load_recipe_dict, recipe_to_dict, recipe_to_yaml

log = logging.getLogger(__name__)

WORLD_MODEL = "seekrl-tiny-world"
STAGE_FILE = "stage.json"
LABELS_FILE = "decision_labels.json"


def prepare_world(recipe: Recipe, out: Path):
    """Generate (or reuse) the run's world in out/world and point data, env and model at it."""
    from seekrl.envs.world import generate_world, load_world, write_world

    w = recipe.world
    world_dir = out / "world"
    if (world_dir / "world.json").exists() and (world_dir / "index" / "manifest.json").exists():
        world = load_world(world_dir)
    else:
        world = generate_world(recipe.seed, num_people=w.num_people, known_fraction=w.known_fraction,
                               num_practice=w.num_practice, train_phrasings=w.train_phrasings,
                               num_countries=w.num_countries)
        write_world(world, world_dir)
    if not recipe.data.train:
        recipe.data.train = [DatasetSpec(path=str(world_dir / "train.jsonl"))]
    if not recipe.data.eval:
        recipe.data.eval = [DatasetSpec(path=str(world_dir / "heldout.jsonl"))]
    if recipe.env.kind == "none":
        recipe.env.kind, recipe.env.index_dir = "index", str(world_dir / "index")
    if recipe.model.name_or_path == WORLD_MODEL:
        base = world_dir / "base_model"
        if not (base / "config.json").exists():
            from seekrl.testing import build_world_model

            build_world_model(world, base, seed=recipe.seed, num_layers=w.model_layers)
        recipe.model.name_or_path = str(base)
    return world


def _stage_recipe(base: dict, recipe: Recipe, stage, model: str, stage_dir: Path) -> Recipe:
    overrides = [*stage.overrides, f"model.name_or_path={model}", f"output.dir={stage_dir}",
                 f"name={recipe.name}-{stage.name}"]
    return load_recipe_dict(base, overrides, source=f"stage {stage.name!r}")


def validate_stages(recipe: Recipe, base: dict | None = None, stages: list | None = None,
                    stages_dir: Path | None = None) -> list[Recipe]:
    """Each stage's recipe (the recipe plus the stage's overrides), checked before anything runs: a typo in the
    last stage costs nothing; a decision reward needs a label stage before it. Returns the stage recipes."""
    if base is None:
        base = recipe_to_dict(recipe)
        base["stages"], base["world"]["enabled"] = [], False
    stages = list(recipe.stages) if stages is None else stages
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise RecipeError(f"stage names must differ: {names}")
    stages_dir = stages_dir or Path(recipe.output.dir) / "stages"
    labelled, checked = False, []
    for stage in stages:
        stage_recipe = _stage_recipe(base, recipe, stage, "placeholder", stages_dir / stage.name)
        labelled = labelled or stage.kind == "label"
        if stage.kind == "grpo" and not labelled and any(r.name == "decision" for r in stage_recipe.rewards):
            raise RecipeError(f"stage {stage.name!r}: the decision reward needs pseudo-labels: put a `label` stage "
                              "before this GRPO stage")
        if stage.kind == "sft" and not recipe.world.enabled:
            raise RecipeError(f"stage {stage.name!r}: an sft stage scripts trajectories over the run's synthetic "
                              "world: set world.enabled: true")
        checked.append(stage_recipe)
    return checked


def solve_rate_task(recipe_dict: dict, model_path: str, rows: list[dict]) -> list[float]:
    """Parametric solve rates of `rows` (`prompt`, `golden_answers`) under `model_path` (runs as a Ray task)."""
    from seekrl.config import load_recipe_dict
    from seekrl.models import load_model, load_tokenizer
    from seekrl.probe import solve_rates

    recipe = load_recipe_dict(recipe_dict)
    model = load_model(model_path, dtype="float32")
    model.eval()
    return solve_rates(model, load_tokenizer(model_path), recipe, [r["prompt"] for r in rows],
                       [r["golden_answers"] for r in rows], recipe.label.samples, recipe.label.temperature,
                       seed=recipe.seed)


def label_stage(recipe: Recipe, model_path: str, stage_dir: Path) -> Path:
    """Solve-rate pseudo-labels of the training questions; returns the labels file."""
    import ray

    from seekrl.rewards import solve_rate_labels
    from seekrl.train import init_ray, training_rows

    rows = training_rows(recipe)
    init_ray(recipe)
    rates = ray.get(ray.remote(num_cpus=1)(solve_rate_task).remote(recipe_to_dict(recipe), model_path, rows))
    labels = solve_rate_labels({r["id"]: rate for r, rate in zip(rows, rates, strict=True)}, recipe.label.threshold)
    record = {"model": model_path, "samples": recipe.label.samples, "threshold": recipe.label.threshold,
              "temperature": recipe.label.temperature,
              "solve_rates": {r["id"]: rate for r, rate in zip(rows, rates)}, "labels": labels}
    stage_dir.mkdir(parents=True, exist_ok=True)
    path = stage_dir / LABELS_FILE
    path.write_text(json.dumps(record, indent=1))
    if Path(model_path).is_dir():
        (Path(model_path) / LABELS_FILE).write_text(json.dumps(record, indent=1))
    yes = sum(v == "yes" for v in labels.values())
    log.warning("label stage: %d of %d training questions labelled yes (solve rate >= %.2f over %d samples)",
                yes, len(labels), recipe.label.threshold, recipe.label.samples)
    return path


def sft_stage(recipe: Recipe, world, model_path: str, stage_dir: Path) -> Path:
    """The scripted warm start (the SFT phases of SFTSection); returns the trained model directory."""
    import random

    from seekrl.envs.client import InProcessClient
    from seekrl.envs.index import load_index
    from seekrl.models import load_tokenizer
    from seekrl.sft import reading_examples, run_sft, world_examples

    if world is None:
        raise RecipeError("an sft stage scripts trajectories over the run's synthetic world: set world.enabled: true")
    s = recipe.sft
    tokenizer = load_tokenizer(model_path)
    client = InProcessClient(load_index(recipe.env.index_dir), default_topk=recipe.env.topk)
    examples = world_examples(world, tokenizer, client, seed=recipe.seed, p_yes=s.p_yes,
                              knowledge_repeats=s.knowledge_repeats, search_repeats=s.search_repeats,
                              adaptive_repeats=s.adaptive_repeats, topk=recipe.env.topk,
                              max_turns=recipe.agent.max_turns)

    def drills(count: int, seed: int, bare: bool = False) -> list[dict]:
        return reading_examples(world, tokenizer, count, seed=seed, topk=recipe.env.topk,
                                max_turns=recipe.agent.max_turns, bare=bare)

    reading = drills(s.reading_drills, recipe.seed, bare=True)
    rng = random.Random(recipe.seed)
    pretraining = examples["knowledge"] * s.knowledge_epochs + drills(s.knowledge_reading_drills, recipe.seed + 1)
    rng.shuffle(pretraining)
    policy = examples["policy"] + drills(s.policy_reading_drills, recipe.seed + 2)
    rng.shuffle(policy)
    history: dict[str, list] = {}
    model = model_path
    phases = [("reading", reading, s.knowledge_learning_rate, 1, "constant_with_warmup"),
              ("knowledge", pretraining, s.knowledge_learning_rate, 1, "constant_with_warmup"),
              ("policy", policy, s.learning_rate, s.epochs, "cosine")]
    for name, data, lr, epochs, scheduler in phases:
        if not data:
            continue
        # The last phase writes the stage's model into stage_dir itself (stage_dir/final).
        phase_dir = stage_dir if name == "policy" else stage_dir / name
        model, history[name] = run_sft(str(model), data, phase_dir, epochs=epochs, learning_rate=lr,
                                       batch_size=s.batch_size, seed=recipe.seed, scheduler=scheduler)
    (stage_dir / "log_history.json").write_text(json.dumps(history, indent=1))
    return model


def run_stages(recipe: Recipe, resume: bool = False) -> dict:
    """Run every stage of `recipe` in order (module docstring); returns the `stages.json` summary."""
    from seekrl.train import FINAL_DIR, TrainError, train

    out = Path(recipe.output.dir).resolve()
    stages_dir = out / "stages"
    if stages_dir.exists() and not resume:
        raise TrainError(f"{out} holds an earlier run: pass --resume to continue it, or set output.dir for a new run")
    out.mkdir(parents=True, exist_ok=True)
    world = prepare_world(recipe, out) if recipe.world.enabled else None
    (out / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    base = recipe_to_dict(recipe)
    base["stages"], base["world"]["enabled"] = [], False
    stages = list(recipe.stages)
    if not stages:
        from seekrl.config import StageSpec

        stages = [StageSpec(name="grpo", kind="grpo")]
    validate_stages(recipe, base, stages, stages_dir)

    from seekrl.models import resolve_model_path

    model = resolve_model_path(recipe.model.name_or_path)
    labels: dict | None = None
    summary: dict = {"name": recipe.name, "world": str(out / "world") if world else None, "stages": []}
    for stage in stages:
        stage_dir = stages_dir / stage.name
        done = stage_dir / STAGE_FILE
        if resume and done.exists():
            info = json.loads(done.read_text())
        else:
            stage_recipe = _stage_recipe(base, recipe, stage, model, stage_dir)
            log.warning("stage %s (%s) from %s", stage.name, stage.kind, model)
            start = time.time()
            info = {"name": stage.name, "kind": stage.kind, "input_model": model}
            if stage.kind == "sft":
                info["model"] = str(sft_stage(stage_recipe, world, model, stage_dir))
            elif stage.kind == "label":
                info["model"] = model
                info["labels"] = str(label_stage(stage_recipe, model, stage_dir))
            else:
                label_map = json.loads(Path(labels["labels"]).read_text())["labels"] if labels else None
                train(stage_recipe, resume=resume and stage_dir.exists(), labels=label_map)
                info["model"] = str(stage_dir / FINAL_DIR)
                info["log_history"] = str(stage_dir / "log_history.json")
            info["seconds"] = round(time.time() - start, 1)
            done.write_text(json.dumps(info, indent=1))
        if stage.kind == "label":
            labels = info
        model = info["model"]
        summary["stages"].append(info)
    summary["final_model"] = model
    (out / "stages.json").write_text(json.dumps(summary, indent=1))
    return summary
