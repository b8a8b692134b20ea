"""`seekrl serve`: a trained agent behind HTTP that searches the retrieval environment when it decides to.

    seekrl serve --model CKPT --retriever http://127.0.0.1:8000 --protocol adasearch
    seekrl serve --model CKPT --retriever INDEX_DIR --api-key KEY --replicas 2 --gpus-per-replica 1

Endpoints:
- `POST /v1/answer` `{question, image?, max_turns?, max_tokens?, return_trajectory?}` -> `{answer, decision,
  num_searches, searches: [{query, results}], tokens, eflops, latency_ms, stop_reason, tool_failures,
  retrieval_failures, warnings, trajectory?}`. `decision` is AdaSearch's assessment (null for other protocols).
- `POST /v1/chat/completions`: OpenAI-compatible, plain or `stream: true` (server-sent events). The question is
  the last user message; the answer is the message content; the searches and the trajectory are in the extra
  field `seekrl`. Decoding is always greedy: sampling fields such as `temperature` are accepted and ignored.
  With `stream: true` the answer arrives in one content chunk once the (batched) rollout is done.
- `GET /health` (open, no key needed) and `GET /metrics` (Prometheus text).

Requests, model outputs and retrieved documents are untrusted. A bad request gets `{"error": message}` with a
4xx and never takes the server down:
- 401 without `Authorization: Bearer KEY` when `--api-key` is set (constant-time comparison);
- 413 for a body over `--max-body-bytes` (counted while reading), a question over `--max-question-chars`, an
  image over `--max-image-bytes`, a prompt that with `max_tokens` would not fit the model's positions;
- 422 for malformed JSON or fields, an empty question, an image that is not base64, `max_turns` / `max_tokens`
  outside [1, the server's limit], `n` > 1, and image questions (they need the Glance-or-Gaze agent);
- 504 when a request runs past `--timeout-s`; the body carries the partial trajectory under `partial`.
A failed search (retrieval server down, slow or erroring) is not an error: the agent gets the search-failed
observation and goes on; the response marks that search `"results": null` and says so in `warnings`.

Dynamic batching: requests wait in a queue; one worker thread takes up to `--max-batch-size` of them (after
waiting at most `--max-wait-ms` for companions) and rolls them out as one `RolloutEngine` batch, so throughput
grows with concurrency instead of queueing. Requests arriving while a batch runs form the next batch.
`--max-batch-size 1` turns batching off.

Setup -> run -> cleanup, top to bottom: `check_options` (every mistake a user can make, before a model loads),
`load_agent` (model, tokenizer, retrieval client), `create_app` (the FastAPI app and its batcher), then uvicorn
(`run_server`) or a Ray Serve deployment with N replicas (`run_ray_serve`); on shutdown the retrieval client
closes, and Ray Serve and a local Ray stop on SIGINT / SIGTERM.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

PROTOCOLS = ("search_r1", "adasearch", "parametric")
ENDPOINTS = ("/v1/answer", "/v1/chat/completions", "/health", "/metrics")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEPLOYMENT_NAME = "seekrl-agent"
# How long past its deadline a request waits for a batch that is stuck outside token generation (in a retrieval
# call): the engine interrupts at the next token, but a search cannot be interrupted.
GRACE_S = 5.0
RETRIEVAL_FAILED = "the retrieval environment did not answer; the agent was shown the search-failed observation"


class ServeError(ValueError):
    """A mistake in how `seekrl serve` was called; the message names the fix."""


@dataclass
class ServeOptions:
    """Everything `seekrl serve` needs. The rollout limits default to `seekrl eval`'s, so a checkpoint answers
    the same question the same way through both."""

    model: str
    retriever: str | None = None
    protocol: str = "search_r1"
    adasearch_mode: str = "adaptive"
    model_name: str | None = None  # the `model` of OpenAI responses; default: the checkpoint's folder name
    # One answer.
    max_turns: int = 4
    max_total_tokens: int = 2048
    max_new_tokens_per_turn: int = 256
    max_obs_tokens: int = 512
    max_query_chars: int = 512
    topk: int = 3
    hardware: str = "h200"
    # One request.
    max_question_chars: int = 4096
    max_image_bytes: int = 5 * 1024 * 1024
    max_body_bytes: int = 8 * 1024 * 1024
    timeout_s: float = 60.0
    # Dynamic batching.
    max_batch_size: int = 16
    max_wait_ms: float = 10.0
    # The retrieval client when --retriever is a URL.
    retriever_api_key: str | None = None
    retriever_timeout_s: float = 10.0
    retriever_retries: int = 1
    # Serving.
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    replicas: int = 0
    gpus_per_replica: float = 0.0
    retriever_replicas: int = 0
    device: str = "auto"
    dtype: str = "auto"


def _is_url(retriever: str | None) -> bool:
    return bool(retriever) and retriever.startswith(("http://", "https://"))


def _uses_tools(options: ServeOptions) -> bool:
    return options.protocol == "search_r1" or (
        options.protocol == "adasearch" and options.adasearch_mode in ("adaptive", "search", "routed"))


# --- setup ------------------------------------------------------------------------------------------------------

def check_options(options: ServeOptions) -> None:
    """Raise ServeError for anything wrong with the options or the retriever, before a model loads."""
    from seekrl.agents.adasearch import MODES

    if options.protocol == "gog":
        raise ServeError("protocol gog needs the Glance-or-Gaze rollout (image search), which seekrl cannot serve "
                         "yet; serve search_r1, adasearch or parametric")
    if options.protocol == "rag":
        raise ServeError("rag is an evaluation baseline (seekrl eval); serve search_r1, adasearch or parametric")
    if options.protocol not in PROTOCOLS:
        raise ServeError(f"unknown protocol {options.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if options.adasearch_mode not in MODES:
        raise ServeError(f"unknown --adasearch-mode {options.adasearch_mode!r}; choose one of {', '.join(MODES)}")
    for name in ("max_turns", "max_total_tokens", "max_new_tokens_per_turn", "max_obs_tokens", "max_query_chars",
                 "topk", "max_question_chars", "max_image_bytes", "max_body_bytes", "max_batch_size"):
        if getattr(options, name) < 1:
            raise ServeError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(options, name)}")
    if options.timeout_s <= 0 or options.max_wait_ms < 0 or options.retriever_timeout_s <= 0:
        raise ServeError("--timeout-s and --retriever-timeout-s must be above 0, --max-wait-ms at least 0")
    if options.replicas < 0 or options.retriever_replicas < 0 or options.retriever_retries < 0:
        raise ServeError("--replicas, --retriever-replicas and --retriever-retries must be at least 0")
    if not 1 <= options.port <= 65535:
        raise ServeError(f"--port must be between 1 and 65535, got {options.port}")
    if not _uses_tools(options):
        return
    if not options.retriever:
        raise ServeError(f"protocol {options.protocol!r} searches: give --retriever URL (a `seekrl retriever "
                         "serve` server) or --retriever INDEX_DIR (`seekrl retriever build`)")
    if options.retriever_replicas:
        if not options.replicas or _is_url(options.retriever):
            raise ServeError("--retriever-replicas deploys an index directory beside the agent on Ray Serve: it "
                             "needs --replicas N and --retriever INDEX_DIR")
    if _is_url(options.retriever):
        from seekrl.envs.client import HTTPClient, ToolError

        with HTTPClient(options.retriever, api_key=options.retriever_api_key, max_retries=0) as client:
            try:
                client.health()
            except ToolError as err:
                raise ServeError(f"{err}; start it with `seekrl retriever serve --index DIR`, or pass "
                                 "--retriever INDEX_DIR to search in-process") from None
        return
    from seekrl.envs.index import IndexDirError, read_manifest

    try:
        read_manifest(options.retriever)
    except IndexDirError as err:
        raise ServeError(str(err)) from None


@dataclass
class Agent:
    """The policy, its tokenizer and the retrieval client (None for protocols that never search)."""

    model: Any
    tokenizer: Any
    client: Any
    name: str

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def open_retriever(options: ServeOptions):
    """HTTPClient for a URL (few retries: a request should not hang on a dead server), else an in-process index."""
    from seekrl.envs.client import HTTPClient, InProcessClient

    if not _uses_tools(options):
        return None
    if _is_url(options.retriever):
        return HTTPClient(options.retriever, api_key=options.retriever_api_key, timeout_s=options.retriever_timeout_s,
                          max_retries=options.retriever_retries, backoff_s=0.2, default_topk=options.topk)
    from seekrl.envs.index import load_index

    return InProcessClient(load_index(options.retriever), default_topk=options.topk)


def load_agent(options: ServeOptions) -> Agent:
    """Load the checkpoint (text models only until Glance-or-Gaze serving lands) and open the retriever."""
    import torch

    from seekrl.models import is_vision_language, load_model, load_tokenizer

    try:
        vision = is_vision_language(options.model)
    except (OSError, ValueError) as err:
        raise ServeError(f"cannot load --model {options.model}: {err}") from None
    if vision:
        raise ServeError(f"{options.model} is a vision-language model; serving it needs the Glance-or-Gaze rollout, "
                         "which seekrl cannot serve yet")
    model = load_model(options.model, dtype=options.dtype)
    device = options.device if options.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    tokenizer = load_tokenizer(options.model)
    name = options.model_name or Path(options.model.rstrip("/")).name or options.model
    return Agent(model, tokenizer, open_retriever(options), name)


# --- dynamic batching -------------------------------------------------------------------------------------------

@dataclass
class Job:
    """One request waiting for, or in, a rollout batch."""

    question: str
    max_turns: int
    max_tokens: int
    deadline: float  # time.monotonic() after which the engine interrupts it
    arrival: float = field(default_factory=time.monotonic)
    future: asyncio.Future | None = None


class DynamicBatcher:
    """Groups concurrent requests into one rollout batch; one batch runs at a time, in a worker thread.

    A batch takes the oldest request and every queued one with the same limits (max_turns, max_tokens), up to
    `max_batch_size`. When the queue holds fewer than that, it first waits up to `max_wait_s` for more, counted
    from when the worker could start (the oldest request's arrival, or the end of the previous batch). Waiting
    after a batch lets the clients it just answered come back in time to join the next one, instead of the load
    settling into two half-size batches that take turns. The event loop stays free meanwhile, so /health,
    /metrics and new requests are served.
    """

    def __init__(self, run: Callable[[list[Job]], list], max_batch_size: int, max_wait_s: float,
                 on_batch: Callable[[int], None] = lambda size: None):
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.queue: list[Job] = []
        self.arrived = asyncio.Event()
        self.draining = False
        self.free_since = 0.0  # time.monotonic() when the last batch ended

    def submit(self, job: Job) -> asyncio.Future:
        """Queue `job`; the future gets its trajectory. Cancelling the future takes the job out of its batch."""
        job.future = asyncio.get_running_loop().create_future()
        self.queue.append(job)
        self.arrived.set()
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return job.future

    def _take(self) -> list[Job]:
        first = self.queue[0]
        taken, rest = [], []
        for job in self.queue:
            same = (job.max_turns, job.max_tokens) == (first.max_turns, first.max_tokens)
            (taken if same and len(taken) < self.max_batch_size else rest).append(job)
        self.queue = rest
        return [job for job in taken if not job.future.done()]  # a cancelled request is not rolled out

    async def _drain(self) -> None:
        import anyio

        try:
            while self.queue:
                while len(self.queue) < self.max_batch_size:
                    ready = max(self.queue[0].arrival, self.free_since)
                    remaining = ready + self.max_wait_s - time.monotonic()
                    if remaining <= 0:
                        break
                    self.arrived.clear()
                    try:
                        await asyncio.wait_for(self.arrived.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                group = self._take()
                if not group:
                    continue
                self.on_batch(len(group))
                try:
                    results = await anyio.to_thread.run_sync(self.run, group)
                except Exception as err:  # a failed batch fails its requests, never the server
                    log.exception("rollout batch of %d failed", len(group))
                    results = [err] * len(group)
                self.free_since = time.monotonic()
                for job, result in zip(group, results, strict=True):
                    if job.future.done():
                        continue
                    if isinstance(result, Exception):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)
        finally:
            self.draining = False


# --- requests, responses, metrics -------------------------------------------------------------------------------

class AnswerRequest(BaseModel):
    """`POST /v1/answer`; strict types, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: str
    image: str | None = None  # base64, or a data: URL
    max_turns: int | None = None
    max_tokens: int | None = None
    return_trajectory: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict] | None = None


class ChatRequest(BaseModel):
    """`POST /v1/chat/completions`; OpenAI clients send sampling fields this greedy agent ignores, so extra
    fields are allowed. `max_turns` is seekrl's own."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage]
    model: str | None = None
    stream: bool = False
    n: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    max_turns: int | None = None


class Rejected(Exception):
    """A request the server refuses: HTTP `status`, a message, and extra fields for the JSON body."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def _error(status: int, message: str, headers: dict | None = None, **extra):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class Metrics:
    """The Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter("seekrl_serve_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("seekrl_serve_request_latency_seconds", "Time to answer, by endpoint", ["endpoint"],
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r)
        self.searches = Counter("seekrl_serve_searches", "Searches the agents made", registry=r)
        self.tool_failures = Counter("seekrl_serve_tool_failures",
                                     "Tool failures: failed searches and invalid actions", registry=r)
        self.retrieval_failures = Counter("seekrl_serve_retrieval_failures",
                                          "Searches the retrieval environment did not answer", registry=r)
        self.timeouts = Counter("seekrl_serve_timeouts", "Requests that ran past --timeout-s", registry=r)
        self.batch_size = Histogram("seekrl_serve_batch_size", "Requests per rollout batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.in_flight = Gauge("seekrl_serve_in_flight", "Requests being answered (queued or in a batch)",
                               registry=r)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _Guard:
    """The retrieval server's ASGI guard (API key -> 401, body size -> 413; seekrl.envs.server.RequestGuard) plus
    the request count and latency of every response, whatever produced it."""

    def __init__(self, app, limit: int, expected_auth: bytes | None, metrics: Metrics):
        from seekrl.envs.server import RequestGuard

        self.app = app
        self.metrics = metrics
        self.guard = RequestGuard(app, limit, expected_auth, message=f"request body larger than {limit} bytes "
                                  "(--max-body-bytes); send a shorter question or image")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status, recorded = 500, False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                # Unknown paths share one label, so a scanner cannot grow the metrics without bound.
                endpoint = scope.get("path") if scope.get("path") in ENDPOINTS else "other"
                self.metrics.requests.labels(endpoint, str(status)).inc()
                self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

        async def counted_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record()  # before the last byte leaves: a client that has its answer sees it counted
            await send(message)

        try:
            await self.guard(scope, receive, counted_send)
        finally:
            record()  # no complete response went out (an exception): uvicorn answers 500


def decode_image(image: str, max_bytes: int) -> bytes:
    """The bytes of a base64 image (or a data: URL); 413 over `max_bytes` (checked before decoding), 422 if bad."""
    if image.startswith("data:"):
        header, _, image = image.partition(",")
        if ";base64" not in header:
            raise Rejected(422, "image data: URL must be base64 (data:image/png;base64,...)")
    image = image.strip()
    padding = len(image) - len(image.rstrip("="))
    if len(image) * 3 // 4 - padding > max_bytes:
        raise Rejected(413, f"image larger than {max_bytes} bytes (--max-image-bytes)")
    try:
        data = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(422, "image is not valid base64") from None
    if not data:
        raise Rejected(422, "image is empty")
    return data


def answer_body(traj, start: float, with_trajectory: bool) -> dict:
    """The /v1/answer response for one trajectory (also the `seekrl` field of chat completions)."""
    failed = sum(r is None for r in traj.search_results)
    searches = [{"query": q, "results": r} if r is not None else {"query": q, "results": None,
                                                                     "error": RETRIEVAL_FAILED}
                for q, r in zip(traj.searches, traj.search_results, strict=True)]
    generated = traj.num_generated
    body = {
        "answer": traj.answer, "decision": traj.decision, "num_searches": traj.num_searches, "searches": searches,
        "stop_reason": traj.stop_reason, "tool_failures": traj.tool_failures, "retrieval_failures": failed,
        "warnings": [f"{failed} of {len(searches)} searches failed: {RETRIEVAL_FAILED}; the answer was given "
                     "without their results"] if failed else [],
        "tokens": {"prompt": len(traj.prompt_ids), "generated": generated,
                   "observation": len(traj.completion_ids) - generated},
        "eflops": traj.eflops, "latency_ms": round(1000 * (time.monotonic() - start), 2),
    }
    if with_trajectory:
        body["trajectory"] = {"text": traj.text, "num_turns": traj.num_turns, "truncated": traj.truncated,
                              "turn_tokens": [list(t) for t in traj.turn_tokens]}
    return body


def chat_question(messages: list[ChatMessage]) -> tuple[str, str | None]:
    """(question, image) of an OpenAI chat: the last user message; text parts joined, one image_url data: URL."""
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise Rejected(422, "messages has no user message: the question is the last message with role 'user'")
    content = users[-1].content
    if content is None or isinstance(content, str):
        return content or "", None
    texts, images = [], []
    for part in content:
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict | str):
            url = part["image_url"].get("url") if isinstance(part["image_url"], dict) else part["image_url"]
            if not isinstance(url, str) or not url.startswith("data:"):
                raise Rejected(422, "image_url must be a base64 data: URL; the server does not fetch URLs")
            images.append(url)
        else:
            raise Rejected(422, f"unsupported content part {str(kind)[:40]!r}; use 'text' and 'image_url' parts")
    if len(images) > 1:
        raise Rejected(422, f"{len(images)} images in one question; at most 1 is allowed")
    return "\n".join(texts), (images[0] if images else None)


def completion(body: dict, name: str, completion_id: str, created: int) -> dict:
    """An OpenAI `chat.completion` whose message is the answer; the rest of `body` goes into `seekrl`."""
    tokens = body["tokens"]
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": body["answer"] or ""},
                     "finish_reason": _finish_reason(body), "logprobs": None}],
        "usage": {"prompt_tokens": tokens["prompt"], "completion_tokens": tokens["generated"],
                  "total_tokens": tokens["prompt"] + tokens["generated"]},
        "seekrl": body,
    }


def _finish_reason(body: dict) -> str:
    return "length" if body["stop_reason"] == "length" else "stop"


def completion_chunks(body: dict, name: str, completion_id: str, created: int):
    """Server-sent events of a streamed completion: role, the answer, the finish (with `seekrl`), [DONE]."""
    def event(delta: dict, finish: str | None, **extra) -> str:
        chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": name,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""}, None)
    if body["answer"]:
        yield event({"content": body["answer"]}, None)
    yield event({}, _finish_reason(body), seekrl=body)
    yield "data: [DONE]\n\n"


# --- the app ----------------------------------------------------------------------------------------------------

def create_app(options: ServeOptions, agent: Agent | None = None):
    """The FastAPI app answering with `agent` (loaded from `options` when not given: each Ray Serve replica
    loads its own)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from seekrl.agents import make_protocol
    from seekrl.agents.rollout import RolloutConfig
    from seekrl.agents.routed import make_engine

    agent = agent or load_agent(options)
    metrics = Metrics()
    engines: dict[tuple[int, int], Any] = {}

    def engine_for(max_turns: int, max_tokens: int):
        if (max_turns, max_tokens) not in engines:
            config = RolloutConfig(
                max_new_tokens_per_turn=options.max_new_tokens_per_turn, max_total_tokens=max_tokens,
                max_obs_tokens=options.max_obs_tokens, temperature=0.0, topk=options.topk,
                max_batch_size=options.max_batch_size, hardware=options.hardware)
            protocol = make_protocol(options.protocol, max_turns, options.max_query_chars, options.adasearch_mode)
            engines[max_turns, max_tokens] = make_engine(agent.model, agent.tokenizer, protocol, agent.client, config)
        return engines[max_turns, max_tokens]

    def run_batch(jobs: list[Job]) -> list:
        """One rollout for a batch of jobs with the same limits, in the batcher's worker thread (the only thread
        that tokenizes: a fast tokenizer must not be used by two threads at once). Per job: its trajectory, or
        the Rejected of a prompt too long for the model, which leaves the rest of the batch unharmed."""
        engine = engine_for(jobs[0].max_turns, jobs[0].max_tokens)
        positions = getattr(agent.model.config, "max_position_embeddings", None)
        results: list = [None] * len(jobs)
        prompts, rows = [], []
        for i, job in enumerate(jobs):
            ids = engine.render_prompt(job.question)
            if positions and len(ids) + job.max_tokens > positions:
                results[i] = Rejected(413, f"the prompt is {len(ids)} tokens; with max_tokens {job.max_tokens} it "
                                           f"exceeds the model's {positions} positions: ask a shorter question or "
                                           "lower max_tokens")
            else:
                prompts.append(ids)
                rows.append(i)

        def interrupt(k: int) -> bool:
            # Past its deadline, or given up on by its handler (a plain attribute read of the asyncio future).
            job = jobs[rows[k]]
            return time.monotonic() >= job.deadline or job.future.cancelled()

        for i, traj in zip(rows, engine.run_ids(prompts, interrupt=interrupt) if prompts else [], strict=True):
            results[i] = traj
            metrics.searches.inc(traj.num_searches)
            metrics.tool_failures.inc(traj.tool_failures)
            metrics.retrieval_failures.inc(sum(r is None for r in traj.search_results))
        return results

    batcher = DynamicBatcher(run_batch, options.max_batch_size, options.max_wait_ms / 1000,
                             on_batch=metrics.batch_size.observe)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        agent.close()

    app = FastAPI(title="seekrl agent server", description="An adaptive search agent over HTTP", docs_url=None,
                  redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request, exc: RequestValidationError):
        # The message names each bad field; input values are not echoed (they may be megabytes long).
        problems = []
        for err in exc.errors()[:10]:
            where = ".".join(str(part) for part in err.get("loc", ()) if part != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        more = f" (+{len(exc.errors()) - 10} more)" if len(exc.errors()) > 10 else ""
        return _error(422, "invalid request: " + "; ".join(problems) + more)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Rejected)
    async def rejected(_request, exc: Rejected):
        return _error(exc.status, exc.message, **exc.extra)

    async def solve(question: str, image: str | None, max_turns: int | None, max_tokens: int | None,
                    start: float):
        """Check one question against the limits, roll it out in the next batch and return its trajectory."""
        if not question.strip():
            raise Rejected(422, "question is empty")
        if len(question) > options.max_question_chars:
            raise Rejected(413, f"question is {len(question)} characters; the limit is {options.max_question_chars} "
                                "(--max-question-chars)")
        if image is not None:
            decode_image(image, options.max_image_bytes)
            raise Rejected(422, f"image questions need a Glance-or-Gaze (gog) model; this server runs protocol "
                                f"{options.protocol!r}, which answers text questions only")
        turns = options.max_turns if max_turns is None else max_turns
        if not 1 <= turns <= options.max_turns:
            raise Rejected(422, f"max_turns must be between 1 and {options.max_turns} (the server's --max-turns), "
                                f"got {turns}")
        tokens = options.max_total_tokens if max_tokens is None else max_tokens
        if not 1 <= tokens <= options.max_total_tokens:
            raise Rejected(422, f"max_tokens must be between 1 and {options.max_total_tokens} (the server's "
                                f"--max-total-tokens), got {tokens}")
        # A question cannot smuggle chat-template special tokens (<|im_start|>, ...) into the prompt.
        job = Job(question.replace("<|", "&lt;|"), turns, tokens, deadline=start + options.timeout_s, arrival=start)
        metrics.in_flight.inc()
        try:
            # On timeout (or a cancelled handler) wait_for cancels the future, which takes the job out of its batch.
            traj = await asyncio.wait_for(batcher.submit(job), options.timeout_s + GRACE_S)
        except asyncio.TimeoutError:
            metrics.timeouts.inc()
            raise Rejected(504, f"no answer within {options.timeout_s:g} s (--timeout-s); the request was still "
                                "waiting for a batch or inside a retrieval call, so there is no partial "
                                "trajectory") from None
        except Rejected:
            raise
        except Exception as err:
            raise Rejected(500, f"internal error while answering: {type(err).__name__}: {err}") from None
        finally:
            metrics.in_flight.dec()
        if traj.stop_reason == "interrupted":
            metrics.timeouts.inc()
            raise Rejected(504, f"no answer within {options.timeout_s:g} s (--timeout-s); the partial trajectory is "
                                "in 'partial'", partial=answer_body(traj, start, with_trajectory=True))
        return traj

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": agent.name, "protocol": options.protocol,
                "retriever": options.retriever if _uses_tools(options) else None, "queued": len(batcher.queue)}

    @app.get("/metrics")
    async def metrics_endpoint():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/answer")
    async def answer(body: AnswerRequest):
        start = time.monotonic()
        traj = await solve(body.question, body.image, body.max_turns, body.max_tokens, start)
        return JSONResponse(answer_body(traj, start, body.return_trajectory))

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        start = time.monotonic()
        if body.n not in (None, 1):
            raise Rejected(422, f"n={body.n}: this agent returns one answer per request (n=1)")
        question, image = chat_question(body.messages)
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        traj = await solve(question, image, body.max_turns, max_tokens, start)
        result = answer_body(traj, start, with_trajectory=True)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return StreamingResponse(completion_chunks(result, agent.name, completion_id, created),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return JSONResponse(completion(result, agent.name, completion_id, created))

    expected = f"Bearer {options.api_key}".encode() if options.api_key else None
    app.add_middleware(_Guard, limit=options.max_body_bytes, expected_auth=expected, metrics=metrics)
    return app


# --- run --------------------------------------------------------------------------------------------------------

def run_server(options: ServeOptions) -> None:
    """One uvicorn process until Ctrl-C."""
    import uvicorn

    app = create_app(options)
    typer.echo(f"serving {options.model} ({options.protocol}) on http://{options.host}:{options.port} "
               "(POST /v1/answer, POST /v1/chat/completions, GET /health, GET /metrics)", err=True)
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning", access_log=False)


def agent_deployment(options: ServeOptions):
    """The app as a bound Ray Serve deployment with `options.replicas` replicas, each loading its own model."""
    from ray import serve

    def build_app():
        return create_app(options)

    # Ray Serve's default of 5 requests in flight per replica would cap every batch at 5.
    deployment = serve.deployment(
        serve.ingress(build_app)(), name=DEPLOYMENT_NAME, num_replicas=options.replicas,
        max_ongoing_requests=4 * options.max_batch_size,
        ray_actor_options={"num_cpus": 1, "num_gpus": options.gpus_per_replica})
    return deployment.bind()


def start_ray_serve(options: ServeOptions):
    """Start Ray Serve (local Ray unless RAY_ADDRESS names a cluster) and deploy; returns when replicas are up.

    With --retriever-replicas M the index directory is deployed first as its own application (the retrieval
    server of `seekrl retriever serve`) under /retriever, and the agents search it through Ray Serve's proxy.
    """
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": options.host, "port": options.port})
    if options.retriever_replicas:
        from seekrl.envs.serve_ray import DEPLOYMENT_NAME as RETRIEVER_NAME
        from seekrl.envs.serve_ray import retriever_deployment

        key = options.retriever_api_key or options.api_key
        serve.run(retriever_deployment(options.retriever, options.retriever_replicas, api_key=key),
                  name=RETRIEVER_NAME, route_prefix="/retriever")
        local = "127.0.0.1" if options.host in ("0.0.0.0", "::", "localhost") else options.host
        local = f"[{local}]" if ":" in local else local
        options = dataclasses.replace(options, retriever=f"http://{local}:{options.port}/retriever",
                                      retriever_api_key=key, retriever_replicas=0)
    return serve.run(agent_deployment(options), name=DEPLOYMENT_NAME, route_prefix="/")


def run_ray_serve(options: ServeOptions) -> None:
    """Serve until SIGINT or SIGTERM, then shut Serve and the local Ray down."""
    import signal
    import threading

    import ray
    from ray import serve

    start_ray_serve(options)
    typer.echo(f"serving {options.model} with {options.replicas} Ray Serve replicas on "
               f"http://{options.host}:{options.port}", err=True)
    stop = threading.Event()
    # Our own handlers, installed after ray.init: a plain KeyboardInterrupt does not reliably reach this loop.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    serve.shutdown()
    ray.shutdown()


# --- the command ------------------------------------------------------------------------------------------------

def serve_command(
    model: Annotated[str, typer.Option(
        help="Checkpoint directory or Hub id of a trained agent (seekrl-tiny-searcher: the tiny offline one).",
        rich_help_panel="Agent")],
    retriever: Annotated[str | None, typer.Option(
        help="http(s) URL of a /retrieve server (seekrl retriever serve, also on Ray Serve) or an index directory "
             "(seekrl retriever build) searched in-process. Not needed by --protocol parametric.",
        rich_help_panel="Agent")] = None,
    protocol: Annotated[str, typer.Option(
        help="search_r1 | adasearch | parametric (answers without searching). The one the checkpoint was "
             "trained with.", rich_help_panel="Agent")] = "search_r1",
    adasearch_mode: Annotated[str, typer.Option(
        help="AdaSearch only: adaptive (decide, then answer or search in one trajectory) | routed (decide, then "
             "the parametric or search prompt, as the stages train it) | search | parametric | decide.",
        rich_help_panel="Agent")] = "adaptive",
    host: Annotated[str, typer.Option(
        help="Interface to bind; 127.0.0.1 keeps the server on this machine. Anything else should come with "
             "--api-key.", rich_help_panel="Server")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", rich_help_panel="Server")] = 8080,
    api_key: Annotated[str | None, typer.Option(
        envvar="SEEKRL_API_KEY", help="Require 'Authorization: Bearer KEY' on every request but GET /health "
        "(or set SEEKRL_API_KEY).", rich_help_panel="Server")] = None,
    replicas: Annotated[int, typer.Option(
        help="0: one uvicorn process; N >= 1: a Ray Serve deployment with N replicas behind Ray Serve's HTTP proxy "
             "(local Ray unless RAY_ADDRESS names a cluster).", rich_help_panel="Scale-out")] = 0,
    gpus_per_replica: Annotated[float, typer.Option(
        help="GPUs per Ray Serve replica (1 on a GPU cluster: one replica per GPU).",
        rich_help_panel="Scale-out")] = 0.0,
    retriever_replicas: Annotated[int, typer.Option(
        help="With --replicas and --retriever INDEX_DIR: deploy the index as its own Ray Serve application with "
             "this many replicas (under /retriever) instead of a copy inside every agent replica.",
        rich_help_panel="Scale-out")] = 0,
    max_batch_size: Annotated[int, typer.Option(
        help="Most requests rolled out together in one batch; 1 turns dynamic batching off.",
        rich_help_panel="Batching")] = 16,
    max_wait_ms: Annotated[float, typer.Option(
        help="How long the first request of an idle server waits for others to batch with.",
        rich_help_panel="Batching")] = 10.0,
    max_turns: Annotated[int, typer.Option(
        help="Tool calls per question; a request may ask for fewer.", rich_help_panel="Limits")] = 4,
    max_total_tokens: Annotated[int, typer.Option(
        help="Completion tokens per question (generated + retrieved); a request's max_tokens may ask for fewer.",
        rich_help_panel="Limits")] = 2048,
    max_new_tokens_per_turn: Annotated[int, typer.Option(
        help="Tokens per turn before an action must close.", rich_help_panel="Limits")] = 256,
    max_obs_tokens: Annotated[int, typer.Option(
        help="Tokens of retrieved text shown per search.", rich_help_panel="Limits")] = 512,
    topk: Annotated[int, typer.Option(help="Passages per search.", rich_help_panel="Limits")] = 3,
    max_question_chars: Annotated[int, typer.Option(
        help="Longer questions get 413.", rich_help_panel="Limits")] = 4096,
    max_image_bytes: Annotated[int, typer.Option(
        help="Larger images (decoded) get 413.", rich_help_panel="Limits")] = 5 * 1024 * 1024,
    max_body_bytes: Annotated[int, typer.Option(
        help="Larger request bodies get 413.", rich_help_panel="Limits")] = 8 * 1024 * 1024,
    timeout_s: Annotated[float, typer.Option(
        help="Per-request deadline; past it the answer is 504 with the partial trajectory.",
        rich_help_panel="Limits")] = 60.0,
    retriever_api_key: Annotated[str | None, typer.Option(
        envvar="SEEKRL_RETRIEVER_API_KEY", help="Bearer key of the retrieval server.",
        rich_help_panel="Retrieval")] = None,
    retriever_timeout_s: Annotated[float, typer.Option(
        help="Timeout of one call to a retrieval URL.", rich_help_panel="Retrieval")] = 10.0,
    retriever_retries: Annotated[int, typer.Option(
        help="Retries of a failed retrieval call before the agent is told the search failed.",
        rich_help_panel="Retrieval")] = 1,
    hardware: Annotated[str, typer.Option(
        help="Kinetics hardware profile for the reported eFLOPs: b200, h100, h200, a100, cpu.",
        rich_help_panel="Agent")] = "h200",
    device: Annotated[str, typer.Option(help="auto (cuda when present), cpu or cuda.",
                                        rich_help_panel="Agent")] = "auto",
) -> None:
    """Serve a trained agent over HTTP: POST /v1/answer, OpenAI-compatible POST /v1/chat/completions (with
    streaming), GET /health and GET /metrics (Prometheus).

    Concurrent requests are rolled out together (dynamic batching); decoding is greedy.
    A failed search does not fail the request: the agent is told, goes on, and the response says so.
    Every limit answers 413/422 with a message; past --timeout-s a request gets 504 with its partial trajectory.
    """
    options = ServeOptions(
        model=model, retriever=retriever, protocol=protocol, adasearch_mode=adasearch_mode, host=host, port=port,
        api_key=api_key, replicas=replicas, gpus_per_replica=gpus_per_replica, retriever_replicas=retriever_replicas,
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_turns=max_turns,
        max_total_tokens=max_total_tokens, max_new_tokens_per_turn=max_new_tokens_per_turn,
        max_obs_tokens=max_obs_tokens, topk=topk, max_question_chars=max_question_chars,
        max_image_bytes=max_image_bytes, max_body_bytes=max_body_bytes, timeout_s=timeout_s,
        retriever_api_key=retriever_api_key, retriever_timeout_s=retriever_timeout_s,
        retriever_retries=retriever_retries, hardware=hardware, device=device)
    try:
        check_options(options)
        if options.retriever and not _uses_tools(options):
            typer.echo(f"warning: protocol {protocol!r} does not search; --retriever is not used", err=True)
        if host not in LOOPBACK and not api_key:
            typer.echo(f"warning: serving on {host} without --api-key; anyone who can reach it can use it", err=True)
        if replicas:
            run_ray_serve(options)
        else:
            run_server(options)
    except ServeError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
