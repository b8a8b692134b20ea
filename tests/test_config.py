"""Recipe schema: every recipe validates; bad keys, bad types and overrides behave as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seekrl.config import Recipe, RecipeError, field_help, load_recipe, load_recipe_dict, recipe_to_yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("**/*.yaml"))
SEEKRL = str(Path(sys.executable).parent / "seekrl")


def test_there_are_recipes():
    assert len(RECIPES) >= 3


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_validates_and_starts_with_its_command(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# seekrl ") and path.name in first, f"{path.name}: first line must be its command"


def test_every_field_has_help():
    rows = field_help()
    missing = [key for key, _, text in rows if not text.strip()]
    assert not missing
    assert {"grpo.num_generations", "model.lora.r", "rewards.N.weight", "kinetics.hardware"} <= {r[0] for r in rows}


def test_defaults_come_from_the_dataclasses():
    recipe = load_recipe_dict({})
    assert recipe.grpo.num_generations == 4
    assert recipe.rewards[0].name == "em" and recipe.rewards[0].weight == 1.0
    assert recipe.model.lora.enabled is False
    # Mutable defaults are not shared between recipes.
    recipe.model.lora.target_modules.append("x")
    assert "x" not in load_recipe_dict({}).model.lora.target_modules


def test_overrides_convert_types_and_reach_nested_lists():
    recipe = load_recipe_dict(
        {"rewards": [{"name": "em"}, {"name": "format", "args": {"protocol": "search_r1"}}]},
        overrides=[
            "grpo.learning_rate=3e-6",
            "grpo.num_generations=8",
            "model.lora.enabled=true",
            "rewards.1.weight=0.25",
            "rewards.1.args.protocol=adasearch",
            "ray.resources_per_worker.CPU=2",
            "env.url=null",
            "model.lora.target_modules=[q_proj, v_proj]",
        ],
    )
    assert recipe.grpo.learning_rate == pytest.approx(3e-6) and isinstance(recipe.grpo.learning_rate, float)
    assert recipe.grpo.num_generations == 8
    assert recipe.model.lora.enabled is True
    assert recipe.rewards[1].weight == 0.25 and recipe.rewards[1].args == {"protocol": "adasearch"}
    assert recipe.ray.resources_per_worker == {"CPU": 2.0}
    assert recipe.env.url is None
    assert recipe.model.lora.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    "data, overrides, message",
    [
        ({"grpo": {"num_generation": 8}}, [], "unknown key 'grpo.num_generation'; did you mean 'grpo.num_generations'?"),
        ({"modle": {}}, [], "unknown key 'modle'; did you mean 'model'?"),
        ({"grpo": {"num_generations": "eight"}}, [], "grpo.num_generations must be int, got 'eight'"),
        ({"grpo": {"num_generations": 8.5}}, [], "grpo.num_generations must be int"),
        ({"model": {"lora": {"enabled": "yes please"}}}, [], "model.lora.enabled must be bool"),
        ({"agent": {"protocol": "searchr1"}}, [], "did you mean 'search_r1'?"),
        ({"rewards": {"name": "em"}}, [], "rewards must be a list"),
        ({"rewards": [{"nme": "em"}]}, [], "unknown key 'rewards.0.nme'; did you mean 'rewards.0.name'?"),
        ({}, ["grpo.betta=0.1"], "unknown key 'grpo.betta' in override; did you mean 'grpo.beta'?"),
        ({}, ["grpo.beta"], "must look like key=value"),
        ({}, ["rewards.4.weight=1"], "rewards has 1 items, no index '4'"),
        ({}, ["seed.x=1"], "'seed' is a plain value"),
        ({}, ["deepspeed.stage=1"], "deepspeed.stage must be one of [0, 2, 3]"),
        ([1, 2], [], "a recipe must be a YAML mapping"),
    ],
)
def test_errors_name_the_key_and_the_fix(data, overrides, message):
    with pytest.raises(RecipeError) as err:
        load_recipe_dict(data, overrides, source="r.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("r.yaml: ")


def test_show_round_trips_the_resolved_recipe(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "search_r1_tiny.yaml", ["grpo.beta=0.01"])
    text = recipe_to_yaml(recipe)
    again = tmp_path / "resolved.yaml"
    again.write_text(text)
    assert load_recipe(again) == recipe
    assert yaml.safe_load(text)["grpo"]["beta"] == 0.01


def test_cli_validate_exits_2_naming_file_key_and_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo:\n  num_generation: 8\n")
    good = REPO / "recipes" / "search_r1_tiny.yaml"
    result = subprocess.run([SEEKRL, "recipe", "validate", str(good), str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{bad}: unknown key 'grpo.num_generation'; did you mean 'grpo.num_generations'?" in result.stderr
    assert f"ok: {good}" in result.stdout
    ok = subprocess.run([SEEKRL, "recipe", "validate", *map(str, RECIPES)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_cli_show_prints_defaults_and_applies_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: mine\n")
    result = subprocess.run([SEEKRL, "recipe", "show", str(recipe), "grpo.num_generations=16"],
                            capture_output=True, text=True, check=True)
    shown = yaml.safe_load(result.stdout)
    assert shown["name"] == "mine" and shown["grpo"]["num_generations"] == 16
    assert shown["kinetics"]["hardware"] == "h200"  # a default the file never mentioned
    bad = subprocess.run([SEEKRL, "recipe", "show", str(recipe), "grpo.num_generations=lots"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "grpo.num_generations must be int" in bad.stderr
    missing = subprocess.run([SEEKRL, "recipe", "show", str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no such recipe file" in missing.stderr
