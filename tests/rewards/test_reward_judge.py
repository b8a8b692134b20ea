"""judge_reward against a real HTTP server on loopback that speaks the OpenAI chat-completions schema."""

from __future__ import annotations

import socket
import time

import pytest

from seekrl.rewards import judge_reward
from seekrl.rewards.judge import clear_cache


def test_verdicts_request_schema_and_cache(judge_server):
    completions = [
        "<answer>It is the Northern Cardinal</answer>",
        "<answer>a robin</answer>",
        "no answer at all",
        "<answer>It is the Northern Cardinal</answer>",
    ]
    golds = {"golden_answers": [["northern cardinal"], ["northern cardinal"], ["cardinal"], ["northern cardinal"]]}
    rewards = judge_reward(completions, url=judge_server.url, model="judge-7b", question=["Which bird?"] * 4, **golds)
    assert rewards == [1.0, 0.0, 0.0, 1.0]
    # Two distinct (question, golds, answer) triples: two requests; no request for the missing answer.
    assert len(judge_server.requests) == 2
    request = judge_server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == "judge-7b"
    assert [m["role"] for m in request["body"]["messages"]] == ["system", "user"]
    assert "Question: Which bird?" in request["body"]["messages"][1]["content"]
    # Same inputs again: answered from the cache, no new request.
    assert (
        judge_reward(completions, url=judge_server.url, model="judge-7b", question=["Which bird?"] * 4, **golds)
        == rewards
    )
    assert len(judge_server.requests) == 2


def test_full_endpoint_url_and_bearer_token(judge_server, monkeypatch):
    monkeypatch.setenv("SEEKRL_TEST_JUDGE_KEY", "s3cret")
    rewards = judge_reward(
        ["<answer>Ulm</answer>"],
        url=judge_server.url + "/chat/completions",
        model="m",
        api_key_env="SEEKRL_TEST_JUDGE_KEY",
        golden_answers=[["Ulm"]],
    )
    assert rewards == [1.0]
    assert judge_server.requests[0]["path"] == "/v1/chat/completions"
    assert judge_server.requests[0]["auth"] == "Bearer s3cret"
    with pytest.raises(ValueError, match="SEEKRL_TEST_JUDGE_UNSET"):
        judge_reward([], url=judge_server.url, model="m", api_key_env="SEEKRL_TEST_JUDGE_UNSET")


@pytest.mark.parametrize("mode", ["http_error", "not_json", "no_choices", "rambling"])
def test_bad_responses_score_none_and_are_not_cached(judge_server, mode):
    judge_server.mode = mode
    metrics = []
    rewards = judge_reward(
        ["<answer>Ulm</answer>", "<answer>Bonn</answer>", "none"],
        url=judge_server.url,
        model="m",
        golden_answers=[["Ulm"]] * 3,
        log_metric=lambda name, value: metrics.append((name, value)),
    )
    assert rewards == [None, None, 0.0]
    assert metrics == [("judge/failures", 2.0)]
    judge_server.mode = "ok"
    assert judge_reward(["<answer>Ulm</answer>"], url=judge_server.url, model="m", golden_answers=[["Ulm"]]) == [1.0]


def test_timeout_scores_none_promptly(judge_server):
    judge_server.mode = "slow"
    start = time.monotonic()
    rewards = judge_reward(
        ["<answer>Ulm</answer>"], url=judge_server.url, model="m", timeout_s=0.3, golden_answers=[["Ulm"]]
    )
    assert rewards == [None]
    assert time.monotonic() - start < 1.4


def test_server_down_scores_none():
    clear_cache()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port any more: the connection is refused.
    rewards = judge_reward(
        ["<answer>Ulm</answer>"], url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=2, golden_answers=[["Ulm"]]
    )
    assert rewards == [None]
