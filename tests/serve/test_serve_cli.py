"""The `seekrl serve` command: the same checkpoint answers the same through `seekrl serve` and `seekrl eval`
(greedy), and mistakes end in one message before a model loads."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
from conftest import LIMITS

from seekrl.cli import main
from seekrl.testing import free_port

CLI_LIMITS = [f"--{key.replace('_', '-')}={value}" for key, value in LIMITS.items()]


def start_serve(*args: str, timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """`seekrl serve` as a subprocess on a free loopback port; returns once /health answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "seekrl.cli", "serve", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"seekrl serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"seekrl serve did not become healthy in {timeout_s:.0f} s")


def test_serve_answers_like_eval_with_greedy_decoding(tiny_searcher_dir, bm25_server, shared_data, tmp_path):
    questions = shared_data / "multihop" / "questions.jsonl"
    out = tmp_path / "eval"
    assert main(["eval", "--quiet", "--model", str(tiny_searcher_dir), "--protocol", "search_r1", "--retriever",
                 bm25_server.url, "--benchmarks", f"multihop={questions}", "--limit", "4", "--batch-size", "1",
                 "--out", str(out), *CLI_LIMITS]) == 0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and any(p["num_searches"] for p in predictions)

    proc, url = start_serve("--model", str(tiny_searcher_dir), "--retriever", bm25_server.url, "--api-key", "k",
                            *CLI_LIMITS)
    try:
        for prediction in predictions:
            response = httpx.post(url + "/v1/answer", json={"question": prediction["question"]},
                                  headers={"Authorization": "Bearer k"}, timeout=120)
            assert response.status_code == 200
            body = response.json()
            assert body["answer"] == (prediction["prediction"] if prediction["answered"] else None)
            assert [s["query"] for s in body["searches"]] == prediction["trajectory"]["searches"]
            assert body["tokens"] == prediction["tokens"] and body["eflops"] == prediction["eflops"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(("args", "message"), [
    (["--protocol", "gog"], "Glance-or-Gaze"),
    (["--protocol", "rag"], "evaluation baseline"),
    (["--protocol", "search_r1"], "give --retriever"),
    (["--retriever", "http://127.0.0.1:{dead}"], "unreachable"),
    (["--retriever", "{tmp}"], "no manifest.json"),
    (["--retriever", "{bm25}", "--max-batch-size", "0"], "--max-batch-size must be at least 1"),
    (["--retriever", "{bm25}", "--retriever-replicas", "2"], "needs --replicas N and --retriever INDEX_DIR"),
    (["--retriever", "{bm25}", "--timeout-s", "0"], "--timeout-s"),
])
def test_mistakes_end_in_one_message_before_a_model_loads(args, message, bm25_dir, tmp_path, capsys):
    args = [a.format(dead=free_port(), tmp=tmp_path, bm25=bm25_dir) for a in args]
    assert main(["serve", "--model", "no-such-model", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_a_vision_language_checkpoint_is_refused(tiny_vl_dir, capsys):
    assert main(["serve", "--model", str(tiny_vl_dir), "--protocol", "parametric"]) == 2
    assert "vision-language" in capsys.readouterr().err
