"""Model-judged accuracy for free-form answers, through an OpenAI-compatible chat-completions endpoint.

The judge is the user's own server (vLLM, SGLang, llama.cpp, any `/v1/chat/completions`), given by URL. For
every completion with an answer it sends the question (the `question` column, when the dataset has one), the
gold answers and the extracted answer, asks for one word, "correct" or "incorrect", and scores 1.0 or 0.0.

The server's reply is untrusted input: anything but a well-formed response whose message starts with one of those
words (a `<think>` block before it is skipped) is a failure, and a failure scores None, never a guessed number.
Timeouts, refused connections, HTTP errors, malformed JSON and bodies over 1 MB are failures too; they are
logged (with the `judge/failures` metric when TRL passes `log_metric`) and TRL leaves None out of its means.
A completion without an answer scores 0.0 with no request. Verdicts are cached in memory per (endpoint, model,
question, golds, answer), so the G identical answers of a group cost one request; failures are not cached.

>>> judge_reward([], url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
[]
>>> judge_reward([], url="127.0.0.1:8000", model="judge")
Traceback (most recent call last):
...
ValueError: judge_reward: url must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1), got '127.0.0.1:8000'
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import httpx

from .answers import extract_answer
from .rewards import column_values, gold_lists

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You grade answers to questions. Given a question, its reference answers and a predicted answer, decide "
    "whether the predicted answer means the same as one of the reference answers. Reply with exactly one word: "
    "correct or incorrect."
)
_MAX_RESPONSE_BYTES = 1 << 20
_CACHE_SIZE = 100_000
_VERDICTS = {"correct": 1.0, "incorrect": 0.0}
_THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
_FIRST_WORD = re.compile(r"\s*([A-Za-z]+)")

_cache: OrderedDict[tuple, float] = OrderedDict()
_cache_lock = threading.Lock()


class JudgeError(RuntimeError):
    """One failed judge request; the message says what went wrong."""


def _endpoint(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def user_message(question: str | None, golds: list[str], answer: str) -> str:
    """The user turn sent to the judge.

    >>> print(user_message("Who painted it?", ["Monet"], "Claude Monet"))
    Question: Who painted it?
    Reference answers: ["Monet"]
    Predicted answer: Claude Monet
    Is the predicted answer correct? Reply with one word: correct or incorrect.
    """
    lines = [f"Question: {question}"] if question else []
    lines += [
        f"Reference answers: {json.dumps(golds, ensure_ascii=False)}",
        f"Predicted answer: {answer}",
        "Is the predicted answer correct? Reply with one word: correct or incorrect.",
    ]
    return "\n".join(lines)


def parse_verdict(body: bytes) -> float:
    """1.0 or 0.0 from a chat-completions response body; JudgeError for anything else.

    >>> parse_verdict(b'{"choices": [{"message": {"role": "assistant", "content": "Correct."}}]}')
    1.0
    >>> parse_verdict(b'{"choices": [{"message": {"content": "<think>close enough?</think> incorrect"}}]}')
    0.0
    >>> parse_verdict(b'{"choices": []}')
    Traceback (most recent call last):
    ...
    seekrl.rewards.judge.JudgeError: response has no choices[0].message.content string
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise JudgeError(f"response is not JSON ({err})") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise JudgeError("response has no choices[0].message.content string")
    word = _FIRST_WORD.match(_THINK.sub("", content))
    verdict = word.group(1).lower() if word else ""
    if verdict not in _VERDICTS:
        raise JudgeError(f"verdict is neither 'correct' nor 'incorrect': {content[:80]!r}")
    return _VERDICTS[verdict]


def _ask(client: httpx.Client, endpoint: str, headers: dict, model: str, message: str) -> float:
    payload = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": message}],
        "temperature": 0.0,
        "max_tokens": 16,
    }
    try:
        with client.stream("POST", endpoint, json=payload, headers=headers) as response:
            if response.status_code != 200:
                raise JudgeError(f"HTTP {response.status_code} from {endpoint}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _MAX_RESPONSE_BYTES:
                    raise JudgeError(f"response from {endpoint} is over {_MAX_RESPONSE_BYTES} bytes")
    except httpx.TimeoutException:
        raise JudgeError(f"timed out waiting for {endpoint}") from None
    except httpx.HTTPError as err:
        raise JudgeError(f"cannot reach {endpoint}: {err}") from None
    return parse_verdict(bytes(body))


def judge_reward(
    completions: list,
    *,
    url: str | None = None,
    model: str | None = None,
    api_key_env: str | None = None,
    timeout_s: float = 30.0,
    max_concurrency: int = 8,
    **kwargs,
) -> list[float | None]:
    """Accuracy judged by a chat model: 1.0 correct, 0.0 incorrect or no answer, None when the judge failed.

    `url` is the server's base URL (`http://HOST:PORT/v1`) or the full `.../chat/completions` URL; `model` the
    model name the server expects; `api_key_env` the name of an environment variable holding a bearer token
    (keys do not belong in recipes); `timeout_s` the limit per request; up to `max_concurrency` requests run at
    once. Rows without gold answers get None.
    """
    if not url or not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(
            f"judge_reward: url must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1), got {url!r}"
        )
    if not model or not isinstance(model, str):
        raise ValueError("judge_reward: set args.model to the model name the judge server serves")
    if not timeout_s > 0 or max_concurrency < 1:
        raise ValueError(
            f"judge_reward: timeout_s must be > 0 and max_concurrency >= 1, got {timeout_s} and {max_concurrency}"
        )
    headers = {}
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"judge_reward: environment variable {api_key_env} (args.api_key_env) is not set")
        headers["Authorization"] = f"Bearer {key}"
    n = len(completions)
    golds = gold_lists(kwargs, n, "judge_reward")
    questions = column_values(kwargs, ("question",), n, "judge_reward", "") if "question" in kwargs else [None] * n
    endpoint = _endpoint(url)

    out: list[float | None] = [None] * n
    pending: dict[tuple, list[int]] = {}
    for i, (completion, gold, question) in enumerate(zip(completions, golds, questions, strict=True)):
        if gold is None:
            continue
        answer = extract_answer(completion)
        if answer is None:
            out[i] = 0.0
            continue
        key = (endpoint, model, question, tuple(gold), answer)
        with _cache_lock:
            cached = _cache.get(key)
        if cached is not None:
            out[i] = cached
        else:
            pending.setdefault(key, []).append(i)
    if not pending:
        return out

    failures: list[str] = []
    with httpx.Client(timeout=timeout_s) as client, ThreadPoolExecutor(max_concurrency) as pool:
        futures = {
            key: pool.submit(_ask, client, endpoint, headers, model, user_message(key[2], list(key[3]), key[4]))
            for key in pending
        }
        for key, future in futures.items():
            try:
                verdict = future.result()
            except JudgeError as err:
                failures.append(str(err))
                continue
            with _cache_lock:
                _cache[key] = verdict
                if len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
            for i in pending[key]:
                out[i] = verdict
    if failures:
        logger.warning(
            "judge_reward: %d of %d requests failed (scored None); first: %s", len(failures), len(pending), failures[0]
        )
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("judge/failures", float(len(failures)))
    return out


def clear_cache() -> None:
    """Forget all cached verdicts (e.g. after changing the judge model behind the same URL and name)."""
    with _cache_lock:
        _cache.clear()
