"""Fixtures for the retrieval tests: real multihop passages and dense/hybrid indexes built once per session.

The BM25 index, its in-process searcher and its loopback server (`bm25_dir`, `bm25_index`, `bm25_server`) come
from tests/conftest.py, shared with the agent and training tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Dense tests encode this many passages (once per session, ~10-20 s with MiniLM on 2 cores); BM25 tests use
# the full 6,200 passages.
SMALL_CORPUS_DOCS = 200


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def multihop(shared_data) -> Path:
    return shared_data / "multihop"


@pytest.fixture(scope="session")
def questions(multihop) -> list[dict]:
    return read_jsonl(multihop / "questions.jsonl")


@pytest.fixture(scope="session")
def small_corpus(multihop, tmp_path_factory) -> Path:
    """The first SMALL_CORPUS_DOCS multihop passages as a {id, title, text} jsonl."""
    path = tmp_path_factory.mktemp("corpus") / "small.jsonl"
    with (multihop / "corpus.jsonl").open() as src, path.open("w") as out:
        for _, line in zip(range(SMALL_CORPUS_DOCS), src):
            out.write(line)
    return path


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory) -> Path:
    """The embedding cache of the tests; SEEKRL_CACHE_DIR=<its parent> makes the CLI use it too."""
    return tmp_path_factory.mktemp("seekrl-cache") / "embeddings"


@pytest.fixture(scope="session")
def dense_dir(small_corpus, embedding_cache, tmp_path_factory) -> Path:
    from seekrl.envs.index import BuildOptions, build_index

    out = tmp_path_factory.mktemp("indexes") / "dense"
    build_index(small_corpus, out, "dense", BuildOptions(cache_dir=str(embedding_cache)), progress=False)
    return out


@pytest.fixture(scope="session")
def hybrid_dir(small_corpus, embedding_cache, dense_dir, tmp_path_factory) -> Path:
    from seekrl.envs.index import BuildOptions, build_index

    out = tmp_path_factory.mktemp("indexes") / "hybrid"
    build_index(small_corpus, out, "hybrid", BuildOptions(cache_dir=str(embedding_cache)), progress=False)
    return out
