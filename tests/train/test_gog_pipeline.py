"""The Glance-or-Gaze pipeline end to end on the tiny VL model with real images: reflective SFT on
../shared/data/multimodal/infoseek_mini_5.parquet, pass-rate levels, then 2 GRPO steps on Ray, through
`seekrl train`'s code path (seekrl.train.train)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seekrl.config import load_recipe_dict


@pytest.fixture(scope="module")
def shared_kb(shared_data, tmp_path_factory):
    """Image index over the 75 real images of shared/data/multimodal (their datasets' text as entries)."""
    from seekrl.envs.image_kb import build_image_index
    from seekrl.envs.image_world import shared_images, write_kb_files

    root = tmp_path_factory.mktemp("shared-kb")
    images, meta = write_kb_files(shared_images(shared_data), root / "kb")
    build_image_index(images, meta, root / "index")
    return root / "index"


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def test_sft_levels_grpo_pipeline_on_infoseek(tmp_path, shared_data, shared_kb, tiny_gazer_dir):
    from seekrl.train import train

    out = tmp_path / "run"
    recipe = load_recipe_dict({
        "name": "gog-pipeline",
        # The tiny VL model, format-trained on GoG trajectories (seekrl.testing.build_tiny_gazer).
        "model": {"name_or_path": str(tiny_gazer_dir), "dtype": "float32"},
        "data": {"train": [{"path": str(shared_data / "multimodal" / "infoseek_mini_5.parquet")}]},
        "agent": {"protocol": "gog", "max_turns": 2},
        "rollout": {"max_new_tokens_per_turn": 48, "max_total_tokens": 160, "max_obs_tokens": 64,
                    "temperature": 0.7},
        "gog": {"image_index_dir": str(shared_kb), "image_topk": 1,
                # All weights at a high rate, so that 5 trajectories are learnt in seconds (LoRA rank 8, as
                # published and in the GPU recipe, is tested in tests/train/test_gog_sft.py).
                "sft": {"epochs": 40, "batch_size": 4, "per_device_batch_size": 4, "learning_rate": 2e-3,
                        "lora": {"enabled": False}},
                "levels": {"samples": 2, "train_on": "all"}},
        "rewards": [{"name": "gog", "args": {"format_weight": 0.1, "accuracy": "subem"}}],
        "grpo": {"num_generations": 4, "per_device_train_batch_size": 8, "max_steps": 2, "learning_rate": 1e-3,
                 "beta": 0.001, "save_steps": 100},
        "ray": {"num_workers": 1},
        "output": {"dir": str(out), "report_to": []},
        "stages": [{"name": "sft", "kind": "sft"}, {"name": "levels", "kind": "label"},
                   {"name": "grpo", "kind": "grpo"}],
    })
    summary = train(recipe)
    stages = {s["name"]: s for s in summary["stages"]}

    # Stage 1: every InfoSeek question got a glance trajectory whose answer the knowledge base gave.
    sft_data = json.loads(Path(stages["sft"]["sft_data"]).read_text())
    assert sft_data["records"] == 5 and sft_data["kept"] == 5, sft_data
    base, sft = _weights(tiny_gazer_dir), _weights(stages["sft"]["model"])
    assert any(not torch.equal(base[k], sft[k]) for k in base)

    # Stage 2: a pass rate over 2 samples and a level per question.
    levels = json.loads(Path(stages["levels"]["levels"]).read_text())
    assert len(levels["pass_rates"]) == 5
    assert all(r in (0.0, 0.5, 1.0) for r in levels["pass_rates"].values())
    assert sum(levels["counts"].values()) == 5

    # GRPO: trained on the selected level (all here), 2 steps, parameters moved from the SFT model.
    grpo_dir = out / "stages" / "grpo"
    assert sorted(json.loads((grpo_dir / "train_ids.json").read_text())) == sorted(levels["levels"])
    history = [h for h in json.loads((grpo_dir / "log_history.json").read_text()) if "reward" in h]
    assert [h["step"] for h in history] == [1, 2]
    final = _weights(summary["final_model"])
    moved = [k for k in sft if not torch.equal(sft[k], final[k])]
    # Saved in the checkpoint layout: `model.*` is the language model, `visual.*` the vision tower, which only
    # gets a gradient when the GRPO forward pass received the images.
    assert any(k.startswith("model.") for k in moved) and any(k.startswith("visual.") for k in moved)
    assert (Path(summary["final_model"]) / "preprocessor_config.json").exists()


def test_agent_metrics_sample_each_question_or_run_it_greedily(shared_data, shared_kb, tiny_gazer_dir):
    from seekrl.data import load_from_spec
    from seekrl.gog_probe import gog_agent_metrics, questions_from_records
    from seekrl.gog_train import make_gog_protocol
    from seekrl.models import load_model, load_processor

    recipe = load_recipe_dict({
        "model": {"name_or_path": str(tiny_gazer_dir), "dtype": "float32"},
        "data": {"train": [{"path": str(shared_data / "multimodal" / "infoseek_mini_5.parquet")}]},
        "agent": {"protocol": "gog", "max_turns": 2},
        "rollout": {"max_new_tokens_per_turn": 24, "max_total_tokens": 96, "max_obs_tokens": 32},
        "gog": {"image_index_dir": str(shared_kb), "image_topk": 1},
    })
    questions = questions_from_records(load_from_spec(recipe.data.train[0], recipe.data.max_answer_chars))[:3]
    model, processor = load_model(str(tiny_gazer_dir), dtype="float32"), load_processor(str(tiny_gazer_dir))
    args = (model, processor, make_gog_protocol(recipe), questions, recipe.rollout)

    greedy, lines = gog_agent_metrics(*args)
    assert greedy["n"] == 3 and [line["id"] for line in lines] == [q.id for q in questions]
    sampled, lines = gog_agent_metrics(*args, temperature=1.0, samples=4, batch=8)  # 2 questions per batch
    assert sampled["n"] == 12 and [line["id"] for line in lines] == [q.id for q in questions for _ in range(4)]
    # Per rollout: accuracy is the mean of the rollouts' EM.
    assert sampled["em"] == pytest.approx(sum(line["em"] for line in lines) / 12)
    with pytest.raises(ValueError, match="greedy rollouts of one question are all the same"):
        gog_agent_metrics(*args, samples=2)
    with pytest.raises(ValueError, match="samples must be at least 1"):
        gog_agent_metrics(*args, temperature=1.0, samples=0)
