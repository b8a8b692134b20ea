"""DeepSpeed ZeRO in `seekrl train`: a ZeRO-2 run on two CPU Ray workers moves the parameters and writes DeepSpeed's
partitioned optimizer states; the config and the recipe checks fail early with clear messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import final_weights, tiny_recipe

from seekrl.config import RecipeError, load_recipe_dict
from seekrl.zero import check_deepspeed, deepspeed_config, grpo_kwargs, worker_env_vars

SEEKRL = str(Path(sys.executable).parent / "seekrl")
REPO = Path(__file__).resolve().parents[2]


def _ds_recipe(overrides: list[str]):
    return load_recipe_dict({}, overrides=overrides)


def test_zero2_on_two_cpu_workers_moves_parameters(tiny_searcher_dir, bm25_dir, shared_data, tmp_path):
    recipe = tiny_recipe(tmp_path, tiny_searcher_dir, bm25_dir, shared_data, output__report_to=[])
    result = subprocess.run([SEEKRL, "train", str(recipe), "deepspeed.stage=2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    before, after = final_weights(tiny_searcher_dir), final_weights(run / "final")
    assert set(after) == set(before)
    assert all(after[k].shape == before[k].shape for k in before), "the final model holds whole parameters"
    assert [k for k in before if not torch.equal(before[k], after[k])], "training changed no parameter"
    history = json.loads((run / "log_history.json").read_text())
    assert [h["step"] for h in history if "rollout/search_rate" in h] == [1, 2]
    # DeepSpeed wrote the checkpoint: ZeRO-2 optimizer state partitioned over the two ranks.
    step_dirs = sorted((run / "hf").glob("checkpoint-*/global_step*"))
    assert step_dirs, f"no DeepSpeed global_step* checkpoint in {sorted(p.name for p in (run / 'hf').iterdir())}"
    partitions = sorted(p.name for p in step_dirs[-1].glob("zero_pp_rank_*_optim_states.pt"))
    assert partitions == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert (step_dirs[-1].parent / "latest").read_text().strip() == step_dirs[-1].name


def test_default_configs_are_hf_auto_style_and_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for stage in (2, 3):
        on_disk = json.loads((REPO / "recipes" / "deepspeed" / f"zero{stage}.json").read_text())
        assert on_disk["zero_optimization"]["stage"] == stage
        assert on_disk["bf16"]["enabled"] == "auto" and on_disk["train_micro_batch_size_per_gpu"] == "auto"
        assert on_disk["gradient_accumulation_steps"] == "auto" and on_disk["gradient_clipping"] == "auto"
        gpu = deepspeed_config(_ds_recipe([f"deepspeed.stage={stage}", "ray.use_gpu=true"]))
        assert gpu == on_disk
        cpu = deepspeed_config(_ds_recipe([f"deepspeed.stage={stage}"]))
        assert cpu["bf16"]["enabled"] is False and cpu["fp16"]["enabled"] is False
        assert cpu["zero_optimization"] == on_disk["zero_optimization"]
    assert deepspeed_config(_ds_recipe([])) is None


def test_offload_switches_and_config_file(tmp_path):
    config = deepspeed_config(_ds_recipe(["deepspeed.stage=3", "ray.use_gpu=true", "deepspeed.offload_optimizer=true",
                                          "deepspeed.offload_param=true"]))
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["zero_optimization"]["offload_param"]["device"] == "cpu"
    # DeepSpeed refuses ZeRO-Offload with a torch optimizer: the config asks for its AdamW (DeepSpeedCPUAdam).
    assert config["optimizer"] == {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                               "weight_decay": "auto"}}
    assert "optimizer" not in deepspeed_config(_ds_recipe(["deepspeed.stage=3", "ray.use_gpu=true"]))
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto"}))
    recipe = _ds_recipe(["deepspeed.stage=2", f"deepspeed.config_file={mine}"])
    check_deepspeed(recipe)
    assert deepspeed_config(recipe) == {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto"}
    # A path relative to the checkout works from anywhere and is made absolute for the workers.
    recipe = _ds_recipe(["deepspeed.stage=3", "deepspeed.config_file=recipes/deepspeed/zero3.json"])
    check_deepspeed(recipe)
    assert Path(recipe.deepspeed.config_file) == REPO / "recipes" / "deepspeed" / "zero3.json"


@pytest.mark.parametrize("overrides, message", [
    (["deepspeed.stage=2", "ray.use_gpu=true", "deepspeed.offload_param=true"],
     "deepspeed.offload_param needs deepspeed.stage: 3"),
    (["deepspeed.stage=3", "deepspeed.offload_optimizer=true"],
     "deepspeed.offload_optimizer moves state from GPU to CPU memory, but ray.use_gpu is false"),
    (["deepspeed.offload_optimizer=true"], "deepspeed.offload_optimizer is set but deepspeed.stage is 0"),
    (["deepspeed.stage=2", "deepspeed.config_file=/no/such/ds.json"],
     "deepspeed.config_file '/no/such/ds.json' is not a file"),
    (["deepspeed.stage=2", "deepspeed.config_file=recipes/deepspeed/zero3.json"],
     "deepspeed.stage is 2 but"),
])
def test_unusable_settings_are_recipe_errors(overrides, message):
    with pytest.raises(RecipeError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        check_deepspeed(_ds_recipe(overrides))


def test_bad_config_files_are_recipe_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RecipeError, match="is not valid JSON"):
        check_deepspeed(_ds_recipe(["deepspeed.stage=2", f"deepspeed.config_file={bad}"]))
    not_an_object = tmp_path / "list.json"
    not_an_object.write_text("[]")
    with pytest.raises(RecipeError, match="must be a JSON object, got list"):
        check_deepspeed(_ds_recipe(["deepspeed.stage=3", f"deepspeed.config_file={not_an_object}"]))


def test_worker_settings_for_cpu_and_gpu():
    cpu = _ds_recipe(["deepspeed.stage=2"])
    assert worker_env_vars(cpu) == {"DS_ACCELERATOR": "cpu"}
    kwargs = grpo_kwargs(cpu, use_cpu=True)
    assert kwargs["use_cpu"] is False and kwargs["bf16"] is False
    assert kwargs["accelerator_config"] == {"use_configured_state": True}
    gpu = _ds_recipe(["deepspeed.stage=3", "ray.use_gpu=true"])
    assert worker_env_vars(gpu) == {} and set(grpo_kwargs(gpu, use_cpu=False)) == {"use_cpu", "deepspeed"}
    assert grpo_kwargs(_ds_recipe([]), use_cpu=True) == {"use_cpu": True, "deepspeed": None}


def test_plan_run_checks_deepspeed_before_ray_starts(tiny_searcher_dir, bm25_dir, shared_data, tmp_path):
    from seekrl.config import load_recipe
    from seekrl.train import plan_run

    path = tiny_recipe(tmp_path, tiny_searcher_dir, bm25_dir, shared_data, output__report_to=[])
    plan_run(load_recipe(path, ["deepspeed.stage=2"]))  # ZeRO-2 on CPU workers is a valid plan
    with pytest.raises(RecipeError, match="deepspeed.offload_param needs deepspeed.stage: 3"):
        plan_run(load_recipe(path, ["deepspeed.stage=2", "ray.use_gpu=true", "deepspeed.offload_param=true"]))


def test_shipped_recipes_pass_the_deepspeed_checks():
    from seekrl.config import load_recipe

    for path in sorted((REPO / "recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        check_deepspeed(recipe)
        if recipe.deepspeed.stage:
            assert deepspeed_config(recipe)["zero_optimization"]["stage"] == recipe.deepspeed.stage, path.name
