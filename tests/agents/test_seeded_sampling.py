"""Reproducible sampling: a trajectory's draws depend on (seed, task, member, turn), never on
how its generation requests were batched, on the transformers backend (a real tiny model); and
with ``rounds`` or ``alone`` batching its log-probs are bit-identical too, however fast the
environments answered."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from creditgym.agents.backend import SamplingParams
from creditgym.agents.chat import ChatRenderer
from creditgym.agents.generation_batcher import accepts_seeds
from creditgym.agents.hf_backend import TransformersBackend
from creditgym.agents.rollout import RolloutConfig, rollout, stream_seed
from creditgym.envs.search_env import SearchEnv

pytestmark = pytest.mark.slow  # end-to-end runs or subprocesses: scheduled first

ENV_KWARGS = {"split": "test", "world_backend": "bm25s", "max_turns": 3}
SAMPLING = SamplingParams(max_new_tokens=16, temperature=1.0, stop=("</search>", "</answer>"),
                          seed=7)


@pytest.fixture(scope="module")
def shared_env_factory():
    first = SearchEnv(**ENV_KWARGS)
    yield lambda: SearchEnv(**ENV_KWARGS, retriever=first.retriever, tasks=first.tasks)
    first.close()


def records(trajs):
    return [{k: v for k, v in t.to_dict().items() if k != "created"} for t in trajs]


def test_stream_seed_is_stable_and_separates_keys():
    # a fixed value: the same in every process (Python's hash() is salted per process)
    assert stream_seed(0, "train", 3) == stream_seed(0, "train", 3) == 8709003995947048211
    seeds = {stream_seed(s, t, m, k) for s in range(3) for t in range(4) for m in range(4)
             for k in range(4)}
    assert len(seeds) == 3 * 4 * 4 * 4 and all(0 <= x < 2**63 for x in seeds)
    assert stream_seed(1, 23) != stream_seed(12, 3) and stream_seed("1") != stream_seed(1)


def test_per_row_seeds_do_not_depend_on_batch_mates(tiny_model_dir):
    backend = TransformersBackend(tiny_model_dir, seed=0)
    try:
        assert accepts_seeds(backend)
        prompt = backend.tokenizer.encode("Who founded the city?")
        others = [backend.tokenizer.encode(f"question {i} about a place") for i in range(5)]
        sampling = SamplingParams(max_new_tokens=12, temperature=1.0)
        alone = backend.generate([prompt], sampling, seeds=[11])[0]
        batch = [*others[:3], prompt, *others[3:]]
        mixed = backend.generate(batch, sampling, seeds=[1, 2, 3, 11, 4, 5])
        assert alone.token_ids == mixed[3].token_ids
        assert alone.logprobs == pytest.approx(mixed[3].logprobs, abs=1e-4)
        # the same call again (same prompts, order, seeds): the same floats, bit for bit
        again = backend.generate(batch, sampling, seeds=[1, 2, 3, 11, 4, 5])
        assert [(c.token_ids, c.logprobs) for c in again] == [
            (c.token_ids, c.logprobs) for c in mixed]
        # same prompt, different seeds: different draws (so group members differ)
        draws = backend.generate([prompt] * 4, sampling, seeds=[21, 22, 23, 24])
        assert len({tuple(c.token_ids) for c in draws}) > 1
    finally:
        backend.close()


class SleepyEnv(SearchEnv):
    """SearchEnv whose reset and steps take a random time from ``delays`` (a seeded Random),
    so trajectories reach the batcher in a different order in every run."""

    delays: random.Random

    def reset(self, *, seed=None, options=None):
        time.sleep(self.delays.uniform(0, 0.01))
        return super().reset(seed=seed, options=options)

    async def astep(self, action):
        await asyncio.sleep(self.delays.uniform(0, 0.01))
        return await super().astep(action)


def sleepy_factory(shared_env_factory, delay_seed: int):
    first = shared_env_factory()
    delays = random.Random(delay_seed)

    def make():
        env = SleepyEnv(**ENV_KWARGS, retriever=first.retriever, tasks=first.tasks)
        env.delays = delays
        return env
    return make


class CallLog:
    """Records every generate call (its prompts and seeds) of the real backend it wraps."""

    def __init__(self, backend):
        self.calls, self._generate = [], backend.generate
        backend.generate = self.generate

    def generate(self, prompts, sampling, *, seeds=None, **kw):
        self.calls.append((tuple(map(tuple, prompts)), tuple(seeds or ())))
        return self._generate(prompts, sampling, seeds=seeds, **kw)


@pytest.mark.parametrize("mode", ["alone", "rounds", "free"])
def test_rollout_is_identical_whatever_the_timing(tiny_model_dir, shared_env_factory, mode):
    """Each run's environments sleep a differently seeded random time before every reset and
    step, so requests arrive in another order each run. ``alone``: identical records byte for
    byte even across batch sizes and concurrency; ``rounds``: identical records and identical
    backend calls for one config (batches of 4, 9 trajectories of which 5 at a time);
    ``free``: the same tokens (log-probs may move in the last bits)."""
    backend = TransformersBackend(tiny_model_dir, seed=0, max_batch_size=4)
    log = CallLog(backend)
    try:
        renderer = ChatRenderer(backend.tokenizer)
        tasks = shared_env_factory().tasks[:3]
        settings = [(4, 5), (4, 5)] if mode == "rounds" else [(64, 256), (1, 256), (4, 2)]
        runs, calls = [], []
        for delay_seed, (batch, concurrency) in enumerate(settings):
            config = RolloutConfig(group_size=3, sampling=SAMPLING, max_generation_batch=batch,
                                   max_concurrency=concurrency, max_context_tokens=1024,
                                   batching=mode)
            log.calls.clear()
            runs.append(rollout(sleepy_factory(shared_env_factory, delay_seed), tasks, backend,
                                renderer, config, seed=3))
            calls.append(list(log.calls))
        assert all(t.error is None for run in runs for t in run)
        if mode == "free":
            tokens = [[(t.action_ids, t.actions) for t in run] for run in runs]
            assert all(tok == tokens[0] for tok in tokens)
        else:
            assert all(records(run) == records(runs[0]) for run in runs)
        if mode == "rounds":
            assert calls[0] == calls[1]
            sizes = [len(prompts) for prompts, _ in calls[0]]
            assert max(sizes) == 4 and len(sizes) > 3  # batched, in several rounds
        if mode == "alone":
            assert {len(prompts) for call in calls for prompts, _ in call} == {1}
        # group members sample differently (one shared seed per call would make them equal)
        assert len({tuple(map(tuple, t.action_ids)) for t in runs[0][:3]}) > 1
    finally:
        backend.close()
