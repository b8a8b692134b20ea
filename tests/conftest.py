"""Shared fixtures: the tiny offline models (built once per test session) and the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout (or $SEEKRL_SHARED_DATA): real public QA data, see its MANIFEST.md."""
    path = Path(os.environ.get("SEEKRL_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (path / "MANIFEST.md").exists():
        raise FileNotFoundError(f"shared data not found at {path}; set SEEKRL_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_text_dir(tiny_cache) -> Path:
    """Directory of the tiny Qwen2ForCausalLM + tokenizer (save_pretrained layout)."""
    from seekrl.testing import tiny_model_dir

    return tiny_model_dir("text", cache_dir=tiny_cache)


@pytest.fixture(scope="session")
def tiny_vl_dir(tiny_cache) -> Path:
    """Directory of the tiny Qwen2_5_VLForConditionalGeneration + processor."""
    from seekrl.testing import tiny_model_dir

    return tiny_model_dir("vl", cache_dir=tiny_cache)
