"""Build an index into a directory, load it back by path, and turn search results into documents.

Directory layout (every kind shares it):
    manifest.json   kind, format version, corpus source/hash/size, the parameters of each part
    docs/           packed corpus (DocStore): contents and ids, memory-mapped
    bm25/           bm25s files + tokenizer vocabulary      (bm25, hybrid)
    dense/          faiss.index + encoder config            (dense, hybrid)
Image knowledge bases (kind "image") share the manifest but have their own layout: seekrl.envs.image_kb.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from seekrl.envs.corpus import DocStore

FORMAT = "seekrl-index/1"
Kind = Literal["bm25", "dense", "hybrid"]


class IndexDirError(ValueError):
    """An index directory that is missing, incomplete or of another format; the message says how to fix it."""


class Searcher(Protocol):
    """What every index offers: rows and scores [Q, k] for a batch of queries (row -1 = empty slot)."""

    kind: str
    store: DocStore

    def search(self, queries: list[str], topk: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class BuildOptions:
    """Parameters of `build_index`; stored in the manifest so a loaded index says how it was made."""

    encoder: str | None = None
    query_prefix: str | None = None
    passage_prefix: str | None = None
    batch_size: int = 32
    passage_format: Literal["contents", "title_text"] = "title_text"  # dense.DEFAULT_PASSAGE_FORMAT: why there
    faiss_type: Literal["flat", "ivf", "hnsw"] = "flat"
    nlist: int = 4096
    nprobe: int = 64
    hnsw_m: int = 32
    ef_search: int = 128
    faiss_file: str | None = None
    cache_dir: str | None = None  # embedding cache; None = $SEEKRL_CACHE_DIR or ~/.cache/seekrl
    k1: float = 1.5
    b: float = 0.75
    stemmer: str | None = None
    fusion: Literal["rrf", "convex"] = "convex"  # hybrid fusion; definitions and defaults in envs/hybrid.py
    rrf_k: float = 60.0  # rrf only
    depth: int = 100  # candidates per retriever (both fusions)
    weights: tuple[float, float] = field(default=(1.0, 1.0))  # rrf only: (bm25, dense)
    alpha: float = 0.5  # convex only: dense share, BM25 gets 1 - alpha
    norm: Literal["minmax", "zscore"] = "minmax"  # convex only: per-query score normalisation


def build_index(corpus: str | Path, out: str | Path, kind: Kind, options: BuildOptions | None = None,
                overwrite: bool = False, progress: bool = True) -> Searcher:
    """Read `corpus` once, build the `kind` index into `out` and return it ready to search."""
    from seekrl.envs.bm25 import BM25Index
    from seekrl.envs.dense import DenseIndex, Encoder
    from seekrl.envs.hybrid import HybridIndex, check_fusion

    options = options or BuildOptions()
    if kind not in ("bm25", "dense", "hybrid"):
        raise IndexDirError(f"unknown index kind {kind!r}; use bm25, dense or hybrid")
    if kind == "hybrid":
        check_fusion(options.fusion, options.alpha, options.norm)  # before the expensive part
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise IndexDirError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
        if not (out / "manifest.json").exists():
            raise IndexDirError(f"{out} is not empty and holds no seekrl index; refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    store = DocStore.build(corpus, out / "docs", progress=progress)
    manifest: dict = {"format": FORMAT, "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "corpus": store.info}
    bm25 = dense = None
    if kind in ("bm25", "hybrid"):
        bm25 = BM25Index.build(store, k1=options.k1, b=options.b, stemmer=options.stemmer, progress=progress)
        bm25.save(out / "bm25")
        manifest["bm25"] = bm25.params
    if kind in ("dense", "hybrid"):
        encoder = Encoder(options.encoder, options.query_prefix, options.passage_prefix,
                          batch_size=options.batch_size, passage_format=options.passage_format)
        if options.faiss_file:
            dense = DenseIndex.from_faiss_file(options.faiss_file, store, encoder, nprobe=options.nprobe)
        else:
            dense = DenseIndex.build(store, encoder, options.faiss_type, nlist=options.nlist, nprobe=options.nprobe,
                                     hnsw_m=options.hnsw_m, ef_search=options.ef_search, progress=progress,
                                     cache=Path(options.cache_dir) if options.cache_dir else None)
        dense.save(out / "dense")
        manifest["dense"] = {"encoder": encoder.config(), **dense.params}
    index: Searcher = bm25 or dense
    if kind == "hybrid":
        index = HybridIndex(bm25, dense, fusion=options.fusion, rrf_k=options.rrf_k, depth=options.depth,
                            weights=options.weights, alpha=options.alpha, norm=options.norm)
        manifest["hybrid"] = index.params
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return index


def read_manifest(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / "manifest.json"
    if not path.is_file():
        raise IndexDirError(f"{directory}: no manifest.json; build one with `seekrl retriever build`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise IndexDirError(f"{path}: format {manifest.get('format')!r}, this seekrl reads {FORMAT!r}; rebuild it")
    return manifest


def load_index(directory: str | Path, **hybrid_overrides) -> Searcher:
    """Open an index directory built by `build_index`.

    Hybrid parameters (fusion, rrf_k, depth, weights, alpha, norm) may be overridden; a manifest written before
    convex fusion existed has no fusion entry and loads as the RRF it was built with.
    """
    from seekrl.envs.bm25 import BM25Index
    from seekrl.envs.dense import DenseIndex
    from seekrl.envs.hybrid import HybridIndex

    directory = Path(directory)
    manifest = read_manifest(directory)
    kind = manifest["kind"]
    if kind == "image":
        raise IndexDirError(f"{directory} is an image index: load it with seekrl.envs.image_kb.ImageKB.load, or "
                            "serve it with `seekrl retriever serve` (POST /image_search)")
    store = DocStore(directory / "docs")
    if kind == "bm25":
        return BM25Index.load(directory / "bm25", store)
    if kind == "dense":
        return DenseIndex.load(directory / "dense", store)
    params = {"fusion": "rrf", **manifest["hybrid"], **hybrid_overrides}
    params["weights"] = tuple(params["weights"])
    return HybridIndex(BM25Index.load(directory / "bm25", store), DenseIndex.load(directory / "dense", store),
                       **params)


def retrieve(index: Searcher, queries: list[str], topk: int, return_scores: bool = False) -> list[list[dict]]:
    """Search-R1 result lists: per query, `{"document": {id, contents}, "score"}` items (or bare documents).

    Blank queries get an empty list without searching: there is nothing to match, and a ranking of
    arbitrary passages would look like an answer to the agent.
    """
    results: list[list[dict]] = [[] for _ in queries]
    live = [i for i, q in enumerate(queries) if q.strip()]
    if not live:
        return results
    rows, scores = index.search([queries[i] for i in live], topk)
    for i, row_list, score_list in zip(live, rows.tolist(), scores.tolist()):
        for row, score in zip(row_list, score_list):
            if row < 0:
                continue
            doc = index.store.doc(row)
            results[i].append({"document": doc, "score": float(score)} if return_scores else doc)
    return results
