"""Cross-request micro-batching for the retrieval server.

Many rollout workers each sending a few queries is the common load. Searching each request separately costs
a thread hop and a small, inefficient index call per request; searching them together costs one. Requests
that arrive while a search runs wait in a queue; when the search finishes, everything queued (up to
`max_batch_queries`) goes into the next call, grouped by topk so every request gets exactly the ranking it
would get alone. With no concurrency this adds no delay: a lone request is searched immediately.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from seekrl.envs.index import Searcher, retrieve


@dataclass
class _Pending:
    queries: list[str]
    topk: int
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Runs at most one search at a time (in a worker thread) and merges the requests queued behind it."""

    def __init__(self, get_index: Callable[[], Searcher], max_batch_queries: int = 1024):
        self.get_index = get_index
        self.max_batch_queries = max_batch_queries
        self.queue: list[_Pending] = []
        self.draining = False

    async def search(self, queries: list[str], topk: int) -> list[list[dict]]:
        """Search-R1 items with scores (`{"document", "score"}`) per query, searched together with other requests."""
        future = asyncio.get_running_loop().create_future()
        self.queue.append(_Pending(queries, topk, future))
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _take(self) -> list[_Pending]:
        """The next group: queued requests with the first one's topk, up to max_batch_queries queries."""
        topk = self.queue[0].topk
        taken, rest, size = [], [], 0
        for item in self.queue:
            if item.topk == topk and (not taken or size + len(item.queries) <= self.max_batch_queries):
                taken.append(item)
                size += len(item.queries)
            else:
                rest.append(item)
        self.queue = rest
        return taken

    async def _drain(self) -> None:
        try:
            while self.queue:
                group = self._take()
                queries = [q for item in group for q in item.queries]
                try:
                    results = await anyio.to_thread.run_sync(retrieve, self.get_index(), queries, group[0].topk, True)
                except Exception as err:  # a failed search fails its requests, never the drain loop
                    for item in group:
                        if not item.future.done():
                            item.future.set_exception(err)
                    continue
                start = 0
                for item in group:
                    if not item.future.done():  # the client may have gone away (cancelled request)
                        item.future.set_result(results[start:start + len(item.queries)])
                    start += len(item.queries)
        finally:
            self.draining = False
