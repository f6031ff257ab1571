"""Coalescing concurrent searches from many callers into batched backend calls.

Many environments step at once (threads, or tool calls that ToolEnv runs in threads), each with
one query. ``BatchingRetriever`` wraps any backend so that concurrent ``search`` calls share one
backend ``search(queries, k)`` call: every backend is much faster per query on a batch (Lucene
spreads a batch over its threads, bm25s and dense backends vectorise it). It works across
threads and event loops because it only uses threading primitives; the async HTTP server has its
own loop-bound ``Batcher`` in ``server.py``.

Leader/follower: the first caller to find no batch running becomes the leader, waits
``window_s`` for others to join, runs one backend call for everything queued (same ``k``, up to
``max_batch`` queries), hands each caller its own results, then passes leadership to the oldest
caller still waiting. Results are never mixed up between callers: each keeps its own slice.

Isolation: one caller's bad query never fails the callers it was batched with. Queries are
checked and normalised (:func:`~creditgym.envs.retrieval.query_text.normalize_queries`) in the
caller's own thread before they join a batch, so a non-string query or a bad ``k`` raises only
there. When a batched backend call still raises, the leader retries each caller's queries alone:
every caller gets its own results or its own exception (the one its queries raise by themselves).
"""

from __future__ import annotations

import functools
import operator
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from creditgym.envs.retrieval.base import Hit, Retriever
from creditgym.envs.retrieval.query_text import normalize_queries


@dataclass
class _Call:
    queries: list[str]
    k: int
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    hits: list[list[Hit]] | None = None
    error: BaseException | None = None


def _check_k(k: int) -> int:
    try:
        value = operator.index(k)
    except TypeError:
        value = 0
    if isinstance(k, bool) or value < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return value


def search_checked(backend: Retriever, queries: list[str], k: int) -> list[list[Hit]]:
    """``backend.search``, refusing an answer with the wrong number of result lists."""
    hits = backend.search(queries, k)
    if len(hits) != len(queries):
        raise RuntimeError(f"backend returned {len(hits)} result lists for {len(queries)} queries")
    return hits


def search_each(
    search: Callable[[list[str], int], list[list[Hit]]], requests: list[list[str]], k: int
) -> tuple[list, bool]:
    """Each request's hits or its own exception, and whether the batch had to be split.

    One ``search`` call for all requests; if it raises, each request is retried alone, so a
    query that breaks the backend fails only the request that sent it (both batchers use this).
    """
    queries = [q for qs in requests for q in qs]
    try:
        hits = search(queries, k)
    except Exception as exc:
        if len(requests) == 1:
            return [exc], False
        outcomes: list = []
        for qs in requests:
            try:
                outcomes.append(search(qs, k))
            except Exception as one_exc:  # handed to its own request
                outcomes.append(one_exc)
        return outcomes, True
    out, start = [], 0
    for qs in requests:
        out.append(hits[start : start + len(qs)])
        start += len(qs)
    return out, False


class BatchingRetriever:
    """A thread-safe ``Retriever`` that batches concurrent calls to ``backend``."""

    def __init__(
        self, backend: Retriever, *, max_batch: int = 512, window_s: float = 0.001
    ) -> None:
        if max_batch < 1 or window_s < 0:
            raise ValueError("max_batch must be >= 1 and window_s >= 0")
        self.backend = backend
        self.max_batch = max_batch
        self.window_s = window_s
        self._lock = threading.Lock()
        self._queue: list[_Call] = []
        self._leading = False
        self.backend_calls = 0
        """Backend calls made so far, retries included (queries / backend_calls ~ batch size)."""
        self.queries = 0
        """Queries answered so far (with results or with their own error)."""
        self.split_batches = 0
        """Batched calls that raised and were retried caller by caller."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        queries = normalize_queries(queries)
        k = _check_k(k)
        if not queries:
            return []
        call = _Call(queries, k)
        with self._lock:
            self._queue.append(call)
            if not self._leading:
                self._leading = call.lead = True
        if not call.lead:
            call.done.wait()
        if call.lead:
            self._lead()
            call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.hits is not None
        return call.hits

    def _lead(self) -> None:
        if self.window_s:
            time.sleep(self.window_s)
        with self._lock:
            batch = self._take_batch()
        calls = self._run(batch)
        with self._lock:
            self.backend_calls += calls
            self.queries += sum(len(c.queries) for c in batch)
            successor = self._queue[0] if self._queue else None
            self._leading = successor is not None
            if successor is not None:
                successor.lead = True
        for c in batch:
            c.done.set()
        if successor is not None:
            successor.done.set()

    def _run(self, batch: list[_Call]) -> int:
        """Answer every call of ``batch``; returns the number of backend calls made."""
        search = functools.partial(search_checked, self.backend)
        try:
            outcomes, split = search_each(search, [c.queries for c in batch], batch[0].k)
        except BaseException as exc:  # KeyboardInterrupt and the like: everyone stops
            for c in batch:
                c.error = exc
            return 1
        for c, outcome in zip(batch, outcomes):
            if isinstance(outcome, Exception):
                c.error = outcome
            else:
                c.hits = outcome
        if not split:
            return 1
        with self._lock:
            self.split_batches += 1
        return 1 + len(batch)

    def _take_batch(self) -> list[_Call]:
        """Pop the oldest call and every queued call with the same ``k`` that fits the batch."""
        first = self._queue[0]
        batch, rest, n = [], [], 0
        for c in self._queue:
            if c.k == first.k and (not batch or n + len(c.queries) <= self.max_batch):
                batch.append(c)
                n += len(c.queries)
            else:
                rest.append(c)
        self._queue = rest
        return batch

    def close(self) -> None:
        self.backend.close()
