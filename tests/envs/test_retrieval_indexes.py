"""BM25, dense and hybrid indexes: build -> save -> load gives identical rankings, and the rankings are right."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from seekrl.envs.corpus import DocStore, iter_corpus
from seekrl.envs.dense import PASSAGE_FORMATS, Encoder, default_encoder_path, default_prefixes, passage_embeddings
from seekrl.envs.hybrid import HybridIndex, rrf_fuse
from seekrl.envs.index import BuildOptions, IndexDirError, build_index, load_index, read_manifest, retrieve


def recall_at(index, questions, k):
    rows, _ = index.search([q["question"] for q in questions], k)
    per_dataset = defaultdict(list)
    for q, row_list in zip(questions, rows.tolist()):
        found = {index.store.ids[r] for r in row_list if r >= 0}
        per_dataset[q["dataset"]].append(len(found & set(q["gold_doc_ids"])) / len(q["gold_doc_ids"]))
    return {name: float(np.mean(v)) for name, v in per_dataset.items()}


def test_bm25_round_trip_gives_identical_rankings(multihop, bm25_dir, bm25_index, questions):
    fresh = build_index(multihop / "corpus.jsonl", bm25_dir.parent / "bm25-again", "bm25", progress=False)
    queries = [q["question"] for q in questions]
    rows_a, scores_a = fresh.search(queries, 10)
    rows_b, scores_b = bm25_index.search(queries, 10)
    np.testing.assert_array_equal(rows_a, rows_b)
    np.testing.assert_array_equal(scores_a, scores_b)
    assert read_manifest(bm25_dir)["corpus"]["num_docs"] == 6200


def test_bm25_recall_matches_the_plain_library_reference(bm25_index, questions):
    recall = recall_at(bm25_index, questions, 10)
    # bm25s on the raw questions over all 6,200 passages (issue reference: 0.857 / 0.559 / 0.833).
    assert recall["hotpotqa"] == pytest.approx(0.857, abs=0.01)
    assert recall["musique"] == pytest.approx(0.559, abs=0.01)
    assert recall["2wikimultihopqa"] == pytest.approx(0.833, abs=0.01)


def test_bm25_known_query_and_no_match(bm25_index):
    result = retrieve(bm25_index, ["Constantin Medien German media group Ismaning", "qqqzzz xyzzy"], 3,
                      return_scores=True)
    assert result[0][0]["document"]["id"] == "doc00000"
    assert result[0][0]["score"] > result[0][1]["score"] > 0
    # No passage shares a term with the second query: no arbitrary passages are returned.
    assert result[1] == []


def test_bm25_stemming_changes_matching(small_corpus, tmp_path):
    plain = build_index(small_corpus, tmp_path / "plain", "bm25", progress=False)
    stemmed = build_index(small_corpus, tmp_path / "stem", "bm25", BuildOptions(stemmer="english"), progress=False)
    # "entertainments" only matches "entertainment" (in doc00000's text) after stemming.
    assert plain.search(["entertainments"], 1)[0][0, 0] == -1
    assert stemmed.search(["entertainments"], 1)[0][0, 0] >= 0
    assert load_index(tmp_path / "stem").search(["entertainments"], 5)[0].tolist() == \
        stemmed.search(["entertainments"], 5)[0].tolist()


def test_dense_round_trip_and_self_retrieval(dense_dir, small_corpus, embedding_cache):
    index = load_index(dense_dir)
    assert index.kind == "dense" and len(index.store) == 200
    docs = list(iter_corpus(small_corpus))
    titles = [contents.split("\n", 1)[1][:200] for _, contents in docs[:40]]
    rows, scores = index.search(titles, 5)
    # A passage's own opening text finds that passage first.
    assert np.mean(rows[:, 0] == np.arange(40)) >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    again = load_index(dense_dir)
    rows_b, scores_b = again.search(titles, 5)
    np.testing.assert_array_equal(rows, rows_b)
    np.testing.assert_allclose(scores, scores_b, rtol=1e-5)
    assert len(list(embedding_cache.glob("*.npy"))) == 1


def test_embedding_cache_is_reused_and_matches_fresh_encoding(dense_dir, embedding_cache):
    store = DocStore(dense_dir / "docs")
    encoder = Encoder()
    cached = passage_embeddings(encoder, store, cache=embedding_cache, progress=False)
    assert isinstance(cached, np.memmap)  # loaded from disk, not recomputed
    fresh = encoder.encode_passages([store.contents[i] for i in range(8)])
    np.testing.assert_allclose(cached[:8], fresh, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(fresh, axis=1), 1.0, atol=1e-5)


def test_encoder_defaults_and_prefixes():
    assert (default_encoder_path() / "model.safetensors").is_file()
    assert default_prefixes("intfloat/e5-base-v2") == ("query: ", "passage: ")
    assert default_prefixes("sentence-transformers/all-MiniLM-L6-v2") == ("", "")
    assert Encoder("intfloat/e5-base-v2").query_prefix == "query: "
    assert Encoder("intfloat/e5-base-v2", query_prefix="").query_prefix == ""
    # Default passage text: 'Title text' (see dense.DEFAULT_PASSAGE_FORMAT), the same for indexes built by options.
    assert Encoder().passage_format == BuildOptions().passage_format == "title_text"
    assert PASSAGE_FORMATS["title_text"]('"Paris"\nParis is the capital.') == "Paris Paris is the capital."


@pytest.mark.parametrize("faiss_type", ["ivf", "hnsw"])
def test_approximate_faiss_options_find_the_passage_itself(small_corpus, embedding_cache, tmp_path, faiss_type):
    options = BuildOptions(cache_dir=str(embedding_cache), faiss_type=faiss_type, nlist=4, nprobe=4)
    index = build_index(small_corpus, tmp_path / faiss_type, "dense", options, progress=False)
    texts = [index.store.contents[i][:300] for i in range(0, 200, 10)]
    rows, _ = index.search(texts, 1)
    assert np.mean(rows[:, 0] == np.arange(0, 200, 10)) >= 0.9
    loaded = load_index(tmp_path / faiss_type)
    assert loaded.faiss_index.__class__ is index.faiss_index.__class__
    assert loaded.search(texts, 3)[0].tolist() == index.search(texts, 3)[0].tolist()


def test_existing_flashrag_style_faiss_file_loads_as_is(shared_data, tmp_path):
    """A FAISS Flat-IP file written the way FlashRAG/Search-R1 do, over a {id, contents} corpus, used unchanged."""
    import faiss

    corpus = tmp_path / "wiki.jsonl"
    lines = (shared_data / "searchr1_format" / "wiki_sample_1000.jsonl").read_text().splitlines()[:60]
    corpus.write_text("\n".join(lines) + "\n")
    contents = [json.loads(line)["contents"] for line in lines]
    encoder = Encoder()
    vectors = encoder.encode_passages(contents)
    flat = faiss.index_factory(vectors.shape[1], "Flat", faiss.METRIC_INNER_PRODUCT)
    flat.add(vectors)
    faiss.write_index(flat, str(tmp_path / "e5_Flat.index"))

    index = build_index(corpus, tmp_path / "idx", "dense", BuildOptions(faiss_file=str(tmp_path / "e5_Flat.index")),
                        progress=False)
    assert not (tmp_path / "idx" / "dense" / "faiss.index").exists()  # referenced, not copied
    queries = [c.split("\n", 1)[1][:120] for c in contents[:20]]
    expected_scores, expected_rows = flat.search(encoder.encode_queries(queries), 3)
    for searcher in (index, load_index(tmp_path / "idx")):
        rows, scores = searcher.search(queries, 3)
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    hits = retrieve(index, queries[:1], 1)[0][0]
    assert hits == {"id": json.loads(lines[0])["id"], "contents": contents[0]}


def test_faiss_file_of_another_corpus_is_rejected(small_corpus, tmp_path):
    import faiss

    flat = faiss.IndexFlatIP(384)
    flat.add(np.zeros((5, 384), dtype=np.float32))
    faiss.write_index(flat, str(tmp_path / "other.index"))
    with pytest.raises(ValueError, match="5 vectors but the corpus has 200"):
        build_index(small_corpus, tmp_path / "idx", "dense", BuildOptions(faiss_file=str(tmp_path / "other.index")),
                    progress=False)


def test_rrf_hand_computed_example():
    # Ranks (1-based): bm25 = [a=10, b=20, c=30], dense = [c=30, d=40, a=10]; k = 60, weights 1 and 1.
    fused = rrf_fuse([[10, 20, 30], [30, 40, 10]], [1.0, 1.0], k=60, topk=4)
    assert [row for row, _ in fused] == [10, 30, 20, 40]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)  # a: rank 1 and rank 3
    assert fused[1][1] == pytest.approx(1 / 63 + 1 / 61)  # c: same sum, tie broken by best rank (1 each) then row
    assert fused[2][1] == pytest.approx(1 / 62)
    assert fused[3][1] == pytest.approx(1 / 62)
    # Weights: doubling dense puts its first document ahead; -1 (empty slots) are ignored.
    weighted = rrf_fuse([[10, -1], [40, 10]], [1.0, 2.0], k=1, topk=2)
    assert weighted == [(10, pytest.approx(1 / 2 + 2 / 3)), (40, pytest.approx(2 / 2))]


def test_hybrid_is_rrf_of_its_parts_and_round_trips(hybrid_dir):
    index = load_index(hybrid_dir, fusion="rrf")
    assert isinstance(index, HybridIndex)
    queries = ["German media group", "Polish music channel launched in 2000", "who founded the company"]
    bm25_rows, _ = index.bm25.search(queries, 100)
    dense_rows, _ = index.dense.search(queries, 100)
    rows, scores = index.search(queries, 5)
    for i in range(len(queries)):
        expected = rrf_fuse([bm25_rows[i].tolist(), dense_rows[i].tolist()], [1.0, 1.0], 60, 5)
        assert rows[i].tolist() == [r for r, _ in expected]
        np.testing.assert_allclose(scores[i], [s for _, s in expected], rtol=1e-6)
    tuned = load_index(hybrid_dir, fusion="rrf", rrf_k=5, depth=20, weights=[1.0, 0.0])
    # With the dense weight at 0 the fused order is BM25's own order.
    assert tuned.search(queries, 5)[0][0].tolist() == [r for r in bm25_rows[0][:5].tolist()]


def test_index_directory_errors(tmp_path, small_corpus, bm25_dir):
    with pytest.raises(IndexDirError, match="no manifest.json"):
        load_index(tmp_path)
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(IndexDirError, match="not empty"):
        build_index(small_corpus, tmp_path, "bm25", progress=False)
    with pytest.raises(IndexDirError, match="holds no seekrl index"):
        build_index(small_corpus, tmp_path, "bm25", overwrite=True, progress=False)
    assert (tmp_path / "keep.txt").exists()
