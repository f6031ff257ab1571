"""Multi-turn rollouts of the tiny model on SearchEnv through the transformers backend."""

from __future__ import annotations

import asyncio

import gymnasium
import numpy as np
import pytest

from creditgym.agents.backend import SamplingParams
from creditgym.agents.chat import ChatRenderer
from creditgym.agents.hf_backend import TransformersBackend
from creditgym.agents.rollout import RolloutConfig, rollout
from creditgym.envs import AsyncWrapper
from creditgym.envs.search_env import SearchEnv
from creditgym.replay import TrajectoryWriter, read_trajectories
from creditgym.replay.verify import verify_trajectories

ENV_KWARGS = {"split": "test", "world_backend": "bm25s", "max_turns": 3}


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    b = TransformersBackend(tiny_model_dir, seed=0)
    yield b
    b.close()


@pytest.fixture(scope="module")
def shared_env_factory():
    first = SearchEnv(**ENV_KWARGS)
    yield lambda: SearchEnv(**ENV_KWARGS, retriever=first.retriever, tasks=first.tasks)
    first.close()


def config(**kw):
    sampling = SamplingParams(max_new_tokens=24, temperature=1.0, stop=("</search>", "</answer>"), seed=1)
    return RolloutConfig(**{"group_size": 3, "sampling": sampling, "check_prefix": True, **kw})


def test_rollout_records_exact_tokens_mask_and_logprobs(backend, shared_env_factory, tmp_path):
    env = shared_env_factory()
    tasks = env.tasks[:2]
    renderer = ChatRenderer(backend.tokenizer)
    path = tmp_path / "roll.jsonl"
    with TrajectoryWriter(path, {"model": "tiny"}) as writer:
        trajs = rollout(shared_env_factory, tasks, backend, renderer, config(),
                        env_id="creditgym/Search-v0", env_kwargs=ENV_KWARGS, on_trajectory=writer.write)
    assert len(trajs) == 6 and all(t.error is None for t in trajs)
    assert [t.group for t in trajs] == [tasks[0].id] * 3 + [tasks[1].id] * 3
    for t in trajs:
        assert 1 <= t.n_turns <= 3 and (t.terminated or t.truncated)
        tokens, mask = t.tokens(), t.loss_mask()
        assert int(mask.sum()) == sum(map(len, t.action_ids)) and len(tokens) == len(mask)
        assert t.anchors[0] == " ".join(tasks[0 if t.group == tasks[0].id else 1].question.split())
        # A fresh render re-tokenises the generated text, which a random model need not have
        # produced in canonical BPE form: mismatches may start in an action, never elsewhere.
        for p in t.metrics.get("rollout/prefix_mismatch_at", []):
            assert mask[p] == 1 or mask[p - 1] == 1
        # token-in/token-out: the recorded log-probs are the policy's log-probs of those very ids
        for turn in range(t.n_turns):
            start = len(t.prompt_ids) + sum(len(a) + len(o) for a, o in
                                             zip(t.action_ids[:turn], t.observation_ids[:turn]))
            scored = backend.score([tokens[:start].tolist()], [t.action_ids[turn]])[0]
            np.testing.assert_allclose(scored, t.action_logprobs[turn], atol=1e-4)
    # each record says where it came from: environment, options, reset seed (seed + task index)
    for t in trajs:
        index = 0 if t.group == tasks[0].id else 1
        assert (t.env_id, t.env_kwargs, t.seed) == ("creditgym/Search-v0", ENV_KWARGS, index)
        assert isinstance(t.created, float) and t.created > 1.7e9  # a wall-clock timestamp
        assert t.prompt_messages[0]["role"] == "system"  # the environment's instructions
    # the file written during the rollout re-steps identically through the environment
    again = read_trajectories(path)
    assert [t.id for t in again] == [t.id for t in trajs]
    assert [d for d in verify_trajectories(again) if d.kind == "diverged"] == []


def test_context_budget_caps_generation_and_drops_an_observation_that_does_not_fit(
        backend, shared_env_factory):
    # The limit is the real prompt (system prompt + question, rendered as rollout renders it)
    # plus k tokens: the first generation must be capped at k (max_new_tokens is 24), and the
    # observation after it no longer fits, so it is dropped and the episode truncated.
    env = shared_env_factory()
    task, k = env.tasks[0], 6
    renderer = ChatRenderer(backend.tokenizer)
    obs, info = env.reset(seed=0, options={"task": task})
    prompt = renderer.prompt_ids([{"role": "system", "content": info["system_prompt"]},
                                  {"role": "user", "content": obs}])
    limit = len(prompt) + k
    trajs = rollout(shared_env_factory, [task], backend, renderer,
                    config(group_size=3, max_context_tokens=limit, check_prefix=False))
    assert all(t.error is None for t in trajs)
    assert all(t.prompt_ids == prompt for t in trajs)
    for t in trajs:
        assert len(t.tokens()) <= limit
        assert t.n_turns == 1 and len(t.action_ids[0]) <= k
        if not t.terminated:  # no room left for the observation: dropped, truncated
            assert t.truncated and t.observation_ids[0] == []
    # the cap did the stopping (not a stop string): otherwise this test proves nothing
    assert any(len(t.action_ids[0]) == k and not t.terminated for t in trajs)


class ExplodingEnv(SearchEnv):
    def step(self, action):
        raise RuntimeError("tool backend on fire")

    async def astep(self, action):
        raise RuntimeError("tool backend on fire")


def test_a_failing_environment_marks_only_its_trajectory(backend, shared_env_factory):
    env = shared_env_factory()
    calls = {"n": 0}

    def make_env():
        calls["n"] += 1
        cls = ExplodingEnv if calls["n"] == 1 else SearchEnv
        return cls(**ENV_KWARGS, retriever=env.retriever, tasks=env.tasks)

    trajs = rollout(make_env, env.tasks[:1], backend, ChatRenderer(backend.tokenizer),
                    config(group_size=3, max_concurrency=3))
    errored = [t for t in trajs if t.error]
    assert len(errored) == 1 and "tool backend on fire" in errored[0].error
    assert all(t.n_turns >= 1 for t in trajs if not t.error)


def test_many_concurrent_trajectories_share_generation_batches(backend, shared_env_factory):
    env = shared_env_factory()
    cfg = config(group_size=8, max_generation_batch=64,
                 sampling=SamplingParams(max_new_tokens=8, stop=("</search>", "</answer>"), seed=3))
    trajs = rollout(shared_env_factory, env.tasks[:8], backend, ChatRenderer(backend.tokenizer), cfg)
    assert len(trajs) == 64 and all(t.error is None for t in trajs)
    assert len({t.id for t in trajs}) == 64


class Shout(gymnasium.ObservationWrapper):
    """A plain, sync gymnasium wrapper."""

    def observation(self, observation):
        return f"SHOUT {observation}"


class Whisper(AsyncWrapper):
    """An async-capable wrapper; counts the steps it saw on the event loop (the async path)."""

    on_loop = 0

    def observation(self, observation):
        try:
            asyncio.get_running_loop()
            Whisper.on_loop += 1
        except RuntimeError:  # reset, or a sync step in a worker thread
            pass
        return f"WHISPER {observation}"


@pytest.mark.parametrize("wrapper,mark", [(Shout, "SHOUT "), (Whisper, "WHISPER ")])
def test_an_observation_wrapper_changes_what_the_policy_sees_on_every_step(
        backend, shared_env_factory, wrapper, mark):
    Whisper.on_loop = 0
    renderer = ChatRenderer(backend.tokenizer)
    trajs = rollout(lambda: wrapper(shared_env_factory()), shared_env_factory().tasks[:2],
                    backend, renderer, config(group_size=2))
    assert all(t.error is None for t in trajs)
    seen = 0
    for t in trajs:
        assert t.prompt_messages[-1]["content"].startswith(mark)
        assert mark in backend.tokenizer.decode(t.prompt_ids)
        for turn in range(t.n_turns):
            assert t.observations[turn].startswith(mark)  # also what replay shows
            if t.observation_ids[turn]:  # appended to the context: the policy saw it
                assert mark in backend.tokenizer.decode(t.observation_ids[turn])
                seen += 1
    assert seen > 0  # some episode went past its first step, or this proves nothing on steps
    if wrapper is Whisper:  # stepped through its astep, on the loop, not in a thread
        assert Whisper.on_loop == sum(t.n_turns for t in trajs)


def test_a_share_of_the_tasks_with_their_keys_draws_what_the_whole_batch_draws(
        backend, shared_env_factory):
    # what a rank of `creditgym train --nproc N` does: its tasks, keyed by their batch position
    tasks = shared_env_factory().tasks[:3]
    renderer = ChatRenderer(backend.tokenizer)
    cfg = config(group_size=2, max_generation_batch=1)  # unbatched: same numerics either way
    whole = rollout(shared_env_factory, tasks, backend, renderer, cfg, seed=5)
    share = rollout(shared_env_factory, [tasks[0], tasks[2]], backend, renderer, cfg, seed=5,
                    task_keys=[0, 2])
    assert [t.id for t in share] == [t.id for t in whole[:2] + whole[4:]]
    for a, b in zip(share, whole[:2] + whole[4:]):
        assert a.action_ids == b.action_ids and a.observation_ids == b.observation_ids
    with pytest.raises(Exception, match="task_keys: need 2 distinct keys"):
        rollout(shared_env_factory, tasks[:2], backend, renderer, cfg, task_keys=[1, 1])


def test_rollout_from_inside_a_running_event_loop_and_its_progress_bar(
        backend, shared_env_factory, capsys):
    """Called where an event loop already runs (a notebook, an async server), ``rollout`` runs
    its own loop in a thread and returns the same trajectories; ``progress=True`` shows a bar of
    trajectories, and nothing is shown without it."""
    tasks = shared_env_factory().tasks[:1]
    renderer = ChatRenderer(backend.tokenizer)
    want = rollout(shared_env_factory, tasks, backend, renderer, config(group_size=2))
    assert "rollout" not in capsys.readouterr().err

    async def inside_a_loop():
        return rollout(shared_env_factory, tasks, backend, renderer, config(group_size=2),
                       progress=True)

    got = asyncio.run(inside_a_loop())
    assert len(got) == 2 and [t.action_ids for t in got] == [t.action_ids for t in want]
    bar = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
           if line.startswith("rollout:")]
    assert bar[-1].startswith("rollout: 100%") and " 2/2 " in bar[-1] and "traj/s" in bar[-1], bar

