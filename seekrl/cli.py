"""The `seekrl` command. Each subcommand lives in the module of its job; this file only wires them up.

Errors a user can cause end with one message on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from seekrl import __version__
from seekrl.cost_cli import cost
from seekrl.eval_cli import eval_command
from seekrl.gog_quickstart import gog_quickstart_command
from seekrl.retriever_cli import retriever_app
from seekrl.serve import serve_command
from seekrl.submit_cli import jobs_app, submit_command
from seekrl.train_cli import quickstart_command, train_command

app = typer.Typer(
    name="seekrl",
    help="Train, evaluate and serve adaptive search agents (Search-R1, AdaSearch, Glance-or-Gaze) with GRPO on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
recipe_app = typer.Typer(help="Check and inspect recipe YAML files.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
app.add_typer(retriever_app, name="retriever")
app.command("cost")(cost)
app.command("eval")(eval_command)
app.command("serve")(serve_command)
app.command("train")(train_command)
app.command("quickstart")(quickstart_command)
app.command("gog-quickstart")(gog_quickstart_command)
app.command("submit")(submit_command)
app.add_typer(jobs_app, name="jobs")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def version() -> None:
    """Print the seekrl version and the versions of the libraries it runs on."""
    import importlib.metadata as md

    typer.echo(f"seekrl {__version__}")
    for lib in ("torch", "transformers", "trl", "peft", "ray", "datasets", "deepspeed", "triton"):
        try:
            typer.echo(f"  {lib} {md.version(lib)}")
        except md.PackageNotFoundError:
            typer.echo(f"  {lib} (not installed)")


@recipe_app.command("validate")
def recipe_validate(
    files: Annotated[list[Path], typer.Argument(help="Recipe YAML files to check.")],
) -> None:
    """Check recipes against the schema (and each stage's overrides); exit 2 naming the file, the bad key and the
    closest valid key."""
    from seekrl.config import RecipeError, load_recipe
    from seekrl.gog_stages import validate_gog_recipe
    from seekrl.stages import validate_stages

    bad = 0
    for path in files:
        try:
            recipe = load_recipe(path)
            validate_gog_recipe(recipe) if recipe.agent.protocol == "gog" else validate_stages(recipe)
        except RecipeError as err:
            typer.echo(f"error: {err}", err=True)
            bad += 1
        else:
            typer.echo(f"ok: {path}")
    if bad:
        raise typer.Exit(2)


@recipe_app.command("show")
def recipe_show(
    file: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Dotted key=value overrides, e.g. grpo.learning_rate=1e-6.")
    ] = None,
) -> None:
    """Print the fully resolved recipe (every field, defaults included, overrides applied)."""
    from seekrl.config import RecipeError, load_recipe, recipe_to_yaml

    try:
        recipe = load_recipe(file, overrides or [])
    except RecipeError as err:
        raise fail(str(err)) from None
    typer.echo(recipe_to_yaml(recipe), nl=False)


@recipe_app.command("fields")
def recipe_fields() -> None:
    """List every recipe key with its type and meaning."""
    from seekrl.config import field_help

    for key, tp, help_text in field_help():
        typer.echo(f"{key:45s} {tp:28s} {help_text}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    try:
        app(args=argv, prog_name="seekrl", standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
