"""The server's request batcher: coalesces the queries of concurrent HTTP requests, on one
event loop, into batched ``retriever.search`` calls run in worker threads.

Used by ``server.py`` (``creditgym serve-retriever``); the thread-based equivalent for
in-process callers is ``batching.BatchingRetriever``. Contract: every request gets exactly its
own hits, in its own order, or its own exception. Queries are normalised
(:func:`~creditgym.envs.retrieval.query_text.normalize_queries`) before they are queued, and a
batch whose backend call raises is retried request by request, so one bad query never fails the
requests it was batched with.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from creditgym.envs.retrieval.base import Hit, Retriever
from creditgym.envs.retrieval.batching import search_checked, search_each
from creditgym.envs.retrieval.query_text import normalize_queries


@dataclass
class _Job:
    queries: list[str]
    future: asyncio.Future


@dataclass
class _Queue:
    jobs: list[_Job] = field(default_factory=list)
    since: float = 0.0  # when the oldest waiting job arrived


class Batcher:
    """Coalesces the queries of concurrent requests into batched ``retriever.search`` calls.

    Requests are queued per ``k``. At most ``workers`` batches run at a time, each in a worker
    thread; when one finishes, the oldest queue is sent next, up to ``max_batch`` queries (whole
    requests; a single request larger than that goes alone). Results go back to each request in
    its own order, so batching never mixes requests up.

    Isolation: queries are normalised before they are queued, and a batch whose backend call
    raises is retried request by request in the same worker, so each request gets its own hits
    or its own error: one bad query never fails the requests it was batched with.
    """

    def __init__(
        self,
        retriever: Retriever,
        *,
        max_batch: int = 256,
        batch_window_ms: float = 0.0,
        workers: int = 1,
    ) -> None:
        if max_batch < 1 or workers < 1 or batch_window_ms < 0:
            raise ValueError("max_batch and workers must be >= 1, batch_window_ms >= 0")
        self.retriever = retriever
        self.max_batch = max_batch
        self.window = batch_window_ms / 1000.0
        self.workers = workers
        self._queues: dict[int, _Queue] = {}
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.batches = 0
        """Backend calls made so far."""
        self.queries = 0
        """Queries answered so far."""
        self.split_batches = 0
        """Batches whose backend call raised and were retried request by request."""
        self._count_lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="retrieve")
        return self._executor

    async def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Queue ``queries`` for a batched top-``k`` search and wait for their hits.

        The queries are normalised here, before they can join anyone else's batch; a query
        that cannot be (not a string) raises ``TypeError`` for this request alone.
        """
        queries = normalize_queries(queries)
        if not queries:
            return []
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        q = self._queues.get(k)
        if q is None:
            q = self._queues[k] = _Queue(since=time.monotonic())
        q.jobs.append(_Job(queries, fut))
        if self.window and self._running == 0:
            if self._timer is None:
                self._timer = loop.call_later(self.window, self._timer_fired)
        else:
            self._dispatch()
        return await fut

    def _timer_fired(self) -> None:
        self._timer = None
        self._dispatch()

    def _dispatch(self) -> None:
        while self._running < self.workers and self._queues:
            k = min(self._queues, key=lambda key: self._queues[key].since)
            queue = self._queues[k]
            batch: list[_Job] = []
            n = 0
            while queue.jobs and (not batch or n + len(queue.jobs[0].queries) <= self.max_batch):
                job = queue.jobs.pop(0)
                if job.future.done():  # the client went away
                    continue
                batch.append(job)
                n += len(job.queries)
            if queue.jobs:
                queue.since = time.monotonic()
            else:
                del self._queues[k]
            if batch:
                self._running += 1
                asyncio.get_running_loop().create_task(self._run(batch, k))

    async def _run(self, batch: list[_Job], k: int) -> None:
        try:
            outcomes = await asyncio.get_running_loop().run_in_executor(
                self._pool(), self._search_isolated, [job.queries for job in batch], k
            )
            for job, outcome in zip(batch, outcomes):
                if job.future.done():  # the client went away
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)
        except asyncio.CancelledError:  # the server is shutting down
            for job in batch:
                job.future.cancel()
            raise
        except Exception as exc:  # the executor itself failed (shut down): tell everyone
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
        finally:
            self._running -= 1
            self._dispatch()

    def _search_isolated(
        self, requests: list[list[str]], k: int
    ) -> list[list[list[Hit]] | Exception]:
        """Each request's hits or its own exception (in a worker thread; see ``search_each``)."""
        outcomes, split = search_each(self._search_one, requests, k)
        if split:
            with self._count_lock:
                self.split_batches += 1
        return outcomes

    def _search_one(self, queries: list[str], k: int) -> list[list[Hit]]:
        with self._count_lock:  # workers > 1 count from several threads
            self.batches += 1
        hits = search_checked(self.retriever, queries, k)
        with self._count_lock:
            self.queries += len(queries)
        return hits

    def close(self) -> None:
        """Stop the worker threads (waiting for a running batch)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


__all__ = ["Batcher"]
