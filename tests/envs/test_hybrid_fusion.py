"""Hybrid fusion: convex combination of normalised scores (hand-computed) and its build/save/load round trip."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from seekrl.envs.hybrid import HybridIndex, convex_fuse, normalise_scores, rrf_fuse
from seekrl.envs.index import BuildOptions, build_index, load_index, read_manifest

# bm25 returned a=10, b=20, c=30 (then an empty slot); dense returned c=30, d=40, a=10.
RANKINGS = [[10, 20, 30, -1], [30, 40, 10]]
SCORES = [[8.0, 4.0, 2.0, 0.0], [0.9, 0.6, 0.3]]
QUERIES = ["German media group", "Polish music channel launched in 2000", "who founded the company"]


def test_minmax_convex_hand_computed_with_missing_scores_and_ties():
    # min-max: bm25 a=1, b=(4-2)/(8-2)=1/3, c=0; dense c=1, d=0.5, a=0. Missing: d has no bm25 score, b no dense
    # score; each gets its list's minimum, which min-max maps to 0.
    fused = convex_fuse(RANKINGS, SCORES, [0.5, 0.5], topk=10)
    # a = c = 0.5: tie broken by best single rank (1 each), then by row, so a (10) before c (30).
    assert [row for row, _ in fused] == [10, 30, 40, 20]
    assert [score for _, score in fused] == pytest.approx([0.5, 0.5, 0.25, 1 / 6])
    # alpha 0.75 (weights 0.25 bm25, 0.75 dense): c 0.75, d 0.375, a 0.25, b 1/12.
    fused = convex_fuse(RANKINGS, SCORES, [0.25, 0.75], topk=3)
    assert fused == [(30, pytest.approx(0.75)), (40, pytest.approx(0.375)), (10, pytest.approx(0.25))]


def test_zscore_convex_hand_computed():
    # bm25 [8, 4, 2]: mean 14/3, population std sqrt(56)/3 -> a 10/sqrt(56), b -2/sqrt(56), c (= min) -8/sqrt(56).
    # dense [.9, .6, .3]: mean .6, std sqrt(.06) -> c sqrt(1.5), d 0, a (= min) -sqrt(1.5).
    r56, r15 = math.sqrt(56), math.sqrt(1.5)
    expected = {10: (10 / r56 - r15) / 2, 20: (-2 / r56 - r15) / 2, 30: (-8 / r56 + r15) / 2, 40: (-8 / r56 + 0) / 2}
    fused = convex_fuse(RANKINGS, SCORES, [0.5, 0.5], topk=10, norm="zscore")
    assert [row for row, _ in fused] == sorted(expected, key=lambda r: -expected[r]) == [30, 10, 40, 20]
    for row, score in fused:
        assert score == pytest.approx(expected[row])


def test_degenerate_lists_and_alpha_extremes():
    # One BM25 match (no spread): its member gets 1, everything else 0. Dense scores tied: both members get 1.
    assert normalise_scores([3.0]) == ([1.0], 0.0)
    assert normalise_scores([0.5, 0.5], "zscore") == ([1.0, 1.0], 0.0)
    assert normalise_scores([]) == ([], 0.0)
    fused = convex_fuse([[5, -1, -1], [6, 5]], [[3.0, 0.0, 0.0], [0.5, 0.5]], [0.5, 0.5], topk=3)
    assert fused == [(5, pytest.approx(1.0)), (6, pytest.approx(0.5))]
    # An empty BM25 list contributes nothing: the dense order remains.
    assert convex_fuse([[-1, -1], [6, 7]], [[0.0, 0.0], [0.8, 0.2]], [0.5, 0.5], topk=2) == [(6, 0.5), (7, 0.0)]
    # alpha 0: BM25's order, then the dense-only passages (all 0) by their dense rank; alpha 1: dense's order first.
    assert [r for r, _ in convex_fuse(RANKINGS, SCORES, [1.0, 0.0], topk=4)] == [10, 20, 30, 40]
    assert [r for r, _ in convex_fuse(RANKINGS, SCORES, [0.0, 1.0], topk=4)] == [30, 40, 10, 20]
    with pytest.raises(ValueError, match="normalisation"):
        normalise_scores([1.0, 2.0], "softmax")


def test_convex_hybrid_build_save_load_round_trip(small_corpus, embedding_cache, tmp_path):
    options = BuildOptions(cache_dir=str(embedding_cache), fusion="convex", alpha=0.3, norm="zscore", depth=40)
    built = build_index(small_corpus, tmp_path / "hybrid", "hybrid", options, progress=False)
    manifest = read_manifest(tmp_path / "hybrid")
    assert manifest["hybrid"] == {"fusion": "convex", "rrf_k": 60.0, "depth": 40, "weights": [1.0, 1.0],
                                  "alpha": 0.3, "norm": "zscore"}
    loaded = load_index(tmp_path / "hybrid")
    assert isinstance(loaded, HybridIndex) and loaded.params == manifest["hybrid"]
    rows, scores = loaded.search(QUERIES, 5)
    rows_built, scores_built = built.search(QUERIES, 5)
    np.testing.assert_array_equal(rows, rows_built)
    np.testing.assert_array_equal(scores, scores_built)
    # The fused ranking is the convex combination of the two parts' depth-40 lists.
    bm25_rows, bm25_scores = loaded.bm25.search(QUERIES, 40)
    dense_rows, dense_scores = loaded.dense.search(QUERIES, 40)
    for i in range(len(QUERIES)):
        expected = convex_fuse([bm25_rows[i].tolist(), dense_rows[i].tolist()],
                               [bm25_scores[i].tolist(), dense_scores[i].tolist()], [0.7, 0.3], 5, "zscore")
        assert rows[i].tolist() == [r for r, _ in expected]
        np.testing.assert_allclose(scores[i], [s for _, s in expected], rtol=1e-6)
    # Overrides at load time switch the fusion without rebuilding.
    as_rrf = load_index(tmp_path / "hybrid", fusion="rrf")
    expected = rrf_fuse([bm25_rows[0].tolist(), dense_rows[0].tolist()], [1.0, 1.0], 60, 5)
    assert as_rrf.search(QUERIES[:1], 5)[0][0].tolist() == [r for r, _ in expected]
    assert len(list(embedding_cache.glob("*.npy"))) == 1  # the session's cached embeddings were reused


def test_manifest_without_fusion_loads_as_rrf(hybrid_dir, tmp_path):
    old = tmp_path / "old-hybrid"
    shutil.copytree(hybrid_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["hybrid"] = {"rrf_k": 60.0, "depth": 100, "weights": [1.0, 1.0]}  # as written before convex fusion
    (old / "manifest.json").write_text(json.dumps(manifest))
    index = load_index(old)
    assert index.params["fusion"] == "rrf"
    rows = index.search(QUERIES, 5)[0]
    np.testing.assert_array_equal(rows, load_index(hybrid_dir, fusion="rrf").search(QUERIES, 5)[0])


def test_bad_fusion_parameters_fail_before_building(small_corpus, tmp_path):
    for options, message in ((BuildOptions(alpha=1.5), "outside"), (BuildOptions(fusion="max"), "unknown hybrid"),
                             (BuildOptions(norm="l2"), "normalisation")):
        with pytest.raises(ValueError, match=message):
            build_index(small_corpus, tmp_path / "never", "hybrid", options, progress=False)
        assert not (tmp_path / "never").exists()
