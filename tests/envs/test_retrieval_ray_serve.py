"""The same app as a Ray Serve deployment with 2 replicas on a local Ray, answering Search-R1 requests (~20 s)."""

from __future__ import annotations

import httpx
import pytest
from retrieval_helpers import free_port

from seekrl.envs.index import build_index, retrieve


def test_ray_serve_deployment_with_two_replicas(small_corpus, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray import serve

    from seekrl.envs.serve_ray import start_ray_serve

    index = build_index(small_corpus, tmp_path / "bm25", "bm25", progress=False)
    port = free_port()
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        start_ray_serve(tmp_path / "bm25", replicas=2, port=port, api_key="k")
        status = serve.status().applications["seekrl-retriever"]
        assert status.status == "RUNNING"
        replicas = sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values())
        assert replicas == 2
        url = f"http://127.0.0.1:{port}"
        queries = ["Constantin Medien Ismaning", "VIVA Polska music channel"]
        body = {"queries": queries, "topk": 2, "return_scores": True}
        headers = {"Authorization": "Bearer k"}
        answers = [httpx.post(f"{url}/retrieve", json=body, headers=headers, timeout=30) for _ in range(6)]
        assert all(a.status_code == 200 for a in answers)
        assert all(a.json() == {"result": retrieve(index, queries, 2, return_scores=True)} for a in answers)
        assert answers[0].json()["result"][0][0]["document"]["id"] == "doc00000"
        assert httpx.post(f"{url}/retrieve", json=body, timeout=30).status_code == 401
        bad = httpx.post(f"{url}/retrieve", json={"queries": ["x"], "topk": 0}, headers=headers, timeout=30)
        assert bad.status_code == 422 and "topk" in bad.json()["error"]
    finally:
        serve.shutdown()
        ray.shutdown()
