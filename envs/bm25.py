"""BM25 over a DocStore with `bm25s` (sparse matrix scoring, 100x+ faster than rank_bm25).

Tokenisation: lowercase, `\\w\\w+` tokens, English stopwords removed, optional Snowball stemming (PyStemmer).
The tokenizer vocabulary is saved with the index so queries map to the same token ids after loading.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from seekrl.envs.corpus import DocStore


def _stemmer(language: str | None):
    if not language:
        return None
    import Stemmer

    return Stemmer.Stemmer(language)


class BM25Index:
    """Search rows of a DocStore by BM25. `search` returns (rows [Q, k] int64, scores [Q, k] float32)."""

    kind = "bm25"

    def __init__(self, model, tokenizer, store: DocStore, params: dict):
        self.model = model
        self.tokenizer = tokenizer
        self.store = store
        self.params = params

    @staticmethod
    def _make_tokenizer(params: dict):
        from bm25s.tokenization import Tokenizer

        return Tokenizer(lower=True, stopwords=params["stopwords"], stemmer=_stemmer(params["stemmer"]))

    @classmethod
    def build(cls, store: DocStore, k1: float = 1.5, b: float = 0.75, method: str = "lucene",
              stopwords: str = "en", stemmer: str | None = None, progress: bool = True) -> BM25Index:
        """Tokenise every passage (streamed from the store) and build the BM25 score matrix."""
        import bm25s

        params = {"k1": k1, "b": b, "method": method, "stopwords": stopwords, "stemmer": stemmer}
        tokenizer = cls._make_tokenizer(params)
        corpus_ids = tokenizer.tokenize(store.iter_contents(), length=len(store), update_vocab=True,
                                        return_as="ids", show_progress=progress)
        model = bm25s.BM25(k1=k1, b=b, method=method)
        model.index((corpus_ids, tokenizer.get_vocab_dict()), show_progress=progress)
        return cls(model, tokenizer, store, params)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory, show_progress=False)
        self.tokenizer.save_vocab(directory)
        (directory / "seekrl_bm25.json").write_text(json.dumps(self.params, indent=2))

    @classmethod
    def load(cls, directory: str | Path, store: DocStore) -> BM25Index:
        import bm25s

        directory = Path(directory)
        params = json.loads((directory / "seekrl_bm25.json").read_text())
        model = bm25s.BM25.load(directory, mmap=False, show_progress=False)
        tokenizer = cls._make_tokenizer(params)
        tokenizer.load_vocab(directory)
        return cls(model, tokenizer, store, params)

    def search(self, queries: list[str], topk: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and BM25 scores per query; row -1 marks a slot with no passage sharing a query term."""
        topk = min(topk, len(self.store))
        # update_vocab=False: unknown query words are dropped instead of growing the index vocabulary.
        query_ids = self.tokenizer.tokenize(queries, update_vocab=False, return_as="ids", show_progress=False)
        rows, scores = self.model.retrieve(query_ids, k=topk, show_progress=False, n_threads=0)
        rows = np.asarray(rows, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float32)
        # A score of 0 means no query term occurs in the passage: an arbitrary passage, not a result.
        rows[scores <= 0] = -1
        return rows, scores
