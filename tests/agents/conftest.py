"""Fixtures for rollout tests: the format-trained tiny policy and its tokenizer."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def searcher(tiny_searcher_dir):
    from seekrl.models import load_model, load_tokenizer

    model = load_model(tiny_searcher_dir, dtype="float32")
    model.eval()
    return model, load_tokenizer(tiny_searcher_dir)


@pytest.fixture(scope="session")
def hotpot_questions(shared_data) -> list[str]:
    from seekrl.data import load_qa

    return [r.question for r in load_qa(shared_data / "multihop" / "questions.jsonl", limit=8)]
