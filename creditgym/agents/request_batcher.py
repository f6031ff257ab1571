"""The policy server's scheduler: batched, time-sliced, cancellable generation on one thread.

Contract (what ``creditgym serve-policy`` promises its clients):

- Prompts wait in a queue per key (a sampling setting; every seeded prompt has its own key, so
  a seed reproduces the same draw however busy the server is; "score" for prompt log-probs).
  Prompts with the same key are batched together, up to ``max_batch`` per backend batch.
- Fairness: with a backend that can pause (``start_generation``, the transformers backend), a
  batch is advanced at most ``step_tokens`` tokens per backend call, then goes to the back of
  a round-robin line; newly admitted batches go to the front, and a running slice is
  pre-empted between two decoding steps when new work arrives. So a short request waits for
  at most one decoding step of a long one, not for the whole long one. Pausing keeps the KV
  cache, batch and random generator, so the tokens and log-probs are bit-identical to one
  uninterrupted ``generate`` (seeded or not). At most ``max_running`` prompts are being
  decoded at once (their KV caches live in memory); the rest wait, as in vLLM.
- Cancellation: a prompt whose future is cancelled (its client disconnected) leaves the queue
  at once, or leaves its running batch at the next decoding step; a batch nobody waits for is
  closed. ``cancel_all`` (server shutdown) fails every waiting request with
  :class:`~creditgym.errors.GenerationCancelled` and stops the running slice within one step.
- Backends that cannot pause (HTTP, vLLM, test doubles) get one ``generate`` call per batch,
  as before; score batches are one ``score`` call (a single forward pass each).
- A batch's outcome reaches its requests as in the rollout's ``GenerationBatcher`` (the shared
  :func:`~creditgym.agents.generation_batcher.settle`): each its own result, or all the error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from creditgym.agents.backend import PolicyBackend
from creditgym.agents.generation_batcher import settle
from creditgym.errors import GenerationCancelled

Entry = tuple[Any, asyncio.Future]
"""A queued prompt (or score pair) and the future its request awaits."""


class _Batch:
    """One admitted batch: a pausable decoding, or a one-shot backend call."""

    def __init__(self, key: Any, entries: list[Entry], decoding: Any = None) -> None:
        self.key = key
        self.entries = entries
        self.decoding = decoding
        self.live = sum(not f.done() for _, f in entries)

    def forget(self, future: asyncio.Future) -> None:
        """A waiting request left: its row stops at the next decoding step."""
        self.live -= 1
        if self.decoding is not None:
            self.decoding.drop([i for i, (_, f) in enumerate(self.entries) if f is future])


class RequestBatcher:
    """Coalesces concurrent requests into batched ``generate``/``score`` calls on one thread.

    See the module docstring for the scheduling contract. ``step_tokens``: most tokens a
    batch advances per backend call; ``max_running``: most prompts being decoded at once.
    """

    def __init__(
        self,
        backend: PolicyBackend,
        *,
        max_batch: int = 32,
        step_tokens: int = 16,
        max_running: int = 256,
    ) -> None:
        for name, value in (("max_batch", max_batch), ("step_tokens", step_tokens)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if max_running < max_batch:
            raise ValueError(f"max_running={max_running} must be >= max_batch={max_batch}")
        self.backend = backend
        self.max_batch = max_batch
        self.step_tokens = step_tokens
        self.max_running = max_running
        self._pausable = callable(getattr(backend, "start_generation", None))
        self._queues: dict[Any, list[Entry]] = {}
        self._line: deque[_Batch] = deque()  # admitted batches, next to run first
        self._owner: dict[asyncio.Future, tuple[Any, Any]] = {}  # future -> (key or batch, entry)
        self._seeded = 0
        self._pump: asyncio.Task | None = None
        self._current: _Batch | None = None  # the batch whose slice runs now
        self._preempt = False
        self._closing = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="policy-backend")
        self.batches = 0
        """Backend calls made so far (each slice of a paused generation counts)."""
        self.prompts = 0
        """Prompts generated or scored so far."""
        self.steps = 0
        """Decoding steps run so far (pausable backends only)."""

    @property
    def waiting(self) -> int:
        """Prompts queued, not yet admitted to a batch."""
        return sum(len(queue) for queue in self._queues.values())

    @property
    def running(self) -> int:
        """Prompts in admitted batches that someone still waits for."""
        current = self._current.live if self._current is not None else 0
        return current + sum(batch.live for batch in self._line)

    async def generate(self, prompt: list[int], sampling) -> Any:
        if sampling.seed is not None:  # a seeded draw must not depend on its batch mates
            self._seeded += 1
            key: Any = ("generate", sampling, self._seeded)
        else:
            key = ("generate", sampling)
        return await self._submit(key, prompt)

    async def score(self, prefix: list[int], continuation: list[int]) -> list[float]:
        return await self._submit(("score",), (prefix, continuation))

    async def _submit(self, key: Any, item: Any) -> Any:
        if self._closing:
            raise GenerationCancelled("the policy server is shutting down")
        future = asyncio.get_running_loop().create_future()
        entry = (item, future)
        self._queues.setdefault(key, []).append(entry)
        self._owner[future] = (key, entry)
        future.add_done_callback(self._on_done)
        if self._current is not None and self._room() > 0:
            self._preempt = True  # the running slice yields at its next decoding step
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run())
        return await future

    def _on_done(self, future: asyncio.Future) -> None:
        """Drop a finished or cancelled request's prompt from wherever it waits."""
        where, entry = self._owner.pop(future, (None, None))
        if isinstance(where, _Batch):
            if future.cancelled():
                where.forget(future)
        elif where is not None:
            queue = self._queues.get(where, [])
            if entry in queue:
                queue.remove(entry)
                if not queue:
                    del self._queues[where]

    def _room(self) -> int:
        return self.max_running - self.running

    def _admit(self) -> None:
        """Move queued prompts into batches (oldest queue first), in front of the line."""
        admitted: list[_Batch] = []
        for key in list(self._queues):
            pausable = self._pausable and key[0] == "generate"
            size = min(self.max_batch, self._room()) if pausable else self.max_batch
            if size < 1:
                continue
            queue = self._queues.pop(key)
            entries, rest = queue[:size], queue[size:]
            if rest:
                self._queues[key] = rest
            decoding = None
            if pausable:
                try:
                    decoding = self.backend.start_generation([p for p, _ in entries], key[1])
                except Exception as exc:  # invalid input: every request in it learns why
                    self._fail(entries, exc)
                    continue
            batch = _Batch(key, entries, decoding)
            for entry in entries:
                self._owner[entry[1]] = (batch, entry)
            admitted.append(batch)
        self._line.extendleft(reversed(admitted))

    async def _run(self) -> None:
        """The scheduling loop: one slice of the batch at the front of the line at a time."""
        loop = asyncio.get_running_loop()
        try:
            while not self._closing:
                self._admit()
                if not self._line:
                    return
                batch = self._line.popleft()
                if batch.live <= 0:  # everyone left: drop it, its KV cache with it
                    self._close(batch)
                    continue
                self._current, self._preempt = batch, False
                try:
                    done, results = await loop.run_in_executor(self._executor, self._slice, batch)
                except Exception as exc:  # every waiting request learns what happened
                    self._close(batch)
                    self._fail(batch.entries, exc)
                    continue
                finally:
                    self._current = None
                self.batches += 1
                if not done:
                    self._line.append(batch)
                    continue
                self._close(batch)
                if settle([future for _, future in batch.entries], results):
                    self.prompts += len(results)
        finally:
            self._pump = None
            if self._closing:
                self._fail_everything()

    def _slice(self, batch: _Batch) -> tuple[bool, list[Any]]:
        """Worker thread: advance ``batch`` one slice; (finished?, results when finished)."""
        items = [item for item, _ in batch.entries]
        if batch.key[0] == "score":
            return True, self.backend.score([p for p, _ in items], [c for _, c in items])
        if batch.decoding is None:
            return True, self.backend.generate(items, batch.key[1])
        decoding = batch.decoding
        before = decoding.steps

        def should_stop() -> bool:
            return self._closing or self._preempt or batch.live <= 0

        try:
            finished = decoding.advance(self.step_tokens, should_stop)
        finally:
            self.steps += decoding.steps - before
        return finished, decoding.completions() if finished else []

    def _close(self, batch: _Batch) -> None:
        if batch.decoding is not None:
            batch.decoding.close()
        for _, future in batch.entries:
            self._owner.pop(future, None)

    def _fail(self, entries: list[Entry], exc: BaseException) -> None:
        settle([future for _, future in entries], exc)

    def _fail_everything(self) -> None:
        error = GenerationCancelled("the policy server is shutting down; retry elsewhere")
        if self._current is not None:  # its slice returns within one decoding step
            self._fail(self._current.entries, error)
        for queue in list(self._queues.values()):
            self._fail(list(queue), error)
        self._queues.clear()
        while self._line:
            batch = self._line.popleft()
            self._close(batch)
            self._fail(batch.entries, error)

    def cancel_all(self) -> None:
        """Shutdown: fail every queued and running request; the running slice stops within one
        decoding step (call on the event loop)."""
        self._closing = True
        self._fail_everything()

    def close(self) -> None:
        """Stop the worker thread (waiting for a running slice, which ``cancel_all`` shortens)."""
        self._closing = True
        self._executor.shutdown(wait=True)


__all__ = ["RequestBatcher"]
