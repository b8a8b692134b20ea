"""`seekrl submit` and `seekrl jobs`: run recipes on a Ray cluster through the Ray Jobs API.

`seekrl submit RECIPE --address http://HEAD:8265 [key=value ...]` resolves the recipe here (so a bad key fails
before anything is sent), writes the resolved recipe into `.seekrl/submit/` under the current directory, and
submits `seekrl train` on it with the current directory as the job's working_dir (so the recipe's relative data
and index paths mean the same on the cluster). The cluster needs seekrl installed on its nodes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

jobs_app = typer.Typer(help="Follow and stop jobs submitted with `seekrl submit`.", no_args_is_help=True)

ADDRESS_HELP = "Ray dashboard address of the cluster head, e.g. http://HEAD:8265 (or $RAY_ADDRESS)."
# Never shipped with a job: environments, git history and run outputs (checkpoints are large).
EXCLUDES = [".venv/", ".git/", "**/__pycache__/", "runs/*/ray/", "runs/*/hf/", "runs/*/final/"]


def _client(address: str | None):
    import os

    from ray.job_submission import JobSubmissionClient

    from seekrl.cli import fail

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise fail("no cluster address: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    try:
        return JobSubmissionClient(address)
    except Exception as err:  # Ray raises ConnectionError, ValueError, RuntimeError for unreachable heads
        raise fail(f"cannot reach the Ray dashboard at {address}: {err}") from None


def submit_command(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted key=value overrides.")] = None,
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job to finish and print its logs.")] = False,
) -> None:
    """Submit a recipe's training to a Ray cluster; prints the job id."""
    from seekrl.cli import fail
    from seekrl.config import RecipeError, load_recipe, recipe_to_yaml

    try:
        resolved = load_recipe(recipe, overrides or [])
    except RecipeError as err:
        raise fail(str(err)) from None
    client = _client(address)
    folder = Path(".seekrl") / "submit"
    folder.mkdir(parents=True, exist_ok=True)
    shipped = folder / f"{resolved.name}-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    shipped.write_text(recipe_to_yaml(resolved))
    job_id = _submit(client, entrypoint=f"seekrl train {shipped.as_posix()}",
                     runtime_env={"working_dir": ".", "excludes": EXCLUDES,
                                  "env_vars": {"HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}},
                     metadata={"seekrl_recipe": resolved.name})
    typer.echo(job_id)
    if wait:
        status = _wait(client, job_id)
        typer.echo(client.get_job_logs(job_id), nl=False)
        if status != "SUCCEEDED":
            raise typer.Exit(1)


def _submit(client, agent_wait_s: float = 60.0, **job) -> str:
    """`submit_job`, retried while a freshly started head has no job agent yet (Ray answers 500 "No available
    agent to submit job, please try again later" for the first seconds); other errors are raised at once."""
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def _wait(client, job_id: str, timeout_s: float = 24 * 3600) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str(client.get_job_status(job_id).value)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(2)
    return "TIMEOUT"


@jobs_app.command("status")
def jobs_status(job_id: Annotated[str, typer.Argument(help="Job id printed by seekrl submit.")],
                address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None) -> None:
    """Print a job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    client = _client(address)
    typer.echo(str(_job_call(client.get_job_status, job_id).value))


@jobs_app.command("logs")
def jobs_logs(job_id: Annotated[str, typer.Argument(help="Job id printed by seekrl submit.")],
              address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None) -> None:
    """Print a job's logs so far."""
    client = _client(address)
    typer.echo(_job_call(client.get_job_logs, job_id), nl=False)


@jobs_app.command("stop")
def jobs_stop(job_id: Annotated[str, typer.Argument(help="Job id printed by seekrl submit.")],
              address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None) -> None:
    """Stop a running job."""
    client = _client(address)
    stopped = _job_call(client.stop_job, job_id)
    typer.echo("stopping" if stopped else "not running")


def _job_call(method, job_id: str):
    from seekrl.cli import fail

    try:
        return method(job_id)
    except RuntimeError as err:
        raise fail(f"job {job_id}: {err}") from None
