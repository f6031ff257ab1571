"""End-to-end rollouts of the tiny model on SearchEnv through the HTTP backend.

A real ``BackgroundPolicyServer`` (a transformers backend behind vLLM's completions API) on
127.0.0.1 serves ``OpenAICompatibleBackend``; the same rollout code that drives the in-process
backend drives it. Checked: trajectories complete, recorded log-probs are the policy's own
(``score`` in process), greedy rollouts over HTTP equal greedy in-process ones token for token, and
a server that dies mid-rollout errors the trajectories that still needed it without crashing the
batch.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from creditgym.agents.backend import SamplingParams
from creditgym.agents.chat import ChatRenderer
from creditgym.agents.hf_backend import TransformersBackend
from creditgym.agents.openai_backend import OpenAICompatibleBackend
from creditgym.agents.policy_server import BackgroundPolicyServer
from creditgym.agents.rollout import SEARCH_R1_STOPS, RolloutConfig, rollout
from creditgym.envs.factory import env_factory

ENV_ID = "creditgym/Search-v0"
ENV_KWARGS = {"split": "test", "world_backend": "bm25s", "max_turns": 3}


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    """The in-process reference policy."""
    backend = TransformersBackend(tiny_model_dir, seed=0)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    """The same weights behind a real HTTP server on a free local port."""
    backend = TransformersBackend(tiny_model_dir, seed=0)
    with BackgroundPolicyServer(backend, "tiny") as server:
        yield server
    backend.close()


@pytest.fixture(scope="module")
def make_env():
    return env_factory(ENV_ID, ENV_KWARGS)


@pytest.fixture(scope="module")
def tasks(make_env):
    return list(make_env().unwrapped.tasks[:2])


def http_backend(url: str, **kw) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(url, "tiny", on_error="completion", **kw)


def config(temperature: float, **kw) -> RolloutConfig:
    sampling = SamplingParams(max_new_tokens=24, temperature=temperature, stop=SEARCH_R1_STOPS)
    return RolloutConfig(**{"group_size": 3, "sampling": sampling, **kw})


def run(make_env, tasks, backend, renderer, cfg, **kw):
    return rollout(make_env, tasks, backend, renderer, cfg, env_id=ENV_ID, env_kwargs=ENV_KWARGS, **kw)


def action_start(t, turn: int) -> int:
    """Position of the first id of ``turn``'s action in ``t.tokens()``."""
    return len(t.prompt_ids) + sum(
        len(a) + len(o) for a, o in zip(t.action_ids[:turn], t.observation_ids[:turn])
    )


def test_http_rollout_completes_and_records_the_policys_own_logprobs(local, served, make_env, tasks):
    renderer = ChatRenderer(local.tokenizer)
    with http_backend(served.url) as remote:
        trajs = run(make_env, tasks, remote, renderer, config(1.0))
    assert len(trajs) == 6 and [t.error for t in trajs] == [None] * 6
    assert [t.id for t in trajs] == [f"{task.id}/{m}" for task in tasks for m in range(3)]
    for t in trajs:
        assert 1 <= t.n_turns <= 3 and (t.terminated or t.truncated)
        assert set(t.finish_reasons) <= {"stop", "length"}
        tokens, mask = t.tokens(), t.loss_mask()
        assert int(mask.sum()) == sum(map(len, t.action_ids)) == sum(map(len, t.action_logprobs))
        for turn in range(t.n_turns):
            start = action_start(t, turn)
            assert tokens[start : start + len(t.action_ids[turn])].tolist() == t.action_ids[turn]
            scored = local.score([tokens[:start].tolist()], [t.action_ids[turn]])[0]
            np.testing.assert_allclose(t.action_logprobs[turn], scored, atol=1e-4)
    # sampling at temperature 1 actually explored: the group members are not all one trajectory
    assert len({tuple(t.tokens().tolist()) for t in trajs}) > 2


def test_greedy_http_rollout_equals_greedy_in_process_rollout(local, served, make_env, tasks):
    renderer = ChatRenderer(local.tokenizer)
    in_process = run(make_env, tasks, local, renderer, config(0.0, group_size=2))
    with http_backend(served.url) as remote:
        over_http = run(make_env, tasks, remote, renderer, config(0.0, group_size=2))
    assert all(t.error is None for t in in_process + over_http)
    for a, b in zip(in_process, over_http, strict=True):
        assert a.id == b.id and a.prompt_ids == b.prompt_ids
        assert a.action_ids == b.action_ids  # token for token
        assert a.observation_ids == b.observation_ids and a.actions == b.actions
        assert a.rewards == b.rewards and a.finish_reasons == b.finish_reasons
        assert (a.terminated, a.truncated) == (b.terminated, b.truncated)
        for lp_a, lp_b in zip(a.action_logprobs, b.action_logprobs, strict=True):
            np.testing.assert_allclose(lp_a, lp_b, atol=1e-4)


def test_server_killed_mid_rollout_errors_the_remaining_trajectories(tiny_model_dir, local, make_env,
                                                                     tasks):
    """What happens: the trajectory that finished before the kill is complete; every later
    generation request finds nothing listening, is retried ``retries`` times, and comes back as a
    ``finish_reason="error"`` completion (``on_error="completion"``) naming the URL; the rollout
    turns that into ``traj.error`` (``RuntimeError: backend error: ... unreachable ...``) with the
    turns done so far, and returns every trajectory of the batch."""
    backend = TransformersBackend(tiny_model_dir, seed=0)
    server = BackgroundPolicyServer(backend, "tiny").start()
    finished: list[str] = []

    def kill_after_first(traj) -> None:
        finished.append(traj.id)
        if len(finished) == 1:
            # Stopped from another thread; waiting for it makes "after the first" exact (one
            # trajectory in flight at a time), so every later request meets a dead server.
            killer = threading.Thread(target=server.stop, name="kill-policy-server")
            killer.start()
            killer.join(timeout=60)
            assert not killer.is_alive()

    try:
        with http_backend(server.url, retries=1, backoff=0.01, timeout=10) as remote:
            trajs = run(make_env, tasks, remote, ChatRenderer(local.tokenizer),
                        config(1.0, group_size=2, max_concurrency=1), on_trajectory=kill_after_first)
    finally:
        server.stop()
        backend.close()
    assert len(trajs) == 4 and finished == [t.id for t in trajs]
    first, rest = trajs[0], trajs[1:]
    assert first.error is None and first.n_turns >= 1 and (first.terminated or first.truncated)
    for t in rest:
        assert t.error is not None and t.error.startswith("RuntimeError: backend error:")
        assert "unreachable after 2 attempts" in t.error and server.url in t.error
        # errored before its first action: the prompt is recorded, no turn is invented
        assert t.prompt_ids and t.n_turns == 0 and not (t.terminated or t.truncated)


def test_server_killed_while_trajectories_run_never_crashes_the_batch(tiny_model_dir, local,
                                                                     make_env, tasks):
    """Eight greedy trajectories at once; another thread stops the server as soon as it has served
    the first turn's prompts, while every trajectory still runs. Each trajectory comes back either
    complete or errored with the unreachable-server message, and what it recorded is exactly a
    prefix of the same greedy rollout in process: nothing is lost, nothing raises, nothing is
    recorded from a half-answered request."""
    renderer = ChatRenderer(local.tokenizer)
    cfg = config(0.0, group_size=4, max_concurrency=8)
    reference = run(make_env, tasks, local, renderer, cfg)
    needed = sum(t.n_turns for t in reference)  # generation requests a full rollout makes
    assert needed > 8, "the greedy reference must need more than its first turn"
    backend = TransformersBackend(tiny_model_dir, seed=0)
    server = BackgroundPolicyServer(backend, "tiny").start()
    url, at_kill = server.url, {}

    def kill_after_first_turn() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                health = json.load(answer)
            if health["prompts"] >= 8:
                break
            time.sleep(0.002)
        at_kill.update(health)
        server.stop()

    killer = threading.Thread(target=kill_after_first_turn, name="kill-policy-server")
    killer.start()
    try:
        with http_backend(url, retries=1, backoff=0.01, timeout=10) as remote:
            trajs = run(make_env, tasks, remote, renderer, cfg)
    finally:
        killer.join(timeout=60)
        server.stop()
        backend.close()
    assert len(trajs) == 8 and [t.id for t in trajs] == [t.id for t in reference]
    errored = [t for t in trajs if t.error is not None]
    if at_kill["prompts"] < needed:  # killed mid-rollout (the usual case): someone noticed
        assert errored
    for t, ref in zip(trajs, reference):
        assert t.action_ids == ref.action_ids[: t.n_turns]
        assert t.observation_ids == ref.observation_ids[: t.n_turns]
        if t.error is None:
            assert t.n_turns == ref.n_turns and (t.terminated, t.truncated) == (ref.terminated,
                                                                                 ref.truncated)
        else:
            assert "backend error" in t.error and "unreachable" in t.error
            assert t.n_turns < ref.n_turns and not (t.terminated or t.truncated)
