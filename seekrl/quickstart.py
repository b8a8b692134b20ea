"""`seekrl quickstart`: AdaSearch in miniature, offline, on a laptop CPU.

Runs recipes/quickstart.yaml (a synthetic knowledge world, a tiny model warm-started by SFT on a naive policy,
then the AdaSearch stages on Ray with real GRPO), then measures the warm start and the trained agent on the
world's held-out questions the same way (seekrl.probe.agent_metrics: the greedy routed agent, which decides and
then solves with the parametric or the search prompt, as the stages train it; labels from each model's own
parametric solve rates):

- EM of the answer, search rate (share of questions with at least one search);
- F1_aware of the assessments against the labels (seekrl.rewards.f1_aware);
- reward: the decide stage's reward on held-out questions, the share of assessments equal to the label.

Prints one table, writes quickstart_results.json (`{"seed", "warm_start": {...}, "trained": {...}}`) and
training_curves.png into --out. Each model's entry also has `breakdown`: its held-out outcomes counted by whether
the person is known, the kind of question, the assessment, the label and whether the answer was right (what
the agent gets right and wrong, and why).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from seekrl.config import Recipe

METRICS = ("em", "search_rate", "f1_aware", "reward")


def default_recipe_path() -> Path:
    return Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"


def measure(model_path: str, recipe: Recipe, records: list[dict]) -> dict:
    """The table's metrics for one model on `records` (module docstring)."""
    from seekrl.envs.client import InProcessClient
    from seekrl.envs.index import load_index
    from seekrl.models import load_model, load_tokenizer
    from seekrl.probe import agent_metrics

    model = load_model(model_path, dtype="float32")
    client = InProcessClient(load_index(recipe.env.index_dir), default_topk=recipe.env.topk)
    metrics = agent_metrics(model, load_tokenizer(model_path), recipe, client, records, seed=recipe.seed,
                            breakdown=("known", "kind"))
    metrics["reward"] = metrics.pop("decision_reward")
    return metrics


def table(results: dict) -> str:
    header = f"{'':12s}" + "".join(f"{m:>13s}" for m in ("EM", "search rate", "F1_aware", "reward"))
    lines = [f"held-out questions of the quickstart world (seed {results['seed']}, n={results['n_heldout']})",
             header]
    for key, label in (("warm_start", "warm start"), ("trained", "trained")):
        lines.append(f"{label:12s}" + "".join(f"{results[key][m]:13.3f}" for m in METRICS))
    return "\n".join(lines)


def plot_curves(summary: dict, path: Path) -> Path:
    """Reward per GRPO step for each stage, and the periodic held-out metrics of the decide stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grpo = [s for s in summary["stages"] if s["kind"] == "grpo" and Path(s.get("log_history", "")).exists()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    for stage in grpo:
        history = [h for h in json.loads(Path(stage["log_history"]).read_text()) if "reward" in h]
        steps = [offset + h["step"] for h in history]
        axes[0].plot(steps, [h["reward"] for h in history], marker=".", label=stage["name"])
        for key, style in (("heldout/f1_aware", "-"), ("heldout/em", "--"), ("heldout/search_rate", ":")):
            points = [(offset + h["step"], h[key]) for h in history if key in h]
            if points:
                axes[1].plot(*zip(*points), style, marker="o",
                             label=f"{stage['name']}: {key.removeprefix('heldout/')}")
        offset = steps[-1] if steps else offset
    axes[0].set(title="GRPO reward per step (stages in order)", xlabel="step (cumulative)", ylabel="mean reward")
    axes[1].set(title="held-out evaluation during training", xlabel="step (cumulative)", ylim=(-0.02, 1.02))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_quickstart(recipe: Recipe, resume: bool = False) -> dict:
    """Train the quickstart recipe, measure warm start and trained agent, write results and curves."""
    from seekrl.train import train

    out = Path(recipe.output.dir).resolve()
    start = time.time()
    summary = train(recipe, resume=resume)
    train_seconds = time.time() - start
    sft = next((s for s in summary["stages"] if s["kind"] == "sft"), None)
    if sft is None:
        raise ValueError("the quickstart compares the SFT warm start with the trained agent: give an sft stage")
    records = [json.loads(line) for line in Path(summary["world"], "heldout.jsonl").read_text().splitlines()]
    eval_recipe = _eval_recipe(recipe, out)
    results = {
        "seed": recipe.seed, "n_heldout": len(records),
        "warm_start": measure(sft["model"], eval_recipe, records),
        "trained": measure(summary["final_model"], eval_recipe, records),
        "train_seconds": round(train_seconds, 1), "total_seconds": round(time.time() - start, 1),
        "stages": {s["name"]: s.get("seconds") for s in summary["stages"]},
    }
    (out / "quickstart_results.json").write_text(json.dumps(results, indent=1))
    plot_curves(summary, out / "training_curves.png")
    return results


def _eval_recipe(recipe: Recipe, out: Path) -> Recipe:
    """The recipe as its world run resolved it (data, env), with the routed agent that is evaluated."""
    from seekrl.config import load_recipe

    resolved = load_recipe(out / "recipe.yaml")
    resolved.agent.protocol, resolved.agent.adasearch_mode = "adasearch", "routed"
    return resolved
