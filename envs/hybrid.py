"""Hybrid retrieval: reciprocal-rank fusion (RRF, Cormack et al. 2009) of BM25 and dense rankings.

score(d) = sum over retrievers r of  w_r / (k + rank_r(d)),  rank starting at 1, summed only over the
retrievers that returned d within their first `depth` results. RRF uses ranks, not scores, so the two score
scales (BM25 unbounded, cosine in [-1, 1]) never need calibrating. Parameters (all recorded in the manifest):
- `rrf_k` (60 in the paper): larger k flattens the rank curve, so agreement between retrievers counts more
  than a single retriever's top position;
- `depth`: how many candidates each retriever contributes; deeper lists let a passage ranked moderately by
  both retrievers overtake one ranked first by only one;
- `weights`: per-retriever multipliers (bm25, dense).
Ties are broken by the better single-retriever rank, then by corpus row, so results are deterministic.
"""

from __future__ import annotations

import numpy as np

from seekrl.envs.bm25 import BM25Index
from seekrl.envs.dense import DenseIndex


def rrf_fuse(rankings: list[list[int]], weights: list[float], k: float, topk: int) -> list[tuple[int, float]]:
    """Fuse ranked row lists into the top `topk` (row, fused score) pairs, best first.

    >>> rrf_fuse([[7, 3], [3, 9]], weights=[1.0, 1.0], k=60, topk=3)
    [(3, 0.03252247488101534), (7, 0.01639344262295082), (9, 0.016129032258064516)]
    """
    fused: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, row in enumerate(ranking, 1):
            if row < 0:
                continue
            fused[row] = fused.get(row, 0.0) + weight / (k + rank)
            best_rank[row] = min(best_rank.get(row, rank), rank)
    order = sorted(fused, key=lambda row: (-fused[row], best_rank[row], row))
    return [(row, fused[row]) for row in order[:topk]]


class HybridIndex:
    """BM25 + dense over the same DocStore, fused by RRF. `search` returns (rows [Q, k], scores [Q, k])."""

    kind = "hybrid"

    def __init__(self, bm25: BM25Index, dense: DenseIndex, rrf_k: float = 60.0, depth: int = 100,
                 weights: tuple[float, float] = (1.0, 1.0)):
        if bm25.store is not dense.store:
            raise ValueError("the BM25 and dense indexes of a hybrid must share one DocStore")
        self.bm25 = bm25
        self.dense = dense
        self.store = bm25.store
        self.params = {"rrf_k": float(rrf_k), "depth": int(depth), "weights": [float(w) for w in weights]}

    def search(self, queries: list[str], topk: int) -> tuple[np.ndarray, np.ndarray]:
        depth = max(self.params["depth"], topk)
        bm25_rows, _ = self.bm25.search(queries, depth)
        dense_rows, _ = self.dense.search(queries, depth)
        rows = np.full((len(queries), topk), -1, dtype=np.int64)
        scores = np.zeros((len(queries), topk), dtype=np.float32)
        for i in range(len(queries)):
            fused = rrf_fuse([bm25_rows[i].tolist(), dense_rows[i].tolist()], self.params["weights"],
                             self.params["rrf_k"], topk)
            for j, (row, score) in enumerate(fused):
                rows[i, j], scores[i, j] = row, score
        return rows, scores
