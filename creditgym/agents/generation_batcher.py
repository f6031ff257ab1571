"""Coalescing the generation requests of concurrent trajectories into batched backend calls.

Each trajectory of a rollout is a coroutine that alternates "generate" and "step". While the
backend works on one batch, the trajectories whose environment step finished queue up, and the
next backend call takes all of them: the batch forms by itself, and a slow tool call holds back
only its own trajectory. Requests are batched when their sampling settings match apart from
``max_new_tokens`` (each trajectory's remaining context differs); a batch generates up to the
largest budget and longer completions are cut back to their own budget (ids are only dropped
from the end, never re-tokenised).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Sequence

from creditgym.agents.backend import Completion, PolicyBackend, SamplingParams


@dataclass
class _Request:
    prompt: list[int]
    sampling: SamplingParams
    future: asyncio.Future


class GenerationBatcher:
    """Async front of a ``PolicyBackend`` for many concurrent trajectories (one event loop)."""

    def __init__(self, backend: PolicyBackend, *, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.backend = backend
        self.max_batch = max_batch
        self._pending: list[_Request] = []
        self._worker: asyncio.Task | None = None
        self._calls = 0
        self.batch_sizes: list[int] = []
        """Size of every backend call made so far."""

    async def generate(self, prompt: Sequence[int], sampling: SamplingParams) -> Completion:
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(list(prompt), sampling, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let trajectories that are ready right now join this batch
            batch = self._take_batch()
            budget = max(r.sampling.max_new_tokens for r in batch)
            sampling = dataclasses.replace(batch[0].sampling, max_new_tokens=budget)
            if sampling.seed is not None:  # distinct, reproducible draws per backend call
                sampling = dataclasses.replace(sampling, seed=sampling.seed + self._calls)
            self._calls += 1
            self.batch_sizes.append(len(batch))
            try:
                completions = await asyncio.to_thread(
                    self.backend.generate, [r.prompt for r in batch], sampling
                )
                if len(completions) != len(batch):
                    raise RuntimeError(
                        f"backend returned {len(completions)} completions for {len(batch)} prompts"
                    )
            except Exception as exc:  # every waiting trajectory learns what happened
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            for r, c in zip(batch, completions):
                if not r.future.done():
                    r.future.set_result(_cut(c, r.sampling.max_new_tokens))

    def _take_batch(self) -> list[_Request]:
        key = _batch_key(self._pending[0].sampling)
        batch, rest = [], []
        for r in self._pending:
            if len(batch) < self.max_batch and _batch_key(r.sampling) == key:
                batch.append(r)
            else:
                rest.append(r)
        self._pending = rest
        return batch


def _batch_key(sampling: SamplingParams) -> SamplingParams:
    return dataclasses.replace(sampling, max_new_tokens=0)


def _cut(c: Completion, budget: int) -> Completion:
    if len(c.token_ids) <= budget:
        return c
    return dataclasses.replace(
        c, token_ids=c.token_ids[:budget], logprobs=c.logprobs[:budget], finish_reason="length",
        text="",
    )
