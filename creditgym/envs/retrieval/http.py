"""A client for a remote retriever that speaks the Search-R1 protocol (``creditgym
serve-retriever``, Search-R1's own ``retrieval_server.py``, FlashRAG-style servers).

``HTTPRetriever(url).search(queries, k)`` posts ``{"queries": [...], "topk": k, "return_scores":
true}`` to ``url`` (``http://host:port`` gets ``/retrieve`` appended) and turns the answer into
:class:`Hit` lists. It reads both answer forms: ``{"document": {...}, "score": s}`` items, and bare
documents (a server that ignores ``return_scores``; their score is 0.0). Documents are
``{"id", "contents"}`` (wiki-18) or ``{"id", "title", "text"}``.

The client owns a private event loop on a daemon thread with one pooled aiohttp session, so the
synchronous ``search`` works from plain code and from inside another running event loop (it
blocks that caller, never deadlocks), and ``await asearch(...)`` works from any loop. Batches
larger than ``batch_size`` are split into requests sent concurrently over at most
``max_connections`` connections.

Failures: a connection error, a timeout (``timeout`` seconds per request), or a 5xx / 429 answer
is retried up to ``retries`` more times, waiting ``backoff``, then twice that, and so on. A 4xx
answer is the caller's mistake and raises :class:`RetrievalError` at once with the server's own
message. A server that stays unreachable raises :class:`RetrievalError` naming the URL, the
number of attempts and the last error.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import aiohttp

from creditgym.envs.retrieval.base import Hit, parse_contents
from creditgym.errors import RetrievalError


def endpoint(url: str) -> str:
    """The ``/retrieve`` address for ``url`` (a base URL or the full address)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    return url if url.endswith("/retrieve") else url + "/retrieve"


class HTTPRetriever:
    """Search a remote retrieval server; see the module docstring."""

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
        self.url = endpoint(url)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_connections = max_connections
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    # -- the private loop ---------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RetrievalError(f"HTTPRetriever for {self.url} is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="http-retriever", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _submit(self, queries: list[str], k: int):
        if isinstance(queries, str):
            raise TypeError("search() takes a list of queries, not one string")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        loop = self._ensure_loop()
        return asyncio.run_coroutine_threadsafe(self._search(list(queries), k), loop)

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits per query from the server (blocking)."""
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RetrievalError("HTTPRetriever.search() called on its own loop; use asearch()")
        return self._submit(queries, k).result()

    async def asearch(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits per query from the server, awaitable from any event loop."""
        return await asyncio.wrap_future(self._submit(queries, k))

    # -- on the private loop ------------------------------------------------------------------

    async def _search(self, queries: list[str], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        chunks = [queries[i : i + self.batch_size] for i in range(0, len(queries), self.batch_size)]
        parts = await asyncio.gather(*(self._post(chunk, k) for chunk in chunks))
        return [hits for part in parts for hits in part]

    async def _post(self, queries: list[str], k: int) -> list[list[Hit]]:
        assert self._session is not None
        payload = {"queries": queries, "topk": k, "return_scores": True}
        attempts = self.retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                async with self._session.post(self.url, json=payload) as resp:
                    body = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if status >= 500 or status == 429:
                last = f"HTTP {status}: {_message(body)}"
                continue
            if status >= 400:
                raise RetrievalError(
                    f"retrieval server {self.url} rejected the request (HTTP {status}): "
                    f"{_message(body)}"
                )
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise RetrievalError(
                    f"retrieval server {self.url} answered with invalid JSON: {exc}"
                ) from None
            return parse_response(data, len(queries), source=self.url)
        raise RetrievalError(
            f"retrieval server {self.url} unreachable after {attempts} attempt"
            f"{'s' if attempts != 1 else ''} (last error: {last}); is it running? "
            "start one with `creditgym serve-retriever --index PATH`"
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections and stop the private loop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread, session = self._loop, self._thread, self._session
            self._loop = self._thread = self._session = None
        if loop is None:
            return
        if session is not None:
            asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()

    def __enter__(self) -> HTTPRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _message(body: bytes) -> str:
    """The server's ``error`` message, else the start of its body."""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return data["error"]
        if isinstance(data, dict) and "detail" in data:  # FastAPI's validation errors
            return json.dumps(data["detail"])[:500]
    except ValueError:
        pass
    text = body.decode("utf-8", errors="replace").strip()
    return text[:500] or "(empty body)"


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
