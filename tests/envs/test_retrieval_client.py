"""Clients: in-process and HTTP give the same documents; HTTP retries through a restart, then fails typed."""

from __future__ import annotations

import threading
import time

import pytest

from seekrl.config import EnvSection
from seekrl.envs.client import HTTPClient, InProcessClient, ToolError, client_from_env

from retrieval_helpers import ThreadServer, free_port, start_cli_server


def test_http_and_in_process_clients_agree(bm25_server, bm25_index, questions):
    queries = [q["question"] for q in questions[:20]] + [""]
    local = InProcessClient(bm25_index).search(queries, 4)
    with HTTPClient(bm25_server.url) as remote:
        assert remote.search(queries, 4) == local
        assert remote.search([]) == []
        assert remote.health()["num_docs"] == 6200
    assert local[0][0].keys() == {"id", "contents"}
    assert local[-1] == []


def test_in_process_client_rejects_bad_topk(bm25_index):
    with pytest.raises(ToolError) as err:
        InProcessClient(bm25_index).search(["x"], 0)
    assert err.value.kind == "invalid_request"


def test_client_errors_are_not_retried(bm25_server):
    client = HTTPClient(bm25_server.url, max_retries=5, backoff_s=5.0)
    start = time.monotonic()
    with pytest.raises(ToolError) as err:
        client.search(["x"], topk=1000)
    assert time.monotonic() - start < 2.0  # no 5 s backoff: a 4xx is final
    assert err.value.kind == "invalid_request" and err.value.status == 422
    assert "topk must be between 1 and 100" in str(err.value)


def test_wrong_api_key_is_an_auth_tool_error(bm25_index):
    from seekrl.envs.server import create_app

    server = ThreadServer(create_app(bm25_index, api_key="k1")).start()
    try:
        with pytest.raises(ToolError) as err:
            HTTPClient(server.url, api_key="k2").search(["x"])
        assert err.value.kind == "auth" and err.value.status == 401
        assert HTTPClient(server.url, api_key="k1").search(["Constantin Medien"], 1)[0][0]["id"] == "doc00000"
    finally:
        server.stop()


def test_malformed_server_answers_are_bad_response_errors():
    from fastapi import FastAPI

    app = FastAPI()
    answers = iter([{"result": "nope"}, {"result": [[{"id": 1}]]}, {"result": [[], []]}])

    @app.post("/retrieve")
    def bad():
        return next(answers)

    server = ThreadServer(app).start()
    try:
        client = HTTPClient(server.url, max_retries=0)
        for message in ("without a 'result' list", "without string 'contents'", "2 result lists for 1 queries"):
            with pytest.raises(ToolError, match=message) as err:
                client.search(["q"])
            assert err.value.kind == "bad_response"
    finally:
        server.stop()


def test_retries_through_a_server_restart_then_fails_when_it_stays_down(bm25_dir):
    port = free_port()
    proc = start_cli_server(bm25_dir, port)
    client = HTTPClient(f"http://127.0.0.1:{port}", max_retries=6, backoff_s=0.5, max_backoff_s=2.0, timeout_s=5)
    try:
        assert client.search(["Constantin Medien"], 1)[0][0]["id"] == "doc00000"
        proc.terminate()
        proc.wait(timeout=20)
        restarted: list = []
        # Bring the server back while the client is already retrying against the dead port.
        restarter = threading.Timer(0.3, lambda: restarted.append(start_cli_server(bm25_dir, port)))
        restarter.start()
        start = time.monotonic()
        assert client.search(["VIVA Polska"], 1)[0][0]["id"] == "doc00001"
        restarter.join()
        assert time.monotonic() - start > 0.3
        proc = restarted[0]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    down = HTTPClient(f"http://127.0.0.1:{port}", max_retries=2, backoff_s=0.05)
    start = time.monotonic()
    with pytest.raises(ToolError) as err:
        down.search(["Constantin Medien"])
    assert err.value.kind == "unavailable"
    assert "after 3 attempts" in str(err.value)
    assert time.monotonic() - start < 5


def test_timeouts_become_tool_errors(bm25_index):
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/retrieve")
    def slow():
        time.sleep(1.0)
        return {"result": [[]]}

    server = ThreadServer(app).start()
    try:
        with pytest.raises(ToolError) as err:
            HTTPClient(server.url, timeout_s=0.2, max_retries=1, backoff_s=0.01).search(["q"])
        assert err.value.kind == "timeout"
    finally:
        server.stop()


def test_client_from_env(bm25_dir, bm25_server):
    assert client_from_env(EnvSection()) is None
    local = client_from_env(EnvSection(kind="index", index_dir=str(bm25_dir), topk=2))
    assert isinstance(local, InProcessClient)
    remote = client_from_env(EnvSection(kind="url", url=bm25_server.url, topk=2))
    assert isinstance(remote, HTTPClient)
    assert remote.search(["Constantin Medien"]) == local.search(["Constantin Medien"])
    assert len(local.search(["Constantin Medien"])[0]) == 2
    with pytest.raises(ValueError, match="env.url is not set"):
        client_from_env(EnvSection(kind="url"))
