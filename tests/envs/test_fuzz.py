"""Property tests: no action text, however malformed, makes an environment raise."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditgym.envs.task import Task
from creditgym.envs.tool_env import ToolEnv, ToolEnvConfig

FRAGMENTS = [
    "<think>", "</think>", "<search>", "</search>", "<answer>", "</answer>", "<calc>", "</calc>",
    "<tool_call>", "</tool_call>", '{"name": "search", "arguments": {"query": "x"}}',
    '{"name": "calc", "arguments": {"n": "7"}}', '{"name": "answer", "arguments": {"answer": 1}}',
    '{"name": ', '"arguments": ', "{", "}", "[", "]", '"', ":", ",", "null", "\n", " ", "Paris",
    "<information>", "</information>", "<", ">", "/", "\\", "\x00", "\U0001F600",
]


def search(query: str) -> str:
    """Search."""
    if "boom" in query:
        raise ValueError("boom")
    return f"found {query}"


def calc(n: int) -> int:
    """Double a number."""
    return 2 * n


TASKS = [Task("t", "Capital of France?", ["Paris"])]

actions = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=30).map("".join),
    st.builds(
        lambda name, args: f"<tool_call>{json.dumps({'name': name, 'arguments': args})}</tool_call>",
        st.sampled_from(["search", "calc", "answer", "other"]),
        st.dictionaries(st.sampled_from(["query", "n", "answer", "x"]),
                        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                  st.text(max_size=10), st.lists(st.integers(), max_size=3)),
                        max_size=3),
    ),
)


def check_step(env, text):
    obs, reward, terminated, truncated, info = env.step(text)
    assert isinstance(obs, str) and obs in env.observation_space
    assert isinstance(reward, float)
    assert isinstance(info["valid"], bool)
    if not info["valid"]:
        assert obs.strip() and info["error"]
        assert info["metrics"]["reward/invalid"] == -0.25
    assert math.isclose(reward, sum(v for k, v in info["metrics"].items() if k.startswith("reward/")))
    return terminated or truncated


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=1, max_size=4), st.sampled_from(["xml", "json"]),
       st.integers(1, 3))
def test_arbitrary_actions_never_raise(texts, syntax, max_calls):
    env = ToolEnv(
        [search, calc],
        tasks=TASKS,
        config=ToolEnvConfig(syntax=syntax, max_turns=3, max_calls_per_turn=max_calls,
                             max_observation_chars=256, tool_timeout_s=5.0,
                             reward={"invalid_penalty": 0.25, "search_cost": 0.0}),
    )
    env.reset(seed=0)
    for text in texts:
        if check_step(env, text):
            env.reset(seed=0)
    env.close()


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_sampled_actions_from_the_action_space(seed):
    env = ToolEnv([search], tasks=TASKS, config=ToolEnvConfig(max_action_chars=2000))
    env.reset(seed=seed)
    env.action_space.seed(seed)
    obs, _, _, _, info = env.step(env.action_space.sample())
    assert obs in env.observation_space and info["valid"] in (True, False)
    env.close()
