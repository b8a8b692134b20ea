"""The retrieval server: a FastAPI app whose `POST /retrieve` is exactly Search-R1's retrieval API.

Request  `{"queries": [str], "topk": int | null, "return_scores": bool}` (topk null = the server default)
Response `{"result": [[{"document": {"id", "contents"}, "score": float}, ...] per query]}`, or with
         return_scores false, each inner item is the document itself.

Requests are untrusted input, and a bad one must never take the server down or produce a 5xx:
- unknown fields, wrong JSON types (strict: no "3" for 3) and non-JSON bodies -> 422 with a message;
- topk <= 0 or above `max_topk`, more than `max_queries` queries -> 422;
- a body larger than `max_body_bytes` -> 413 (checked while reading, so a lying Content-Length does not help);
- a missing/wrong bearer token when `api_key` is set -> 401 (constant-time comparison);
- bounded behaviours: queries longer than `max_query_chars` are cut to that length (header
  `X-Truncated-Queries` counts them), a blank query gets an empty result list, an empty query list an empty result.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from seekrl.envs.batcher import MicroBatcher
from seekrl.envs.index import Searcher

DEFAULT_TOPK = 3
MAX_TOPK = 100
MAX_QUERIES = 1024
MAX_QUERY_CHARS = 4096
MAX_BODY_BYTES = 8 * 1024 * 1024


class RetrieveRequest(BaseModel):
    """Search-R1's request schema; strict types and no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    queries: list[str]
    topk: int | None = None
    return_scores: bool = False


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Guard:
    """ASGI middleware in front of the app: the API key (401) and the body size limit (413).

    Pure ASGI rather than @app.middleware("http"): exceptions raised while FastAPI reads the body must reach
    its HTTPException handling unchanged, which Starlette's BaseHTTPMiddleware does not guarantee.
    """

    def __init__(self, app, limit: int, expected_auth: bytes | None):
        self.app = app
        self.limit = limit
        self.expected_auth = expected_auth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.expected_auth is not None and scope.get("path") != "/health":
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected_auth):
                response = _error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                  {"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _error(413, self.message)(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # FastAPI re-raises HTTPException from body reading, so this reaches the JSON error handler.
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited_receive, send)

    @property
    def message(self) -> str:
        return f"request body larger than {self.limit} bytes; send fewer or shorter queries"


def create_app(index: Searcher | Callable[[], Searcher], api_key: str | None = None,
               default_topk: int = DEFAULT_TOPK, max_topk: int = MAX_TOPK, max_queries: int = MAX_QUERIES,
               max_query_chars: int = MAX_QUERY_CHARS, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The app serving `index`; pass a zero-argument loader instead to open the index on first use
    (each Ray Serve replica then loads its own copy in its own process)."""
    if not 1 <= default_topk <= max_topk:
        raise ValueError(f"default_topk must be in [1, max_topk={max_topk}], got {default_topk}")
    loader = index if callable(index) and not hasattr(index, "search") else (lambda: index)
    lock = threading.Lock()
    loaded: list[Searcher] = []

    def get_index() -> Searcher:
        if not loaded:
            with lock:
                if not loaded:
                    loaded.append(loader())
        return loaded[0]

    app = FastAPI(title="seekrl retrieval server", description="Search-R1-compatible /retrieve", docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.get_index = get_index
    # One search at a time (searches are CPU-bound and mostly hold the GIL, so parallel threads only contend),
    # with the requests that queue up meanwhile merged into the next search.
    batcher = MicroBatcher(get_index, max_batch_queries=max_queries)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError):
        # The message names each bad field; input values are not echoed (they may be 100 KB long).
        problems = []
        for err in exc.errors()[:10]:
            where = ".".join(str(part) for part in err.get("loc", ()) if part != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        more = f" (+{len(exc.errors()) - 10} more)" if len(exc.errors()) > 10 else ""
        return _error(422, "invalid request: " + "; ".join(problems) + more)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.get("/health")
    async def health():
        searcher = get_index()
        return {"status": "ok", "kind": searcher.kind, "num_docs": len(searcher.store)}

    @app.post("/retrieve")
    async def retrieve_endpoint(body: RetrieveRequest):
        topk = default_topk if body.topk is None else body.topk
        if not 1 <= topk <= max_topk:
            return _error(422, f"topk must be between 1 and {max_topk}, got {topk}")
        if len(body.queries) > max_queries:
            return _error(422, f"{len(body.queries)} queries in one request; at most {max_queries} are allowed")
        queries = [q[:max_query_chars] for q in body.queries]
        truncated = sum(len(q) > max_query_chars for q in body.queries)
        # The search runs off the event loop so /health and other connections stay responsive meanwhile.
        result = await batcher.search(queries, topk)
        if not body.return_scores:
            result = [[item["document"] for item in per_query] for per_query in result]
        payload = json.dumps({"result": result}, ensure_ascii=False).encode("utf-8")
        headers = {"X-Truncated-Queries": str(truncated)} if truncated else None
        return Response(payload, media_type="application/json", headers=headers)

    app.add_middleware(_Guard, limit=max_body_bytes, expected_auth=f"Bearer {api_key}".encode() if api_key else None)
    return app
