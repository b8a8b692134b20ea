"""`seekrl train` on Ray: GRPO steps with 2 workers move the parameters; bad recipes fail before Ray starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import final_weights, tiny_recipe

SEEKRL = str(Path(sys.executable).parent / "seekrl")


def test_train_with_two_ray_workers_moves_parameters(tiny_searcher_dir, bm25_dir, shared_data, tmp_path):
    recipe = tiny_recipe(tmp_path, tiny_searcher_dir, bm25_dir, shared_data)
    result = subprocess.run([SEEKRL, "train", str(recipe)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    final = tmp_path / "run" / "final"
    assert (final / "recipe.yaml").exists() and (final / "tokenizer_config.json").exists()
    before, after = final_weights(tiny_searcher_dir), final_weights(final)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved, "training changed no parameter"
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    steps = [h for h in history if "rollout/search_rate" in h]
    assert len(steps) == 2 and all("rewards/format/mean" in h for h in steps)
    checkpoints = list((tmp_path / "run" / "ray" / "tiny").glob("checkpoint_*"))
    assert checkpoints, "Ray Train stored checkpoints"
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0, "TensorBoard event files are written by default"


def test_bad_recipe_fails_before_ray_starts(tmp_path, tiny_text_dir, bm25_dir, shared_data):
    recipe = tiny_recipe(tmp_path, tiny_text_dir, bm25_dir, shared_data)
    text = recipe.read_text().replace("num_generations:", "num_generation:")
    recipe.write_text(text)
    result = subprocess.run([SEEKRL, "train", str(recipe)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown key 'grpo.num_generation'; did you mean 'grpo.num_generations'?" in result.stderr
    assert "Started a local Ray instance" not in result.stderr + result.stdout
    missing = tiny_recipe(tmp_path, tiny_text_dir, tmp_path / "no-index", shared_data)
    result = subprocess.run([SEEKRL, "train", str(missing)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is not a directory: build one with `seekrl retriever build`" in result.stderr


def test_resume_continues_from_the_saved_step(tiny_searcher_dir, bm25_dir, shared_data, tmp_path):
    recipe = tiny_recipe(tmp_path, tiny_searcher_dir, bm25_dir, shared_data, ray__num_workers=1)
    first = subprocess.run([SEEKRL, "train", str(recipe), "grpo.max_steps=2"], capture_output=True, text=True,
                           timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    again = subprocess.run([SEEKRL, "train", str(recipe), "grpo.max_steps=4"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 2 and "pass --resume" in again.stderr
    resumed = subprocess.run([SEEKRL, "train", str(recipe), "grpo.max_steps=4", "--resume"], capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    steps = [h["step"] for h in history if "rollout/search_rate" in h]
    # The resumed run starts after the checkpointed step 2 and ends at 4; steps 1-2 come from the checkpoint.
    assert steps == [1, 2, 3, 4]


def test_lora_variant_trains_adapters_and_saves_a_merged_model(tiny_searcher_dir, bm25_dir, shared_data, tmp_path):
    recipe = tiny_recipe(tmp_path, tiny_searcher_dir, bm25_dir, shared_data, ray__num_workers=1)
    # Three steps of groups of 4: enough for some group to have unequal rewards, hence a gradient.
    result = subprocess.run([SEEKRL, "train", str(recipe), "grpo.max_steps=3", "grpo.num_generations=4",
                             "grpo.per_device_train_batch_size=4", "model.lora.enabled=true",
                             "model.lora.r=4", "model.lora.merge_on_save=true"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    final = tmp_path / "run" / "final"
    before, after = final_weights(tiny_searcher_dir), final_weights(final)
    assert set(after) == set(before), "the merged model has the base model's parameter names (no lora_ tensors)"
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all(any(m in k for m in ("proj",)) for k in moved), moved
    assert not any(k.endswith(("embed_tokens.weight", "norm.weight")) for k in moved)


def test_eflops_budget_lets_the_planner_set_the_rollout(tiny_searcher_dir, bm25_dir, shared_data, tmp_path):
    from seekrl.config import load_recipe
    from seekrl.kernels.kinetics import block_topk_eflops
    from seekrl.train import plan_run

    recipe_path = tiny_recipe(tmp_path, tiny_searcher_dir, bm25_dir, shared_data)
    recipe = load_recipe(recipe_path)
    assert plan_run(recipe).recipe.rollout.attention == "dense"  # no budget: the recipe as written
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_searcher_dir)
    budget = float(block_topk_eflops(config, 200, 256, 8, "h200", 16, 8, 16)) * 1.01
    recipe = load_recipe(recipe_path, [f"kinetics.eflops_budget={budget}", "kinetics.local=16",
                                       "kinetics.planner_block_sizes=[16]", "kinetics.planner_topks=[8]",
                                       "kinetics.planner_max_new_tokens=[128,256,512]",
                                       "kinetics.planner_group_sizes=[2,4,8]"])
    planned = plan_run(recipe).recipe
    assert planned.rollout.attention == "block_topk"
    assert (planned.kinetics.block_size, planned.kinetics.topk) == (16, 8)
    assert planned.grpo.num_generations in (2, 4, 8) and planned.rollout.max_total_tokens in (128, 256, 512)
    assert planned.grpo.per_device_train_batch_size % planned.grpo.num_generations == 0
    spent = float(block_topk_eflops(config, 200, planned.rollout.max_total_tokens, planned.grpo.num_generations,
                                    "h200", 16, 8, 16))
    assert spent <= budget * 1.2  # the plan was made at the mean prompt length, near 200 tokens here


def test_a_killed_worker_restarts_from_the_checkpoint(tiny_searcher_dir, bm25_dir, shared_data, tmp_path):
    import time

    import psutil

    recipe = tiny_recipe(tmp_path, tiny_searcher_dir, bm25_dir, shared_data, ray__num_workers=1, ray__max_failures=1)
    proc = subprocess.Popen([SEEKRL, "train", str(recipe), "grpo.max_steps=4"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    storage = tmp_path / "run" / "ray" / "tiny"
    killed = None
    deadline = time.monotonic() + 600
    try:
        # Wait for the first checkpoint, then kill the training worker (a descendant of this run's driver only).
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            if list(storage.glob("checkpoint_*")):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    if "RayTrainWorker" in " ".join(child.cmdline()):
                        child.kill()
                        killed = child.pid
                        break
            time.sleep(0.5)
        output, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no training worker was found to kill"
    assert proc.returncode == 0, output[-3000:]
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    steps = [h["step"] for h in history if "rollout/search_rate" in h]
    assert steps[-1] == 4 and len(steps) == len(set(steps)), steps


def test_replay_rows_rehearse_the_stage1_modes_beside_the_decision(tmp_path, tiny_text_dir, bm25_dir, shared_data):
    """AdaSearch's decide stage with grpo.replay_modes: decision rows scored by the decision reward alone,
    rehearsal rows (each training question again, in a stage-1 mode) by EM alone."""
    from seekrl.config import RecipeError, load_recipe
    from seekrl.rewards import decision_reward, em_reward
    from seekrl.train import plan_run, training_rows

    path = tiny_recipe(tmp_path, tiny_text_dir, bm25_dir, shared_data)
    overrides = ["agent.protocol=adasearch", "agent.adasearch_mode=decide", "grpo.replay_modes=[parametric, search]",
                 "rewards=[{name: decision}, {name: em}]"]
    recipe = load_recipe(path, overrides)
    labels = {r["id"]: "yes" for r in training_rows(load_recipe(path))}
    rows = training_rows(recipe, labels)
    decide = [r for r in rows if r["mode"] is None]
    replay = [r for r in rows if r["mode"] is not None]
    assert len(decide) == len(replay) == 8  # replay_fraction 0.5
    assert sorted(r["mode"] for r in replay) == ["parametric"] * 4 + ["search"] * 4
    assert {r["id"].split("#")[0] for r in replay} <= {r["id"] for r in decide}
    assert all(r["golden_answers"] is None and r["decision_label"] == "yes" for r in decide)
    assert all(r["golden_answers"] and r["decision_label"] is None for r in replay)
    # Each reward scores only its own rows (None elsewhere: TRL leaves it out of the sum).
    completions = ["<assessment>yes</assessment>"] * len(decide) + ["<answer>x</answer>"] * len(replay)
    columns = {k: [r[k] for r in rows] for k in ("golden_answers", "decision_label")}
    assert decision_reward(completions, **columns) == [1.0] * 8 + [None] * 8
    assert em_reward(completions, **columns)[:8] == [None] * 8
    assert None not in em_reward(completions, **columns)[8:]

    with pytest.raises(RecipeError, match="needs an accuracy reward"):
        plan_run(load_recipe(path, overrides[:3] + ["rewards=[{name: decision}]"]), labels=labels)
    with pytest.raises(RecipeError, match=r"\['decide'\] are not stage-1 modes"):
        plan_run(load_recipe(path, [*overrides[:2], "grpo.replay_modes=[decide]", overrides[3]]), labels=labels)
    with pytest.raises(RecipeError, match="routed is AdaSearch's inference"):
        plan_run(load_recipe(path, ["agent.protocol=adasearch", "agent.adasearch_mode=routed"]))


def test_replay_by_label_rehearses_each_mode_on_the_questions_routed_to_it(tmp_path, tiny_text_dir, bm25_dir,
                                                                          shared_data):
    """grpo.replay_by_label: parametric rehearsal only on questions labelled yes, search only on those labelled no;
    without it, the same rows as before (every question in both modes)."""
    from seekrl.config import RecipeError, load_recipe
    from seekrl.train import training_rows

    path = tiny_recipe(tmp_path, tiny_text_dir, bm25_dir, shared_data)
    plain = training_rows(load_recipe(path))
    labels = {r["id"]: ("yes" if i % 4 == 0 else "no") for i, r in enumerate(plain)}  # 2 yes, 6 no
    overrides = ["agent.protocol=adasearch", "agent.adasearch_mode=decide", "grpo.replay_modes=[parametric, search]",
                 "rewards=[{name: decision}, {name: em}]"]
    rows = training_rows(load_recipe(path, [*overrides, "grpo.replay_by_label=true"]), labels)
    replay = [r for r in rows if r["mode"] is not None]
    assert len(replay) == 8 and sorted(r["mode"] for r in replay) == ["parametric"] * 4 + ["search"] * 4
    for row in replay:
        source = row["id"].split("#")[0]
        assert labels[source] == {"parametric": "yes", "search": "no"}[row["mode"]], row["id"]
    # The 2 yes questions take the 4 parametric rows in turn (each twice); 4 of the 6 no questions are searched.
    parametric = sorted(r["id"] for r in replay if r["mode"] == "parametric")
    assert len(set(parametric)) == 2 and parametric[0] == parametric[1]
    assert len({r["id"] for r in replay if r["mode"] == "search"}) == 4
    # Off (the default), every question is rehearsed in both modes regardless of its label.
    default = [r for r in training_rows(load_recipe(path, overrides), labels) if r["mode"] is not None]
    assert any(labels[r["id"].split("#")[0]] == "no" for r in default if r["mode"] == "parametric")
    # A mode no question is routed to is left out: all labels "no" rehearse search alone, in every replay row.
    all_no = training_rows(load_recipe(path, [*overrides, "grpo.replay_by_label=true"]), dict.fromkeys(labels, "no"))
    assert [r["mode"] for r in all_no if r["mode"] is not None] == ["search"] * 8
    # Nothing to rehearse at all (search alone, every label "yes") is an error that names the empty mode.
    with pytest.raises(RecipeError, match="nothing to rehearse: search \\(no question labelled 'no'\\)"):
        training_rows(load_recipe(path, [*overrides[:2], "grpo.replay_modes=[search]", overrides[3],
                                         "grpo.replay_by_label=true"]), dict.fromkeys(labels, "yes"))


def test_balance_labels_repeats_the_rarer_label_until_both_are_equal(tmp_path, tiny_text_dir, bm25_dir, shared_data):
    """grpo.balance_labels: copies of the rarer pseudo-label's questions (new ids, same question, label and golds)
    until yes and no rows are equal; the rehearsal rows are drawn from the balanced rows."""
    from collections import Counter

    from seekrl.config import RecipeError, load_recipe
    from seekrl.train import training_rows

    path = tiny_recipe(tmp_path, tiny_text_dir, bm25_dir, shared_data)
    plain = training_rows(load_recipe(path))
    labels = {r["id"]: ("no" if i % 4 == 0 else "yes") for i, r in enumerate(plain)}  # 2 no, 6 yes
    overrides = ["agent.protocol=adasearch", "agent.adasearch_mode=decide", "grpo.balance_labels=true",
                 "rewards=[{name: decision}]"]
    rows = training_rows(load_recipe(path, overrides), labels)
    assert Counter(r["decision_label"] for r in rows) == {"yes": 6, "no": 6}
    assert len({r["id"] for r in rows}) == len(rows)
    by_id = {r["id"]: r for r in plain}
    copies = [r for r in rows if "#copy" in r["id"]]
    assert len(copies) == 4
    for copy in copies:
        source = by_id[copy["id"].split("#")[0]]
        assert copy["prompt"] == source["prompt"] and labels[source["id"]] == copy["decision_label"] == "no"
    # Each no question is repeated twice (in turn), not one of them four times.
    assert sorted(Counter(c["id"].split("#")[0] for c in copies).values()) == [2, 2]
    # Without the option the rows are the plain ones.
    assert len(training_rows(load_recipe(path, overrides[:2] + overrides[3:]), labels)) == len(plain)
    with_replay = training_rows(load_recipe(path, [*overrides[:3], "rewards=[{name: decision}, {name: em}]",
                                                   "grpo.replay_modes=[parametric, search]"]), labels)
    assert len(with_replay) == 24 and sum(r["mode"] is None for r in with_replay) == 12
    with pytest.raises(RecipeError, match="needs questions of both labels; the label stage gave 8 yes and 0 no"):
        training_rows(load_recipe(path, overrides), {r["id"]: "yes" for r in plain})
