"""Coalescing the generation requests of concurrent trajectories into batched backend calls.

Each trajectory of a rollout is a coroutine that alternates "generate" and "step". Requests are
batched when their sampling settings match apart from ``max_new_tokens`` (each trajectory's
remaining context differs) and ``seed``; a batch generates up to the largest budget and longer
completions are cut back to their own budget (ids are only dropped from the end, never
re-tokenised). How requests are grouped into backend calls is the ``mode``:

- ``free``: while the backend works on one batch, the trajectories whose environment step
  finished queue up, and the next backend call takes whatever is queued: a slow tool call holds
  back only its own trajectory (best for slow, remote tools). Which requests share a call
  depends on timing, so on a CPU the last bits of log-probs may differ between identical runs
  (matmul kernels block by batch shape); tokens do not (per-request seeds, below).
- ``rounds`` (lockstep): trajectories ``join(key)`` when they start and ``leave(key)`` when they
  end, and pass their ``key`` with every request. A round is dispatched once every live
  trajectory has a pending request; its requests are sorted by key, grouped by sampling
  settings and cut into calls of ``max_batch``. The same trajectories, turns and config give the
  same calls, hence bit-identical floats, at batched speed; the price is that a round waits for
  the slowest environment step (small when tools are in-process). Keys must be unique among
  live trajectories and sortable (the rollout uses ``(task index, member)``).
- ``alone``: every request is its own backend call (a batch of one): bit-identical whatever the
  timing, with no coordination, but no batching either (several times slower).

Seeds are per request: a backend whose ``generate`` takes ``seeds=`` (one per prompt, e.g. the
transformers backend) gets requests with different seeds in one call, and samples each row from
its own seed; any other backend gets one call per distinct seed with that seed in its
``SamplingParams``. Either way a seeded request's draws never depend on how requests happened to
be batched (no per-call seed offsets), which is what makes rollouts reproducible.

:func:`settle` is how a backend call's outcome reaches the requests in it, here and in the policy
server's ``RequestBatcher``: each waiting request gets its own result, or every one the error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Hashable, Literal, Sequence

from creditgym.agents.backend import Completion, PolicyBackend, SamplingParams
from creditgym.errors import ConfigError

BatchingMode = Literal["rounds", "free", "alone"]
BATCHING_MODES: tuple[str, ...] = ("rounds", "free", "alone")


@dataclass
class _Request:
    prompt: list[int]
    sampling: SamplingParams
    future: asyncio.Future
    key: Any = None


class GenerationBatcher:
    """Async front of a ``PolicyBackend`` for many concurrent trajectories (one event loop)."""

    def __init__(
        self, backend: PolicyBackend, *, max_batch: int = 64, mode: BatchingMode = "free"
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if mode not in BATCHING_MODES:
            raise ConfigError(f"batching mode {mode!r} is unknown; use one of {BATCHING_MODES}")
        self.backend = backend
        self.mode = mode
        self.max_batch = 1 if mode == "alone" else max_batch
        self.per_row_seeds = accepts_seeds(backend)
        """Whether the backend samples each row from its own seed (``generate(..., seeds=)``)."""
        self._pending: list[_Request] = []
        self._worker: asyncio.Task | None = None
        self._live: set[Hashable] = set()
        self.batch_sizes: list[int] = []
        """Size of every backend call made so far."""
        self.rounds = 0
        """Rounds dispatched so far (``rounds`` mode)."""

    # ------------------------------------------------------------------ rounds bookkeeping
    def join(self, key: Hashable) -> None:
        """``rounds``: trajectory ``key`` is live; no round is dispatched without its request
        until it ``leave``s. Call it synchronously where the trajectory is admitted (not after
        an await), so that which round it joins does not depend on timing. No-op otherwise."""
        if self.mode != "rounds":
            return
        if key in self._live:
            raise ValueError(f"trajectory key {key!r} joined twice; keys must be unique")
        self._live.add(key)

    def leave(self, key: Hashable) -> None:
        """``rounds``: trajectory ``key`` ended (rounds stop waiting for it). No-op otherwise."""
        if self.mode != "rounds":
            return
        self._live.discard(key)
        # a cancelled trajectory may leave a request behind: it must not hold up the round
        self._pending = [r for r in self._pending if r.key != key]
        self._maybe_dispatch()

    # --------------------------------------------------------------------------- generate
    async def generate(
        self, prompt: Sequence[int], sampling: SamplingParams, *, key: Hashable = None
    ) -> Completion:
        """One completion of ``prompt``. ``key``: the calling trajectory's key (``rounds``
        mode needs it, and the trajectory must have joined; other modes ignore it)."""
        future = asyncio.get_running_loop().create_future()
        request = _Request(list(prompt), sampling, future, key)
        if self.mode == "rounds":
            if key not in self._live:
                raise ValueError(
                    f"rounds batching: generate(key={key!r}) from a trajectory that did not "
                    "join(key) first (or already left)"
                )
            if any(r.key == key for r in self._pending):
                raise ValueError(f"rounds batching: trajectory {key!r} has a request pending")
            self._pending.append(request)
            self._maybe_dispatch()
        else:
            self._pending.append(request)
            if self._worker is None or self._worker.done():
                self._worker = asyncio.create_task(self._drain())
        return _cut(await future, sampling.max_new_tokens)

    def _maybe_dispatch(self) -> None:
        """Start the next round when every live trajectory is waiting on one (and none runs)."""
        if self._worker is not None and not self._worker.done():
            return  # the running round checks again when it ends
        if not self._pending or len(self._pending) < len(self._live):
            return
        requests, self._pending = self._pending, []
        self.rounds += 1
        self._worker = asyncio.create_task(self._run_round(requests))

    async def _run_round(self, requests: list[_Request]) -> None:
        try:
            groups: dict[SamplingParams, list[_Request]] = {}
            for r in sorted(requests, key=lambda r: r.key):  # groups in order of first key
                groups.setdefault(self._key(r.sampling), []).append(r)
            for group in groups.values():
                for start in range(0, len(group), self.max_batch):
                    await self._call(group[start : start + self.max_batch])
        except Exception as exc:  # e.g. keys that do not sort: no trajectory waits forever
            settle([r.future for r in requests], exc)
        finally:
            self._worker = None
            self._maybe_dispatch()

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let trajectories that are ready right now join this batch
            await self._call(self._take_batch())

    async def _call(self, batch: list[_Request]) -> None:
        """One backend call for ``batch``; every request's future gets its result or error
        (longer completions than a request's own budget are cut where it awaits them)."""
        budget = max(r.sampling.max_new_tokens for r in batch)
        sampling = dataclasses.replace(batch[0].sampling, max_new_tokens=budget)
        prompts = [r.prompt for r in batch]
        self.batch_sizes.append(len(batch))
        try:
            if self.per_row_seeds and any(r.sampling.seed is not None for r in batch):
                seeds = [r.sampling.seed for r in batch]
                call = (self.backend.generate, prompts, dataclasses.replace(sampling, seed=None))
                completions = await asyncio.to_thread(*call, seeds=seeds)
            else:
                completions = await asyncio.to_thread(self.backend.generate, prompts, sampling)
        except Exception as exc:  # every waiting trajectory learns what happened
            completions = exc
        settle([r.future for r in batch], completions)

    def _take_batch(self) -> list[_Request]:
        key = self._key(self._pending[0].sampling)
        batch, rest = [], []
        for r in self._pending:
            if len(batch) < self.max_batch and self._key(r.sampling) == key:
                batch.append(r)
            else:
                rest.append(r)
        self._pending = rest
        return batch

    def _key(self, sampling: SamplingParams) -> SamplingParams:
        if self.per_row_seeds:
            return dataclasses.replace(sampling, max_new_tokens=0, seed=None)
        return dataclasses.replace(sampling, max_new_tokens=0)


def settle(futures: Sequence[asyncio.Future], outcome: Sequence[Any] | BaseException) -> bool:
    """Hand each future still waiting its own result ``outcome[i]``; when ``outcome`` is an
    exception, or its length does not match (a backend bug), every waiting future gets that
    error instead, so nobody waits forever. Futures already done (cancelled: the caller left)
    are skipped. Returns whether results were delivered."""
    if not isinstance(outcome, BaseException) and len(outcome) != len(futures):
        outcome = RuntimeError(
            f"backend returned {len(outcome)} results for {len(futures)} prompts"
        )
    for i, future in enumerate(futures):
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome[i])
    return not isinstance(outcome, BaseException)


def accepts_seeds(backend: PolicyBackend) -> bool:
    """Whether ``backend.generate`` takes a ``seeds=`` keyword (one seed per prompt)."""
    try:
        return "seeds" in inspect.signature(backend.generate).parameters
    except (TypeError, ValueError):
        return False


def _cut(c: Completion, budget: int) -> Completion:
    if len(c.token_ids) <= budget:
        return c
    return dataclasses.replace(
        c, token_ids=c.token_ids[:budget], logprobs=c.logprobs[:budget], finish_reason="length",
        text="",
    )
