"""GenerationBatcher modes on the real tiny transformers backend: ``free`` batches whatever is
queued, ``rounds`` waits for every live trajectory and orders a round by key, ``alone`` sends
one prompt per call."""

from __future__ import annotations

import asyncio
import threading

import pytest

from creditgym.agents.backend import SamplingParams
from creditgym.agents.generation_batcher import GenerationBatcher
from creditgym.agents.hf_backend import TransformersBackend
from creditgym.errors import ConfigError

SAMPLING = SamplingParams(max_new_tokens=4, temperature=1.0)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    b = TransformersBackend(tiny_model_dir, seed=0)
    yield b
    b.close()


class Gated:
    """The real backend, with every call recorded and, while ``gate`` is clear, held at its
    start (so the test decides what is queued while a call is in flight)."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []
        self.gate, self.started = threading.Event(), threading.Event()
        self.gate.set()

    def generate(self, prompts, sampling, *, seeds=None):
        self.calls.append([list(p) for p in prompts])
        self.started.set()
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        return self.backend.generate(prompts, sampling, seeds=seeds)


def prompt(backend, i: int) -> list[int]:
    return backend.tokenizer.encode(f"question number {i} about a city")


def seeded(i: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=4, temperature=1.0, seed=100 + i)


async def until(condition, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached before the timeout"
        await asyncio.sleep(0.005)


def test_free_mode_batches_whatever_is_queued(backend):
    gated = Gated(backend)

    async def main():
        batcher = GenerationBatcher(gated, max_batch=8, mode="free")
        gated.gate.clear()
        first = asyncio.create_task(batcher.generate(prompt(backend, 0), seeded(0)))
        await until(gated.started.is_set)  # call 1 (just the first request) is in flight
        later = [asyncio.create_task(batcher.generate(prompt(backend, i), seeded(i)))
                 for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        gated.gate.set()
        results = await asyncio.gather(first, *later)
        return batcher, results

    batcher, results = asyncio.run(main())
    # the three queued during call 1 went out together, in arrival order
    assert batcher.batch_sizes == [1, 3]
    assert gated.calls == [[prompt(backend, 0)], [prompt(backend, i) for i in (1, 2, 3)]]
    for i, c in enumerate(results):  # each requester got its own completion
        assert c.token_ids == backend.generate([prompt(backend, i)], SAMPLING,
                                               seeds=[100 + i])[0].token_ids


def test_rounds_wait_for_every_live_trajectory_and_sort_by_key(backend):
    gated = Gated(backend)
    keys = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]

    async def main():
        batcher = GenerationBatcher(gated, max_batch=2, mode="rounds")
        for k in keys:
            batcher.join(k)
        # arrivals in reverse key order; the round must wait for the last live trajectory
        tasks = {k: asyncio.create_task(batcher.generate(prompt(backend, n), seeded(n), key=k))
                 for n, k in reversed(list(enumerate(keys))) if k != (0, 1)}
        await asyncio.sleep(0.05)
        assert gated.calls == [] and batcher.rounds == 0
        tasks[(0, 1)] = asyncio.create_task(batcher.generate(prompt(backend, 1), seeded(1),
                                                             key=(0, 1)))
        first = await asyncio.gather(*(tasks[k] for k in keys))
        # round 2: (1, 1) leaves instead of asking; the others' round then goes at once
        again = [asyncio.create_task(batcher.generate(prompt(backend, n), seeded(n), key=k))
                 for n, k in enumerate(keys) if k != (1, 1)]
        await asyncio.sleep(0.05)
        assert batcher.rounds == 1
        batcher.leave((1, 1))
        await asyncio.gather(*again)
        return batcher, first

    batcher, first = asyncio.run(main())
    ordered = [prompt(backend, n) for n in range(5)]
    # sorted by key, cut into calls of max_batch
    assert gated.calls[:3] == [ordered[0:2], ordered[2:4], ordered[4:5]]
    assert gated.calls[3:] == [ordered[0:2], [ordered[2], ordered[4]]]
    assert batcher.batch_sizes == [2, 2, 1, 2, 2] and batcher.rounds == 2
    for n, c in enumerate(first):
        assert c.token_ids == backend.generate([ordered[n]], SAMPLING,
                                               seeds=[100 + n])[0].token_ids


def test_rounds_refuse_unknown_or_duplicate_keys_and_alone_sends_one_prompt(backend):
    async def main():
        rounds = GenerationBatcher(backend, mode="rounds")
        with pytest.raises(ValueError, match="did not join"):
            await rounds.generate(prompt(backend, 0), SAMPLING, key=(0, 0))
        rounds.join((0, 0))
        with pytest.raises(ValueError, match="joined twice"):
            rounds.join((0, 0))
        alone = GenerationBatcher(backend, max_batch=64, mode="alone")
        await asyncio.gather(*(alone.generate(prompt(backend, i), seeded(i)) for i in range(3)))
        return alone

    assert asyncio.run(main()).batch_sizes == [1, 1, 1]
    with pytest.raises(ConfigError, match="rounds"):
        GenerationBatcher(backend, mode="lockstep")  # type: ignore[arg-type]


class DropsARow:
    """The real backend with a bug: it loses the last completion of every call."""

    def __init__(self, backend):
        self.backend = backend

    def generate(self, prompts, sampling, *, seeds=None):
        return self.backend.generate(prompts, sampling, seeds=seeds)[:-1]


def test_a_miscounted_backend_call_fails_every_request_in_it(backend):
    batcher = GenerationBatcher(DropsARow(backend), max_batch=8, mode="free")

    async def go():
        return await asyncio.gather(*(batcher.generate(prompt(backend, i), SAMPLING)
                                      for i in range(3)), return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(go(), 60))
    assert batcher.batch_sizes == [3]
    assert all(isinstance(r, RuntimeError) and "2 results for 3 prompts" in str(r)
               for r in results)
