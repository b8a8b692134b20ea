"""`seekrl gog-quickstart`: Glance-or-Gaze in miniature, offline, on a CPU.

Runs recipes/gog_quickstart.yaml: the composite-image world (seekrl.envs.image_world: 2x2 composites of the real
images in ../shared/data/multimodal, each image a made-up entity only the image knowledge base knows), a tiny
Qwen2.5-VL whose tokenizer was trained on the world's text, reflective SFT on scripted Glance -> Decision ->
Gaze (-> reflect) trajectories, pass-rate levels, and GRPO (Ray Train, TRL GRPOTrainer, the VLM rollout engine)
on the level the recipe names. It then measures the SFT start and the trained agent the same way on the
held-out composites, whose images were never seen in training (seekrl.gog_probe.gog_agent_metrics), greedy and
as sampled (`SAMPLES` rollouts per question at the rollout temperature, the policy GRPO trains):

- accuracy (EM of the answer), also split by question kind (name / origin);
- gaze rate (questions with a gaze), gaze share (gazes among all tool calls), on-target gaze share (gazes whose
  box overlaps the asked tile with IoU >= 0.5), glance rate, gazes per question.

The same greedy metrics on the first `TRAIN_PROBE` training questions (images seen in training) are reported
beside them (`train_probe`), since GRPO trains there. Prints the tables, writes gog_quickstart_results.json
(`{"seed", "sft_start": {...}, "trained": {...}, "sampled": {"temperature", "samples", "sft_start", "trained"},
"train_probe": {"sft_start", "trained"}}`; greedy unless under "sampled") and training_curves.png into --out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from seekrl.config import Recipe

TRAIN_PROBE = 64
SAMPLES = 4
COLUMNS = (("accuracy", "em"), ("gaze rate", "gaze_rate"), ("gaze share", "gaze_share"),
           ("on-target", "on_target_gaze_share"), ("glance rate", "glance_rate"), ("gazes/q", "gazes"))


def default_recipe_path() -> Path:
    return Path(__file__).resolve().parent.parent / "recipes" / "gog_quickstart.yaml"


def measure(model_path: str, recipe: Recipe, questions, temperature: float = 0.0, samples: int = 1) -> dict:
    """The table's metrics for one model on `questions` (module docstring): greedy, or `samples` rollouts per
    question at `temperature`."""
    from seekrl.gog_probe import gog_agent_metrics
    from seekrl.gog_train import make_gog_protocol
    from seekrl.models import load_model, load_processor

    model = load_model(model_path, dtype="float32")
    metrics, lines = gog_agent_metrics(model, load_processor(model_path), make_gog_protocol(recipe), questions,
                                       recipe.rollout, seed=recipe.seed, temperature=temperature, samples=samples)
    kinds: dict[str, list[float]] = {}
    for line in lines:  # the world's question ids end with their kind: "heldout-000-0-name"
        kinds.setdefault(line["id"].rsplit("-", 1)[-1], []).append(line["em"])
    metrics["em_by_kind"] = {kind: sum(ems) / len(ems) for kind, ems in sorted(kinds.items())}
    return metrics


def table(results: dict) -> str:
    header = f"{'':12s}" + "".join(f"{name:>13s}" for name, _ in COLUMNS)
    lines = []
    blocks = [(f"held-out composites of the GoG quickstart world (seed {results['seed']}, n={results['n_heldout']} "
               "questions), greedy", results)]
    if "sampled" in results:
        sampled = results["sampled"]
        blocks.append((f"the same, sampled: {sampled['samples']} rollouts per question at temperature "
                       f"{sampled['temperature']:g}, averaged", sampled))
    if "train_probe" in results:
        blocks.append((f"training questions (the first {results['train_probe']['n']}), greedy",
                       results["train_probe"]))
    for title, block in blocks:
        lines += [title, header]
        for key, label in (("sft_start", "SFT start"), ("trained", "trained")):
            lines.append(f"{label:12s}" + "".join(f"{block[key][m]:13.3f}" for _, m in COLUMNS))
        lines.append("accuracy by question kind: " + "; ".join(
            f"{label} " + ", ".join(f"{kind} {em:.3f}" for kind, em in block[key].get("em_by_kind", {}).items())
            for key, label in (("sft_start", "SFT start"), ("trained", "trained"))))
    return "\n".join(lines)


def run_gog_quickstart(recipe: Recipe, resume: bool = False) -> dict:
    """Train the recipe, measure the SFT start and the trained agent, write results and curves."""
    from seekrl.config import load_recipe
    from seekrl.data import load_qa
    from seekrl.gog_probe import questions_from_records
    from seekrl.quickstart import plot_curves
    from seekrl.train import train

    if recipe.agent.protocol != "gog" or not recipe.world.enabled:
        raise ValueError("the GoG quickstart runs a gog recipe over its composite world: agent.protocol gog, "
                         "world.enabled true")
    out = Path(recipe.output.dir).resolve()
    start = time.time()
    summary = train(recipe, resume=resume)
    train_seconds = time.time() - start
    sft = next((s for s in summary["stages"] if s["kind"] == "sft"), None)
    if sft is None:
        raise ValueError("the GoG quickstart compares the SFT start with the trained agent: give an sft stage")
    questions = questions_from_records(load_qa(Path(summary["world"]) / "heldout.jsonl"))
    seen = questions_from_records(load_qa(Path(summary["world"]) / "train.jsonl"))[:TRAIN_PROBE]
    resolved = load_recipe(out / "recipe.yaml")
    levels = next((json.loads(Path(s["levels"]).read_text())["counts"] for s in summary["stages"]
                   if s["kind"] == "label"), None)
    results = {
        "seed": recipe.seed, "n_heldout": len(questions),
        "sft_start": measure(sft["model"], resolved, questions),
        "trained": measure(summary["final_model"], resolved, questions),
        "train_probe": {"n": len(seen), "sft_start": measure(sft["model"], resolved, seen),
                        "trained": measure(summary["final_model"], resolved, seen)},
        "levels": levels, "train_seconds": round(train_seconds, 1), "total_seconds": round(time.time() - start, 1),
        "stages": {s["name"]: s.get("seconds") for s in summary["stages"]},
    }
    temperature = resolved.rollout.temperature
    if temperature > 0:
        results["sampled"] = {"temperature": temperature, "samples": SAMPLES, **{
            key: measure(model, resolved, questions, temperature, SAMPLES)
            for key, model in (("sft_start", sft["model"]), ("trained", summary["final_model"]))}}
        results["total_seconds"] = round(time.time() - start, 1)
    (out / "gog_quickstart_results.json").write_text(json.dumps(results, indent=1))
    plot_curves(summary, out / "training_curves.png")
    return results


def gog_quickstart_command(
    seed: Annotated[int, typer.Option("--seed", help="Seed of the world, the models and the training.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Output directory (world, models, results, curves).")] = Path(
        "runs/gog_quickstart"),
    recipe: Annotated[Path | None, typer.Option("--recipe", help="Recipe to run (default "
                                                "recipes/gog_quickstart.yaml).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Dotted key=value overrides, e.g. gog.levels.train_on=all.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip the stages already done in --out.")] = False,
) -> None:
    """Glance-or-Gaze in miniature, offline on a CPU: composite world, reflective SFT, pass-rate levels, GRPO on
    Ray; prints SFT start vs trained agent on held-out composites (accuracy, gaze rate and share, on-target
    gazes; greedy, and sampled at the rollout temperature), writes gog_quickstart_results.json and
    training_curves.png into --out."""
    from seekrl.cli import fail
    from seekrl.config import RecipeError, load_recipe
    from seekrl.data import DataError
    from seekrl.train import TrainError

    try:
        resolved = load_recipe(recipe or default_recipe_path(),
                               [*(overrides or []), f"seed={seed}", f"output.dir={out}"])
        results = run_gog_quickstart(resolved, resume=resume)
    except (RecipeError, DataError, TrainError, ValueError) as err:
        raise fail(str(err)) from None
    typer.echo(table(results))
    typer.echo(f"wall time {results['total_seconds']:.0f} s; results in {out / 'gog_quickstart_results.json'}")
