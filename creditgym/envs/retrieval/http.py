"""A client for a remote retriever that speaks the Search-R1 protocol (``creditgym
serve-retriever``, Search-R1's own ``retrieval_server.py``, FlashRAG-style servers).

``HTTPRetriever(url).search(queries, k)`` posts ``{"queries": [...], "topk": k, "return_scores":
true}`` to ``url`` (``http://host:port`` gets ``/retrieve`` appended) and turns the answer into
:class:`Hit` lists. It reads both answer forms: ``{"document": {...}, "score": s}`` items, and bare
documents (a server that ignores ``return_scores``; their score is 0.0). Documents are
``{"id", "contents"}`` (wiki-18) or ``{"id", "title", "text"}``.

The client owns a private event loop on a daemon thread with one pooled aiohttp session
(:class:`creditgym.aio_client.LoopThreadClient`, shared with the policy backend), so the
synchronous ``search`` works from plain code and from inside another running event loop (it
blocks that caller, never deadlocks), and ``await asearch(...)`` works from any loop. Batches
larger than ``batch_size`` are split into requests sent concurrently over at most
``max_connections`` connections.

Queries are normalised first (``query_text``: lone surrogates replaced), so any string can be
sent.

Failures: a connection error, a timeout (``timeout`` seconds per request), or a 5xx / 429 answer
is retried up to ``retries`` more times, waiting ``backoff``, then twice that, and so on. A 4xx
answer is the caller's mistake and raises :class:`RetrievalError` at once with the server's own
message. A server that stays unreachable raises :class:`RetrievalError` naming the URL, the
number of attempts and the last error.
"""

from __future__ import annotations

import asyncio
from typing import Any

from creditgym.aio_client import LoopThreadClient, ServerKind
from creditgym.envs.retrieval.base import Hit, parse_contents
from creditgym.envs.retrieval.query_text import normalize_queries
from creditgym.errors import RetrievalError


def endpoint(url: str) -> str:
    """The ``/retrieve`` address for ``url`` (a base URL or the full address)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    return url if url.endswith("/retrieve") else url + "/retrieve"


class HTTPRetriever(LoopThreadClient):
    """Search a remote retrieval server; see the module docstring."""

    server_kind = ServerKind(
        name="retrieval server",
        error=RetrievalError,
        start_hint="start one with `creditgym serve-retriever --index PATH`",
        blocking_on_own_loop="HTTPRetriever.search() called on its own loop; use asearch()",
        thread_name="http-retriever",
        invalid_json="answered with invalid JSON",
    )

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_connections: int = 64,
        batch_size: int = 64,
    ) -> None:
        if retries < 0 or backoff < 0 or timeout <= 0 or max_connections < 1 or batch_size < 1:
            raise ValueError(
                "HTTPRetriever needs retries >= 0, backoff >= 0, timeout > 0, "
                "max_connections >= 1 and batch_size >= 1"
            )
        super().__init__(
            endpoint(url),
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            connections=max_connections,
        )
        self.max_connections = max_connections
        self.batch_size = batch_size

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits per query from the server (blocking)."""
        return self._run(self._search(*_checked(queries, k)))

    async def asearch(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits per query from the server, awaitable from any event loop."""
        return await self._arun(self._search(*_checked(queries, k)))

    # -- on the private loop ------------------------------------------------------------------

    async def _search(self, queries: list[str], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        chunks = [queries[i : i + self.batch_size] for i in range(0, len(queries), self.batch_size)]
        parts = await asyncio.gather(*(self._post(chunk, k) for chunk in chunks))
        return [hits for part in parts for hits in part]

    async def _post(self, queries: list[str], k: int) -> list[list[Hit]]:
        data = await self._post_json({"queries": queries, "topk": k, "return_scores": True})
        return parse_response(data, len(queries), source=self.url)


def _checked(queries: list[str], k: int) -> tuple[list[str], int]:
    # Normalised here so that servers which choke on lone surrogates (any that encodes UTF-8
    # strictly) see only text they can read.
    queries = normalize_queries(queries)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return queries, k


def parse_response(data: Any, n: int, *, source: str = "server") -> list[list[Hit]]:
    """Hits from a Search-R1 answer ``{"result": [[...], ...]}`` for ``n`` queries."""
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list) or len(result) != n:
        got = f"{len(result)} result lists" if isinstance(result, list) else "no 'result' list"
        raise RetrievalError(f"{source} answered {got} for {n} queries")
    out: list[list[Hit]] = []
    for row in result:
        if not isinstance(row, list):
            raise RetrievalError(f"{source}: each result must be a list of documents")
        hits = []
        for item in row:
            if not isinstance(item, dict):
                raise RetrievalError(f"{source}: a result item is not an object: {item!r:.80}")
            if isinstance(item.get("document"), dict):
                doc, score = item["document"], item.get("score", 0.0)
            else:
                doc, score = item, 0.0
            if "contents" in doc:
                title, text = parse_contents(str(doc["contents"]))
            else:
                title, text = str(doc.get("title", "")), str(doc.get("text", ""))
            hits.append(Hit(str(doc.get("id", "")), title, text, float(score or 0.0)))
        out.append(hits)
    return out


__all__ = ["HTTPRetriever", "endpoint", "parse_response"]
