"""`seekrl train RECIPE [key=value ...]`: run a recipe's GRPO training on Ray (see seekrl.train)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def train_command(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file (see recipes/).")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Dotted key=value overrides, e.g. grpo.max_steps=10.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in output.dir from its last "
                                         "checkpoint (same step count and data order).")] = False,
) -> None:
    """Train an agent with GRPO on Ray: embedded ray.init() here, or the cluster at ray.address."""
    from seekrl.cli import fail
    from seekrl.config import RecipeError, load_recipe
    from seekrl.data import DataError
    from seekrl.train import TrainError, train

    try:
        resolved = load_recipe(recipe, overrides or [])
        result = train(resolved, resume=resume)
    except (RecipeError, DataError, TrainError, ValueError) as err:
        raise fail(str(err)) from None
    import json

    from seekrl.train import step_table

    out = Path(resolved.output.dir).resolve()
    if isinstance(result, dict):  # a staged run (seekrl.stages)
        for stage in result["stages"]:
            typer.echo(f"stage {stage['name']} ({stage['kind']}): {stage.get('seconds', 0):.0f} s -> {stage['model']}")
            if stage.get("log_history") and Path(stage["log_history"]).exists():
                typer.echo(step_table(json.loads(Path(stage["log_history"]).read_text())))
        typer.echo(f"done: final model {result['final_model']}; summary in {out / 'stages.json'}")
        return
    history = out / "log_history.json"
    if history.exists():
        typer.echo(step_table(json.loads(history.read_text())))
    typer.echo(f"done: {result.metrics.get('step', '?')} steps; model saved to {out / 'final'}")


def quickstart_command(
    seed: Annotated[int, typer.Option("--seed", help="Seed of the world, the models and the training.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Output directory (models, results, curves).")] = Path(
        "runs/quickstart"),
    recipe: Annotated[Path | None, typer.Option("--recipe", help="Recipe to run (default recipes/quickstart.yaml).")
                      ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Dotted key=value overrides of the recipe, e.g. world.num_people=24.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip the stages already done in --out.")] = False,
) -> None:
    """AdaSearch in miniature, offline on a CPU: world, SFT warm start, solve / label / decide stages on Ray;
    prints warm start vs trained agent on held-out questions, writes quickstart_results.json and
    training_curves.png into --out."""
    from seekrl.cli import fail
    from seekrl.config import RecipeError, load_recipe
    from seekrl.data import DataError
    from seekrl.quickstart import default_recipe_path, run_quickstart, table
    from seekrl.train import TrainError

    try:
        resolved = load_recipe(recipe or default_recipe_path(),
                               [*(overrides or []), f"seed={seed}", f"output.dir={out}"])
        results = run_quickstart(resolved, resume=resume)
    except (RecipeError, DataError, TrainError, ValueError) as err:
        raise fail(str(err)) from None
    typer.echo(table(results))
    typer.echo(f"wall time {results['total_seconds']:.0f} s; results in {out / 'quickstart_results.json'}, "
               f"curves in {out / 'training_curves.png'}")
