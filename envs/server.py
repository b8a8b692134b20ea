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

With an image knowledge base (seekrl.envs.image_kb) the server also answers `POST /image_search`:
Request  `{"image": base64 | null, "image_id": str | null, "bbox": [x1, y1, x2, y2] | null, "topk": int | null}`:
         exactly one of `image` (a base64 image file, or a `data:image/...;base64,` URL) and `image_id` (a KB
         entry's id); `bbox` (0-1000 coordinates relative to the image) crops before searching (a gaze),
         none searches the whole image (a glance).
Response `{"result": [{"id", "title", "caption", "score"}, ...]}`, best first.
The same rules: strict schema -> 422; image larger than `max_image_bytes` decoded, or than `max_image_pixels`
-> 413; invalid base64, an undecodable image, a bbox out of range (not 0 <= x1 < x2 <= 1000, 0 <= y1 < y2 <= 1000)
or an unknown image id -> 422. A server started on an image index alone answers /retrieve with 404, and one
without an image index answers /image_search with 404.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable

import anyio
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
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # decoded; base64 adds a third, so it fits in MAX_BODY_BYTES
MAX_IMAGE_PIXELS = 40_000_000


class RetrieveRequest(BaseModel):
    """Search-R1's request schema; strict types and no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    queries: list[str]
    topk: int | None = None
    return_scores: bool = False


class ImageSearchRequest(BaseModel):
    """`/image_search`: a base64 image or a KB image id, an optional 0-1000 bbox; strict types, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image: str | None = None
    image_id: str | None = None
    bbox: list[float] | None = None
    topk: int | None = None


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class RequestGuard:
    """ASGI middleware in front of the app: the API key (401) and the body size limit (413); seekrl serve wraps it.

    Pure ASGI rather than @app.middleware("http"): exceptions raised while FastAPI reads the body must reach
    its HTTPException handling unchanged, which Starlette's BaseHTTPMiddleware does not guarantee.
    """

    def __init__(self, app, limit: int, expected_auth: bytes | None, message: str | None = None):
        self.app = app
        self.limit = limit
        self.expected_auth = expected_auth
        self.message = message or f"request body larger than {limit} bytes; send fewer or shorter queries"

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


def create_app(index: Searcher | Callable[[], Searcher] | None, api_key: str | None = None,
               default_topk: int = DEFAULT_TOPK, max_topk: int = MAX_TOPK, max_queries: int = MAX_QUERIES,
               max_query_chars: int = MAX_QUERY_CHARS, max_body_bytes: int = MAX_BODY_BYTES,
               image_kb=None, max_image_bytes: int = MAX_IMAGE_BYTES,
               max_image_pixels: int = MAX_IMAGE_PIXELS) -> FastAPI:
    """The app serving `index`; pass a zero-argument loader instead to open the index on first use
    (each Ray Serve replica then loads its own copy in its own process). `image_kb` (a seekrl.envs.image_kb
    ImageKB) adds `POST /image_search`; `index` may then be None for an image-only server."""
    if not 1 <= default_topk <= max_topk:
        raise ValueError(f"default_topk must be in [1, max_topk={max_topk}], got {default_topk}")
    if index is None and image_kb is None:
        raise ValueError("nothing to serve: give a text index, an image_kb, or both")
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
        if searcher is None:
            return {"status": "ok", "kind": image_kb.kind, "num_images": len(image_kb),
                    "encoder": image_kb.encoder.name}
        status = {"status": "ok", "kind": searcher.kind, "num_docs": len(searcher.store)}
        if image_kb is not None:
            status["image"] = {"num_images": len(image_kb), "encoder": image_kb.encoder.name}
        return status

    # Image searches decode, crop and encode on the CPU: one at a time, off the event loop.
    image_limiter = anyio.CapacityLimiter(1)

    def image_search(body: ImageSearchRequest, topk: int) -> list[dict]:
        from seekrl.envs.image_kb import ImageInputError, check_bbox, crop, decode_base64_image

        if body.image is not None:
            image = decode_base64_image(body.image, max_image_bytes, max_image_pixels)
        else:
            try:
                image = image_kb.image(body.image_id)
            except KeyError:
                raise ImageInputError(f"unknown image_id {body.image_id[:100]!r}; send an id of the image index "
                                      "or the image itself") from None
        if body.bbox is not None:
            image = crop(image, check_bbox(body.bbox))
        return image_kb.search([image], topk)[0]

    @app.post("/image_search")
    async def image_search_endpoint(body: ImageSearchRequest):
        from seekrl.envs.image_kb import ImageInputError

        if image_kb is None:
            return _error(404, "this server has no image index; serve one built with "
                               "`seekrl retriever build --kind image`")
        topk = default_topk if body.topk is None else body.topk
        if not 1 <= topk <= max_topk:
            return _error(422, f"topk must be between 1 and {max_topk}, got {topk}")
        if (body.image is None) == (body.image_id is None):
            return _error(422, "send exactly one of 'image' (base64) and 'image_id'")
        try:
            result = await anyio.to_thread.run_sync(image_search, body, topk, limiter=image_limiter)
        except ImageInputError as err:
            return _error(err.status, str(err))
        return {"result": result}

    @app.post("/retrieve")
    async def retrieve_endpoint(body: RetrieveRequest):
        if get_index() is None:
            return _error(404, "this server has no text index (it serves an image index: POST /image_search)")
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

    app.add_middleware(RequestGuard, limit=max_body_bytes,
                       expected_auth=f"Bearer {api_key}".encode() if api_key else None)
    return app
