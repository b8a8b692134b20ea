"""Hybrid retrieval: BM25 and dense candidate lists fused into one ranking, by rank (RRF) or by score (convex).

Both fusions start from the same candidates: each retriever's first `depth` results for the query (BM25 leaves
out passages sharing no query term, so its list may be shorter). A passage outside both lists is never returned.

`fusion="rrf"`, reciprocal-rank fusion (Cormack et al. 2009):

    score(d) = sum over retrievers r that returned d of  w_r / (rrf_k + rank_r(d)),   rank starting at 1.

RRF uses ranks, not scores, so the two score scales (BM25 unbounded, cosine in [-1, 1]) never need
calibrating; it also discards how far ahead a retriever's first passage is of its tenth.
- `rrf_k` (60 in the paper): larger k flattens the rank curve, so agreement between retrievers counts more
  than a single retriever's top position;
- `weights`: per-retriever multipliers (bm25, dense).

`fusion="convex"`, convex combination of normalised scores (Bruch et al. 2023, "An Analysis of Fusion
Functions for Hybrid Retrieval", who find it more accurate than RRF in and out of domain):

    score(d) = (1 - alpha) * N_bm25(d) + alpha * N_dense(d)

N_r is retriever r's score normalised per query over r's own candidate list L_r (the scores it returned):
- `norm="minmax"`: N_r(d) = (s_r(d) - min L_r) / (max L_r - min L_r), so r's best passage gets 1, its last 0;
- `norm="zscore"`: N_r(d) = (s_r(d) - mean L_r) / std L_r (population std).
A passage that r did not return (d in the other list only) is given r's lowest returned score, min L_r, before
normalising: r ranked it no better than its last candidate (0 under min-max). Two degenerate lists: an empty
one contributes 0 to every passage; one without spread (max = min, e.g. a single BM25 match) gives 1 to its
members and 0 to the rest. `alpha` is the dense share: 0 is BM25's order over the union, 1 dense's.

Ties (both fusions) are broken by the better single-retriever rank, then by corpus row, so results are
deterministic. All parameters (fusion, depth, rrf_k, weights, alpha, norm) are recorded in the manifest.

Defaults: convex, min-max, alpha 0.5, depth 100. Convex because Bruch et al. find it ahead of RRF, and on the
multihop set (benchmarks/bench_retrieval.py) it is ahead of RRF at recall@1 and @5 on HotpotQA and MuSiQue.
alpha 0.5 is fixed a priori (equal shares; no tuning data), not fitted to the benchmark questions; the benchmark
prints an alpha grid to show the sensitivity. Neither fusion beats dense at recall@10 on 2Wiki (12 questions;
one gold passage that dense ranks 10th and BM25 not at all), whatever alpha or rrf_k. Indexes built before
convex fusion existed load as RRF.
"""

from __future__ import annotations

import numpy as np

from seekrl.envs.bm25 import BM25Index
from seekrl.envs.dense import DenseIndex

FUSIONS = ("rrf", "convex")
NORMS = ("minmax", "zscore")


def check_fusion(fusion: str, alpha: float, norm: str) -> None:
    """Raise ValueError naming the fix for fusion parameters a hybrid cannot use."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown hybrid fusion {fusion!r}; use one of {list(FUSIONS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown score normalisation {norm!r}; use one of {list(NORMS)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha} is outside [0, 1]; it is the dense share of the convex combination")


def rrf_fuse(rankings: list[list[int]], weights: list[float], k: float, topk: int) -> list[tuple[int, float]]:
    """Fuse ranked row lists into the top `topk` (row, fused score) pairs, best first; row -1 is skipped.

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


def normalise_scores(scores: list[float], norm: str = "minmax") -> tuple[list[float], float]:
    """(normalised scores of the listed passages, value for a passage missing from the list); see module doc.

    >>> normalise_scores([9.0, 6.0, 3.0])
    ([1.0, 0.5, 0.0], 0.0)
    >>> round(normalise_scores([9.0, 6.0, 3.0], "zscore")[1], 6)
    -1.224745
    """
    if norm not in NORMS:
        raise ValueError(f"unknown score normalisation {norm!r}; use one of {list(NORMS)}")
    if not scores:
        return [], 0.0
    values = np.asarray(scores, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if high == low:
        return [1.0] * len(scores), 0.0
    if norm == "minmax":
        return ((values - low) / (high - low)).tolist(), 0.0
    mean, std = float(values.mean()), float(values.std())
    return ((values - mean) / std).tolist(), (low - mean) / std


def convex_fuse(rankings: list[list[int]], scores: list[list[float]], weights: list[float], topk: int,
                norm: str = "minmax") -> list[tuple[int, float]]:
    """Top `topk` (row, sum_r weights[r] * N_r(row)) over the union of the lists, best first; row -1 is skipped.

    `rankings[r]` and `scores[r]` are retriever r's rows and raw scores, best first; a hybrid passes
    weights (1 - alpha, alpha) for (bm25, dense). Missing passages and degenerate lists: see the module doc.

    >>> convex_fuse([[7, 3], [3, 9]], [[4.0, 2.0], [0.9, 0.5]], weights=[0.5, 0.5], topk=3)
    [(3, 0.5), (7, 0.5), (9, 0.0)]
    """
    normalised: list[dict[int, float]] = []
    missing: list[float] = []
    best_rank: dict[int, int] = {}
    for ranking, raw in zip(rankings, scores):
        kept = [(row, float(score)) for row, score in zip(ranking, raw) if row >= 0]
        values, absent = normalise_scores([score for _, score in kept], norm)
        normalised.append({row: value for (row, _), value in zip(kept, values)})
        missing.append(absent)
        for rank, (row, _) in enumerate(kept, 1):
            best_rank[row] = min(best_rank.get(row, rank), rank)
    fused = {row: sum(w * table.get(row, absent) for w, table, absent in zip(weights, normalised, missing))
             for row in best_rank}
    order = sorted(fused, key=lambda row: (-fused[row], best_rank[row], row))
    return [(row, fused[row]) for row in order[:topk]]


class HybridIndex:
    """BM25 + dense over the same DocStore, fused by RRF or a convex combination (module doc).

    `search` returns (rows [Q, k], fused scores [Q, k]); row -1 where the union has fewer than k passages.
    """

    kind = "hybrid"

    def __init__(self, bm25: BM25Index, dense: DenseIndex, fusion: str = "convex", rrf_k: float = 60.0,
                 depth: int = 100, weights: tuple[float, float] = (1.0, 1.0), alpha: float = 0.5,
                 norm: str = "minmax"):
        if bm25.store is not dense.store:
            raise ValueError("the BM25 and dense indexes of a hybrid must share one DocStore")
        check_fusion(fusion, alpha, norm)
        self.bm25 = bm25
        self.dense = dense
        self.store = bm25.store
        self.params = {"fusion": fusion, "rrf_k": float(rrf_k), "depth": int(depth),
                       "weights": [float(w) for w in weights], "alpha": float(alpha), "norm": norm}

    def fuse(self, rankings: list[list[int]], scores: list[list[float]], topk: int) -> list[tuple[int, float]]:
        """One query's (bm25, dense) candidate lists fused with this index's parameters."""
        p = self.params
        if p["fusion"] == "rrf":
            return rrf_fuse(rankings, p["weights"], p["rrf_k"], topk)
        return convex_fuse(rankings, scores, [1.0 - p["alpha"], p["alpha"]], topk, p["norm"])

    def search(self, queries: list[str], topk: int) -> tuple[np.ndarray, np.ndarray]:
        depth = max(self.params["depth"], topk)
        bm25_rows, bm25_scores = self.bm25.search(queries, depth)
        dense_rows, dense_scores = self.dense.search(queries, depth)
        rows = np.full((len(queries), topk), -1, dtype=np.int64)
        scores = np.zeros((len(queries), topk), dtype=np.float32)
        for i in range(len(queries)):
            fused = self.fuse([bm25_rows[i].tolist(), dense_rows[i].tolist()],
                              [bm25_scores[i].tolist(), dense_scores[i].tolist()], topk)
            for j, (row, score) in enumerate(fused):
                rows[i, j], scores[i, j] = row, score
        return rows, scores
