"""Retrieval clients with one interface: `search(queries, topk) -> list[list[dict]]` of `{id, contents}` documents.

- `InProcessClient` searches an index object in this process (no serialisation, no network).
- `HTTPClient` talks to any Search-R1-compatible `/retrieve` server over pooled keep-alive connections, with a
  per-request timeout and retries with exponential backoff for transient failures (connection refused or reset,
  timeout, 429, 5xx). Client errors (4xx) are not retried: resending the same bad request cannot succeed.
- Image search (Glance-or-Gaze): `image_search(images, topk, bboxes) -> list[list[dict]]` of `{id, title, caption,
  score}` entries, on `InProcessImageClient` (an ImageKB in this process) and on `HTTPClient` (`POST /image_search`,
  one request per image, PNG-encoded so the server searches exactly the same pixels).

Every failure is raised as `ToolError`, which the rollout turns into a tool-failure observation: a flaky or dead
retrieval server costs a trajectory its search, never the training run.
"""

from __future__ import annotations

import base64
import random
import time
from typing import Protocol

from seekrl.envs.index import Searcher, retrieve


class ToolError(RuntimeError):
    """A search that failed. `kind`: unavailable | timeout | http | invalid_request | auth | bad_response | index."""

    def __init__(self, message: str, kind: str, status: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status


class RetrievalClient(Protocol):
    def search(self, queries: list[str], topk: int | None = None) -> list[list[dict]]: ...

    def close(self) -> None: ...


class InProcessClient:
    """Searches an index object directly."""

    def __init__(self, index: Searcher, default_topk: int = 3):
        self.index = index
        self.default_topk = default_topk

    def search(self, queries: list[str], topk: int | None = None) -> list[list[dict]]:
        topk = self.default_topk if topk is None else topk
        if topk < 1:
            raise ToolError(f"topk must be at least 1, got {topk}", "invalid_request")
        try:
            return retrieve(self.index, list(queries), topk)
        except Exception as err:  # any index failure is a failed tool call, not a crashed rollout
            raise ToolError(f"in-process search failed: {type(err).__name__}: {err}", "index") from err

    def close(self) -> None:
        pass


def _validate_result(payload, num_queries: int) -> list[list[dict]]:
    """Check a /retrieve response (untrusted) and return its documents."""
    if not isinstance(payload, dict) or not isinstance(payload.get("result"), list):
        raise ToolError("retrieval server answered without a 'result' list", "bad_response")
    result = payload["result"]
    if len(result) != num_queries:
        raise ToolError(f"retrieval server returned {len(result)} result lists for {num_queries} queries",
                        "bad_response")
    docs: list[list[dict]] = []
    for per_query in result:
        if not isinstance(per_query, list):
            raise ToolError("retrieval server returned a result that is not a list", "bad_response")
        items = []
        for item in per_query:
            doc = item.get("document", item) if isinstance(item, dict) else None
            if not isinstance(doc, dict) or not isinstance(doc.get("contents"), str):
                raise ToolError("retrieval server returned a document without string 'contents'", "bad_response")
            items.append({"id": str(doc.get("id", "")), "contents": doc["contents"]})
        docs.append(items)
    return docs


def _validate_image_result(payload) -> list[dict]:
    """Check an /image_search response (untrusted) and return its entries."""
    result = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(result, list):
        raise ToolError("image search answered without a 'result' list", "bad_response")
    entries = []
    for item in result:
        if (not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("id", "title", "caption"))
                or not isinstance(item.get("score"), (int, float)) or isinstance(item.get("score"), bool)):
            raise ToolError("image search returned an entry without string id/title/caption and a numeric score",
                            "bad_response")
        entries.append({"id": item["id"], "title": item["title"], "caption": item["caption"],
                        "score": float(item["score"])})
    return entries


class InProcessImageClient:
    """Searches an image knowledge base (seekrl.envs.image_kb.ImageKB) in this process; same methods as the
    image half of `HTTPClient`, and the same rules for bboxes (strict 0-1000, else ToolError)."""

    def __init__(self, kb, default_topk: int = 3):
        self.kb = kb
        self.default_topk = default_topk

    def image_search(self, images: list, topk: int | None = None, bboxes: list | None = None) -> list[list[dict]]:
        from seekrl.envs.image_kb import ImageInputError, as_rgb, check_bbox, crop

        topk = self.default_topk if topk is None else topk
        if topk < 1:
            raise ToolError(f"topk must be at least 1, got {topk}", "invalid_request")
        if bboxes is not None and len(bboxes) != len(images):
            raise ToolError(f"{len(bboxes)} bboxes for {len(images)} images", "invalid_request")
        try:
            queries = [as_rgb(image) for image in images]
            if bboxes is not None:
                queries = [image if box is None else crop(image, check_bbox(box)) for image, box in zip(queries, bboxes)]
            return self.kb.search(queries, topk)
        except ImageInputError as err:
            raise ToolError(f"image search rejected: {err}", "invalid_request") from err
        except Exception as err:  # any index failure is a failed tool call, not a crashed rollout
            raise ToolError(f"in-process image search failed: {type(err).__name__}: {err}", "index") from err

    def image_search_by_id(self, image_ids: list[str], topk: int | None = None,
                           bboxes: list | None = None) -> list[list[dict]]:
        try:
            images = [self.kb.image(str(i)) for i in image_ids]
        except KeyError as err:
            raise ToolError(f"unknown image_id {err}", "invalid_request") from None
        return self.image_search(images, topk, bboxes)

    def close(self) -> None:
        pass


class HTTPClient:
    """Client of a Search-R1-compatible retrieval server (`POST {url}/retrieve`)."""

    RETRY_STATUS = {408, 429, 500, 502, 503, 504}

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 10.0, max_retries: int = 3,
                 backoff_s: float = 0.5, max_backoff_s: float = 8.0, default_topk: int = 3,
                 max_connections: int = 32):
        import httpx

        self.url = url.rstrip("/")
        self.endpoint = self.url if self.url.endswith("/retrieve") else self.url + "/retrieve"
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.default_topk = default_topk
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))

    def _delay(self, attempt: int) -> float:
        # Full jitter keeps many rollout workers from retrying in lockstep against a recovering server.
        return random.uniform(0.5, 1.0) * min(self.max_backoff_s, self.backoff_s * 2**attempt)

    def search(self, queries: list[str], topk: int | None = None) -> list[list[dict]]:
        queries = list(queries)
        body = {"queries": queries, "topk": self.default_topk if topk is None else topk, "return_scores": False}
        return _validate_result(self._post(self.endpoint, body), len(queries))

    def image_search(self, images: list, topk: int | None = None, bboxes: list | None = None) -> list[list[dict]]:
        """`POST /image_search` per image (a PIL image or encoded image bytes), optionally cropped server-side
        by a 0-1000 bbox each; per image the entries `{id, title, caption, score}`, best first."""
        from seekrl.envs.image_kb import encode_png_base64

        bodies = []
        for image in images:
            encoded = (base64.b64encode(bytes(image)).decode("ascii") if isinstance(image, (bytes, bytearray))
                       else encode_png_base64(image))
            bodies.append({"image": encoded})
        return self._image_requests(bodies, topk, bboxes)

    def image_search_by_id(self, image_ids: list[str], topk: int | None = None,
                           bboxes: list | None = None) -> list[list[dict]]:
        """Like `image_search`, for images the server's image index holds, by entry id."""
        return self._image_requests([{"image_id": str(i)} for i in image_ids], topk, bboxes)

    def _image_requests(self, bodies: list[dict], topk: int | None, bboxes: list | None) -> list[list[dict]]:
        endpoint = self.url.removesuffix("/retrieve") + "/image_search"
        if bboxes is not None and len(bboxes) != len(bodies):
            raise ToolError(f"{len(bboxes)} bboxes for {len(bodies)} images", "invalid_request")
        results = []
        for i, body in enumerate(bodies):
            body["topk"] = self.default_topk if topk is None else topk
            if bboxes is not None and bboxes[i] is not None:
                body["bbox"] = list(bboxes[i])
            results.append(_validate_image_result(self._post(endpoint, body)))
        return results

    def _post(self, endpoint: str, body: dict):
        """POST JSON with retries on transient failures; the decoded JSON payload of a 200, else ToolError."""
        import httpx

        last: ToolError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt - 1))
            try:
                response = self._http.post(endpoint, json=body)
            except httpx.TimeoutException as err:
                last = ToolError(f"retrieval server timed out ({type(err).__name__})", "timeout")
                continue
            except httpx.TransportError as err:
                last = ToolError(f"retrieval server unreachable at {endpoint}: {err}", "unavailable")
                continue
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError:
                    raise ToolError("retrieval server answered with a body that is not JSON", "bad_response") from None
            message = _server_message(response)
            if response.status_code in self.RETRY_STATUS:
                last = ToolError(f"retrieval server error {response.status_code}: {message}", "http",
                                 response.status_code)
                continue
            kind = "auth" if response.status_code in (401, 403) else "invalid_request"
            raise ToolError(f"retrieval request rejected ({response.status_code}): {message}", kind,
                            response.status_code)
        assert last is not None
        raise ToolError(f"{last} (after {self.max_retries + 1} attempts)", last.kind, last.status)

    def health(self) -> dict:
        """GET /health; raises ToolError when the server is not reachable or unhealthy."""
        import httpx

        try:
            response = self._http.get(self.url.removesuffix("/retrieve") + "/health")
        except httpx.HTTPError as err:
            raise ToolError(f"retrieval server unreachable: {err}", "unavailable") from None
        if response.status_code != 200:
            raise ToolError(f"retrieval server unhealthy ({response.status_code})", "http", response.status_code)
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _server_message(response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(payload, dict):
        return str(payload.get("error") or payload.get("detail") or payload)[:500]
    return str(payload)[:500]


def client_from_env(env) -> RetrievalClient | None:
    """The client an `EnvSection` of a recipe describes (None for kind 'none')."""
    if env.kind == "none":
        return None
    if env.kind == "index":
        if not env.index_dir:
            raise ValueError("env.kind is 'index' but env.index_dir is not set; build one with "
                             "`seekrl retriever build` and set env.index_dir")
        from seekrl.envs.index import load_index

        return InProcessClient(load_index(env.index_dir), default_topk=env.topk)
    if not env.url:
        raise ValueError("env.kind is 'url' but env.url is not set (e.g. env.url=http://127.0.0.1:8000)")
    return HTTPClient(env.url, api_key=env.api_key, timeout_s=env.timeout_s, max_retries=env.max_retries,
                      backoff_s=env.retry_backoff_s, default_topk=env.topk)
