"""Multi-stage runs: the AdaSearch stages (SFT warm start, solve, label, decide) on a tiny synthetic world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from seekrl.config import RecipeError, load_recipe, load_recipe_dict
from seekrl.train import train

ROOT = Path(__file__).resolve().parents[2]


def _tiny_quickstart(tmp_path: Path, **extra) -> Path:
    """recipes/quickstart.yaml shrunk to seconds: 6 people, a few SFT steps, 1-2 GRPO steps per stage, 1 worker."""
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    recipe["world"].update(num_people=6, num_practice=3)
    recipe["sft"].update(knowledge_epochs=2, epochs=0.2, knowledge_repeats=1, search_repeats=1, adaptive_repeats=1,
                         reading_drills=16, knowledge_reading_drills=8, policy_reading_drills=8)
    recipe["label"]["samples"] = 2
    recipe["grpo"].update(max_steps=1, per_device_train_batch_size=4, eval_limit=4)
    recipe["ray"]["num_workers"] = 1
    recipe["output"]["dir"] = str(tmp_path / "run")
    recipe["stages"][-1]["overrides"] = [o for o in recipe["stages"][-1]["overrides"]
                                         if not o.startswith(("grpo.max_steps", "grpo.eval_steps"))]
    recipe["stages"][-1]["overrides"] += ["grpo.max_steps=2", "grpo.eval_steps=1"]
    recipe.update(extra)
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.timeout(900)
def test_quickstart_runs_the_adasearch_stages_in_order_and_reports(tmp_path):
    from seekrl.quickstart import METRICS, run_quickstart, table

    recipe = load_recipe(_tiny_quickstart(tmp_path))
    results = run_quickstart(recipe)
    out = tmp_path / "run"
    summary = json.loads((out / "stages.json").read_text())

    # The quickstart's report: the JSON schema, one table, and the training curves.
    saved = json.loads((out / "quickstart_results.json").read_text())
    assert saved["seed"] == 0 and saved["n_heldout"] == 18
    for key in ("warm_start", "trained"):
        assert set(METRICS) <= set(saved[key]) and all(0.0 <= saved[key][m] <= 1.0 for m in METRICS)
        # The breakdown counts the same held-out rollouts: its totals give back the table's rates.
        rows = saved[key]["breakdown"]
        assert sum(r["n"] for r in rows) == 18
        assert {(r["known"], r["kind"]) for r in rows} <= {(k, kind) for k in (True, False)
                                                          for kind in ("birthplace", "job", "country")}
        assert sum(r["n"] for r in rows if r["correct"]) / 18 == pytest.approx(saved[key]["em"])
        assert sum(r["n"] for r in rows if r["decision"] == "yes") / 18 == pytest.approx(
            saved[key]["decision_yes_rate"])
        assert sum(r["n"] for r in rows if r["label"] == "yes") / 18 == pytest.approx(saved[key]["label_yes_rate"])
    lines = table(results).splitlines()
    assert lines[1].split() == ["EM", "search", "rate", "F1_aware", "reward"]
    assert lines[2].startswith("warm start") and lines[3].startswith("trained")
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = [s["name"] for s in summary["stages"]]
    assert names == ["warm_start", "solve_parametric", "solve_search", "label", "decide"]
    # Each stage starts from the model the previous one produced.
    for before, after in zip(summary["stages"], summary["stages"][1:]):
        assert after["input_model"] == before["model"]
    assert summary["final_model"] == str(out / "stages" / "decide" / "final")
    assert (Path(summary["final_model"]) / "config.json").exists()
    # The warm start ran its three SFT phases in order: reading drills, known facts, policy.
    sft_history = json.loads((out / "stages" / "warm_start" / "log_history.json").read_text())
    assert list(sft_history) == ["reading", "knowledge", "policy"]
    assert all(any("train_loss" in h for h in sft_history[phase]) for phase in sft_history)

    # The label stage wrote one yes/no label per training question (6 people x 3 kinds x the recipe's 2 training
    # phrasings), next to the model it labelled too.
    label = summary["stages"][3]
    record = json.loads(Path(label["labels"]).read_text())
    assert recipe.world.train_phrasings == 2
    assert len(record["labels"]) == 36 and set(record["labels"].values()) <= {"yes", "no"}
    assert all(0.0 <= r <= 1.0 for r in record["solve_rates"].values())
    assert (Path(label["model"]) / "decision_labels.json").exists()

    # The decide stage optimised the decision reward and evaluated on held-out questions every step.
    history = json.loads((out / "stages" / "decide" / "log_history.json").read_text())
    steps = [h for h in history if "reward" in h]
    assert [h["step"] for h in steps] == [1, 2]
    assert all("rewards/decision/mean" in h for h in steps)
    assert all(0.0 <= h["heldout/f1_aware"] <= 1.0 and "heldout/em" in h for h in steps)
    # Each GRPO stage ran its own mode (the stage overrides), and the parametric one never searched.
    modes = {name: load_recipe(out / "stages" / name / "recipe.yaml").agent.adasearch_mode
             for name in ("solve_parametric", "solve_search", "decide")}
    assert modes == {"solve_parametric": "parametric", "solve_search": "search", "decide": "decide"}
    parametric = json.loads((out / "stages" / "solve_parametric" / "log_history.json").read_text())
    assert parametric[0]["rollout/search_rate"] == 0.0


def test_a_decision_reward_without_labels_is_refused_before_ray(tmp_path):
    path = _tiny_quickstart(tmp_path)
    recipe = yaml.safe_load(path.read_text())
    recipe["stages"] = [s for s in recipe["stages"] if s["name"] in ("warm_start", "decide")]
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="decision reward needs pseudo-labels: put a `label` stage"):
        train(load_recipe(path))


def test_a_bad_stage_override_is_refused_before_anything_runs(tmp_path):
    path = _tiny_quickstart(tmp_path)
    recipe = yaml.safe_load(path.read_text())
    recipe["stages"][2]["overrides"] = ["agent.adasearch_mod=search"]
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="stage 'solve_search'.*did you mean 'agent.adasearch_mode'"):
        train(load_recipe(path))
    assert not (tmp_path / "run" / "stages").exists()
    with pytest.raises(RecipeError, match="stages.0.kind must be one of"):
        load_recipe_dict({"stages": [{"name": "x", "kind": "rl"}]})


def test_recipe_validate_checks_stage_overrides(tmp_path):
    from typer.testing import CliRunner

    from seekrl.cli import app

    path = _tiny_quickstart(tmp_path)
    recipe = yaml.safe_load(path.read_text())
    recipe["stages"][-1]["overrides"].append("grpo.lerning_rate=1e-4")
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["recipe", "validate", str(path)])
    assert result.exit_code == 2
    assert "stage 'decide'" in result.output and "did you mean 'grpo.learning_rate'" in result.output
    for good in sorted((ROOT / "recipes").glob("*.yaml")):
        assert CliRunner().invoke(app, ["recipe", "validate", str(good)]).exit_code == 0, good


def test_the_recipe_world_section_sets_the_number_of_countries(tmp_path):
    from seekrl.envs.world import load_world
    from seekrl.stages import prepare_world

    base = {"world": {"enabled": True, "num_people": 6, "num_practice": 0}, "model": {"name_or_path": "seekrl-tiny-text"}}
    counts = {}
    for n in (4, 6):
        recipe = load_recipe_dict({**base, "world": {**base["world"], "num_countries": n}})
        world = prepare_world(recipe, tmp_path / f"c{n}")
        assert load_world(tmp_path / f"c{n}" / "world").cities == world.cities
        counts[n] = len({city.country for city in world.cities})
        assert recipe.data.train[0].path.endswith("train.jsonl")
    assert counts == {4: 4, 6: 6}
