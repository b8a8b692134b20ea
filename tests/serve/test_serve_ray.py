"""`seekrl serve --replicas 2 --retriever-replicas 1` on a local Ray: two agent replicas and the retrieval server
as its own deployment, all behind Ray Serve's HTTP proxy."""

from __future__ import annotations

import httpx
import pytest
from conftest import LIMITS, serving

from seekrl.envs.client import InProcessClient
from seekrl.envs.index import retrieve
from seekrl.testing import free_port

pytestmark = pytest.mark.slow


def test_ray_serve_agent_replicas_with_a_retriever_deployment(tiny_searcher_dir, bm25_dir, bm25_index, searcher,
                                                              questions, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray import serve

    from seekrl.envs.serve_ray import DEPLOYMENT_NAME as RETRIEVER
    from seekrl.serve import DEPLOYMENT_NAME, ServeOptions, check_options, start_ray_serve

    port = free_port()
    options = ServeOptions(model=str(tiny_searcher_dir), retriever=str(bm25_dir), replicas=2, retriever_replicas=1,
                           port=port, api_key="k", **LIMITS)
    check_options(options)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        start_ray_serve(options)
        apps = serve.status().applications
        assert apps[DEPLOYMENT_NAME].status == "RUNNING" and apps[RETRIEVER].status == "RUNNING"
        running = sum(d.replica_states.get("RUNNING", 0) for d in apps[DEPLOYMENT_NAME].deployments.values())
        assert running == 2

        url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k"}
        answers = [httpx.post(url + "/v1/answer", json={"question": questions[0]}, headers=auth, timeout=120)
                   for _ in range(4)]
        assert [a.status_code for a in answers] == [200] * 4
        body = answers[0].json()
        assert body["num_searches"] >= 1 and body["retrieval_failures"] == 0
        # The searches went through the retriever deployment to the same BM25 index.
        for search in body["searches"]:
            assert search["results"] == retrieve(bm25_index, [search["query"]], 3)[0]
        # Every replica answers as the single-process server does.
        with serving(searcher, InProcessClient(bm25_index)) as local:
            expected = httpx.post(local.url + "/v1/answer", json={"question": questions[0]}, timeout=120).json()
        assert all(a.json()["answer"] == expected["answer"] and a.json()["searches"] == expected["searches"]
                   for a in answers)

        assert httpx.post(url + "/v1/answer", json={"question": questions[0]}, timeout=30).status_code == 401
        # The retriever behind the proxy takes the same key.
        assert httpx.post(url + "/retriever/retrieve", json={"queries": ["x"]}, timeout=30).status_code == 401
        assert httpx.get(url + "/health", timeout=30).json()["model"] == tiny_searcher_dir.name
    finally:
        serve.shutdown()
        ray.shutdown()
