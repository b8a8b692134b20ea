"""The /retrieve server on a real loopback port: Search-R1 schema, known answers, and every kind of bad input."""

from __future__ import annotations

import json

import httpx
import pytest

from seekrl.envs.index import load_index, retrieve
from seekrl.envs.server import MAX_BODY_BYTES, create_app

from retrieval_helpers import ThreadServer


def post(server, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}/retrieve", json=body, timeout=30, **kwargs)


def assert_still_serving(server) -> None:
    response = post(server, {"queries": ["VIVA Polska music channel"], "topk": 1})
    assert response.status_code == 200
    assert response.json()["result"][0][0]["id"] == "doc00001"


def test_search_r1_request_with_scores(bm25_server, bm25_index, questions):
    queries = [q["question"] for q in questions[:5]]
    response = post(bm25_server, {"queries": queries, "topk": 3, "return_scores": True})
    assert response.status_code == 200
    result = response.json()["result"]
    assert len(result) == 5
    for per_query, expected in zip(result, retrieve(bm25_index, queries, 3, return_scores=True)):
        assert len(per_query) == 3
        for item, want in zip(per_query, expected):
            assert set(item) == {"document", "score"}
            assert set(item["document"]) == {"id", "contents"}
            assert isinstance(item["score"], float)
            assert item["document"] == want["document"]
            assert item["score"] == pytest.approx(want["score"])
    # The first question's gold passage about VIVA Media is among its top 3.
    assert "doc00005" in {item["document"]["id"] for item in result[0]}


def test_search_r1_request_without_scores_returns_bare_documents(bm25_server):
    response = post(bm25_server, {"queries": ["Constantin Medien Ismaning", "VIVA Polska music channel"],
                                  "topk": None, "return_scores": False})
    assert response.status_code == 200
    result = response.json()["result"]
    assert [len(r) for r in result] == [3, 3]  # topk null -> server default 3
    assert result[0][0]["id"] == "doc00000"
    assert result[0][0]["contents"].startswith('"Constantin Medien"\nConstantin Medien AG')
    assert result[1][0]["id"] == "doc00001"
    # Minimal Search-R1 body: only "queries".
    assert post(bm25_server, {"queries": ["Constantin Medien"]}).json()["result"][0][0]["id"] == "doc00000"


def test_health(bm25_server):
    response = httpx.get(f"{bm25_server.url}/health")
    assert response.json() == {"status": "ok", "kind": "bm25", "num_docs": 6200}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"queries": ["x"], "topk": 0}, 422, "topk must be between 1 and 100"),
        ({"queries": ["x"], "topk": -3}, 422, "topk must be between 1 and 100"),
        ({"queries": ["x"], "topk": 101}, 422, "topk must be between 1 and 100"),
        ({"queries": "not a list"}, 422, "queries: Input should be a valid list"),
        ({"queries": [1, 2]}, 422, "queries.0: Input should be a valid string"),
        ({"queries": ["x"], "topk": "3"}, 422, "topk"),
        ({"queries": ["x"], "topk": 2.5}, 422, "topk"),
        ({"queries": ["x"], "return_scores": "yes"}, 422, "return_scores"),
        ({"queries": ["x"], "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
        ({"topk": 3}, 422, "queries: Field required"),
        ([["x"]], 422, "Input should be a valid dictionary"),
        ({"queries": ["q"] * 10_000}, 422, "10000 queries in one request; at most 1024"),
    ],
)
def test_bad_json_bodies_get_4xx_with_a_message(bm25_server, body, status, message):
    response = post(bm25_server, body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert_still_serving(bm25_server)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe garbage", b'{"queries": ["x"]'])
def test_non_json_bodies_get_422(bm25_server, raw):
    response = httpx.post(f"{bm25_server.url}/retrieve", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "invalid request" in response.json()["error"]
    assert_still_serving(bm25_server)


def test_wrong_method_and_path_are_4xx_json(bm25_server):
    assert httpx.get(f"{bm25_server.url}/retrieve").status_code == 405
    response = httpx.post(f"{bm25_server.url}/nope", json={})
    assert response.status_code == 404 and "error" in response.json()


def test_empty_query_list_and_blank_queries(bm25_server):
    assert post(bm25_server, {"queries": []}).json() == {"result": []}
    result = post(bm25_server, {"queries": ["", "   ", "Constantin Medien"], "topk": 2}).json()["result"]
    assert result[0] == [] and result[1] == []
    assert result[2][0]["id"] == "doc00000"


def test_100kb_query_is_truncated_not_rejected(bm25_server):
    long_query = "Constantin Medien " + "x" * 100_000
    response = post(bm25_server, {"queries": [long_query], "topk": 1})
    assert response.status_code == 200
    assert response.headers["X-Truncated-Queries"] == "1"
    assert response.json()["result"][0][0]["id"] == "doc00000"


def test_oversized_body_gets_413_whether_or_not_content_length_is_declared(bm25_server):
    big = json.dumps({"queries": ["a" * 1000] * (MAX_BODY_BYTES // 1000 + 10)}).encode()
    response = httpx.post(f"{bm25_server.url}/retrieve", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]

    def chunks():  # streamed without Content-Length
        for start in range(0, len(big), 1 << 20):
            yield big[start:start + (1 << 20)]

    response = httpx.post(f"{bm25_server.url}/retrieve", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert_still_serving(bm25_server)


def test_api_key_is_required_when_configured(bm25_index):
    server = ThreadServer(create_app(bm25_index, api_key="s3cret", max_topk=5)).start()
    try:
        body = {"queries": ["Constantin Medien"], "topk": 1}
        assert post(server, body).status_code == 401
        wrong = post(server, body, headers={"Authorization": "Bearer s3cres"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        ok = post(server, body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["result"][0][0]["id"] == "doc00000"
        assert post(server, {**body, "topk": 6}, headers={"Authorization": "Bearer s3cret"}).status_code == 422
        assert httpx.get(f"{server.url}/health").status_code == 200  # health stays open for load balancers
    finally:
        server.stop()


def test_hybrid_server_answers_with_fused_rankings(hybrid_dir):
    index = load_index(hybrid_dir)
    server = ThreadServer(create_app(index)).start()
    try:
        queries = ["German media group in Ismaning", "Polish music television channel"]
        result = post(server, {"queries": queries, "topk": 2, "return_scores": True}).json()["result"]
        assert result == retrieve(index, queries, 2, return_scores=True)
        assert result[0][0]["document"]["id"] == "doc00000"
        assert result[1][0]["document"]["id"] == "doc00001"
    finally:
        server.stop()


def test_concurrent_requests_are_merged_yet_each_gets_its_own_ranking(bm25_server, bm25_index, questions):
    """40 simultaneous requests with mixed topk / return_scores (the micro-batcher merges them) each get
    exactly the answer they get alone."""
    from concurrent.futures import ThreadPoolExecutor

    cases = [([q["question"] for q in questions[i:i + 1 + i % 3]], 1 + i % 5, i % 2 == 0) for i in range(40)]

    def ask(case):
        queries, topk, scores = case
        return post(bm25_server, {"queries": queries, "topk": topk, "return_scores": scores}).json()["result"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, cases))
    for (queries, topk, scores), answer in zip(cases, answers):
        expected = retrieve(bm25_index, queries, topk, return_scores=True)
        if not scores:
            expected = [[item["document"] for item in per_query] for per_query in expected]
        assert answer == expected
