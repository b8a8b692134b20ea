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
    history = out / "log_history.json"
    if history.exists():
        typer.echo(step_table(json.loads(history.read_text())))
    typer.echo(f"done: {result.metrics.get('step', '?')} steps; model saved to {out / 'final'}")
