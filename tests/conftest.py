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


@pytest.fixture(scope="session")
def tiny_searcher_dir(tiny_cache) -> Path:
    """The tiny text model after a few seconds of format training: it emits Search-R1 / AdaSearch actions."""
    from seekrl.testing import tiny_model_dir

    return tiny_model_dir("searcher", cache_dir=tiny_cache)


@pytest.fixture(scope="session")
def tiny_gazer_dir(tiny_cache) -> Path:
    """The tiny VL model after a few seconds of training on scripted Glance-or-Gaze trajectories (it gazes)."""
    from seekrl.testing import tiny_model_dir

    return tiny_model_dir("gazer", cache_dir=tiny_cache)


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory):
    """seekrl.testing.demo_image_world written to disk: (world, paths) with its image KB index."""
    from seekrl.envs.image_world import write_image_world
    from seekrl.testing import demo_image_world

    world = demo_image_world(0)
    return world, write_image_world(world, tmp_path_factory.mktemp("demo-world"))


@pytest.fixture(scope="session")
def bm25_dir(shared_data, tmp_path_factory) -> Path:
    """BM25 index over the 6,200 real multi-hop passages (built in a few seconds)."""
    from seekrl.envs.index import build_index

    out = tmp_path_factory.mktemp("indexes") / "bm25"
    build_index(shared_data / "multihop" / "corpus.jsonl", out, "bm25", progress=False)
    return out


@pytest.fixture(scope="session")
def bm25_index(bm25_dir):
    from seekrl.envs.index import load_index

    return load_index(bm25_dir)


@pytest.fixture(scope="session")
def bm25_server(bm25_index):
    """The retrieval server over `bm25_index` on a free loopback port."""
    from seekrl.envs.server import create_app
    from seekrl.testing import ThreadServer

    server = ThreadServer(create_app(bm25_index)).start()
    yield server
    server.stop()
