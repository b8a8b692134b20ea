"""Fixtures for the agent server tests: the format-trained tiny searcher, real questions, and a helper that serves
an app on a free loopback port (real uvicorn in a thread)."""

from __future__ import annotations

import contextlib
import json

import pytest

from seekrl.testing import ThreadServer

# Small rollout limits: the tiny searcher searches once and answers within them, in well under a second.
LIMITS = {"max_total_tokens": 768, "max_new_tokens_per_turn": 64}


@pytest.fixture(scope="session")
def searcher(tiny_searcher_dir):
    """(model, tokenizer) of the tiny searcher, loaded the way `seekrl serve` loads a checkpoint."""
    from seekrl.models import load_model, load_tokenizer

    return load_model(tiny_searcher_dir).eval(), load_tokenizer(tiny_searcher_dir)


@pytest.fixture(scope="session")
def questions(shared_data) -> list[str]:
    lines = (shared_data / "multihop" / "questions.jsonl").read_text().splitlines()[:16]
    return [json.loads(line)["question"] for line in lines]


@contextlib.contextmanager
def serving(searcher, client, **options):
    """`create_app` for the tiny searcher with `client` as its retriever, on a free loopback port."""
    from seekrl.serve import Agent, ServeOptions, create_app

    model, tokenizer = searcher
    opts = ServeOptions(model="tiny-searcher", retriever="in-test", **{**LIMITS, **options})
    server = ThreadServer(create_app(opts, Agent(model, tokenizer, client, "tiny-searcher"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(searcher, bm25_server):
    """The agent on the loopback BM25 retrieval server, with an API key."""
    from seekrl.envs.client import HTTPClient

    with serving(searcher, HTTPClient(bm25_server.url, max_retries=0), api_key="secret") as srv:
        yield srv
