"""Shared tiny GRPO recipe for the training tests: tiny searcher, BM25 over the shared corpus, 2 steps."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml


def tiny_recipe(tmp_path: Path, model_dir: Path, index_dir: Path, shared_data: Path, **extra) -> Path:
    recipe = {
        "name": "tiny",
        "model": {"name_or_path": str(model_dir), "dtype": "float32"},
        "data": {"train": [{"path": str(shared_data / "multihop" / "questions.jsonl"), "limit": 8}]},
        "env": {"kind": "index", "index_dir": str(index_dir), "topk": 2},
        "agent": {"protocol": "search_r1", "max_turns": 2},
        "rollout": {"max_new_tokens_per_turn": 24, "max_total_tokens": 160, "max_obs_tokens": 64},
        "rewards": [{"name": "format", "args": {"protocol": "search_r1"}}, {"name": "em"}],
        "grpo": {"num_generations": 2, "per_device_train_batch_size": 2, "max_steps": 2, "save_steps": 1,
                 "learning_rate": 5e-3},
        "ray": {"num_workers": 2},
        "output": {"dir": str(tmp_path / "run")},
    }
    for key, value in extra.items():
        section, field = key.split("__")
        recipe[section][field] = value
    path = tmp_path / "recipe.yaml"
    path.write_text("# seekrl train recipe.yaml\n" + yaml.safe_dump(recipe))
    return path


def final_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))
