"""ToolEnv: the environment contract, both syntaxes, rewards, limits, failures, determinism."""

from __future__ import annotations

import asyncio
import time

import pytest

from creditgym.envs.rewards import RewardConfig
from creditgym.envs.task import Task
from creditgym.envs.tool_env import (
    ToolEnv,
    ToolEnvConfig,
    WideText,
    canonical_anchor,
    sanitize_text,
    truncate_text,
)
from creditgym.errors import ConfigError, EnvUsageError, ToolDefinitionError

TASKS = [
    Task("t0", "Who wrote Hamlet?", ["William Shakespeare", "Shakespeare"], "test"),
    Task("t1", "Capital of France?", ["Paris"], "test"),
    Task("t2", "What is 6*7?", ["42"], "test"),
]


def search(query: str) -> str:
    """Look something up.

    Args:
        query: The search query.
    """
    return f"results for {query}"


async def asearch(query: str, k: int = 2) -> list[str]:
    """Look something up, asynchronously."""
    await asyncio.sleep(0)
    return [f"{query}-{i}" for i in range(k)]


def boom(query: str) -> str:
    """Always fails."""
    raise RuntimeError("index offline")


def slow(query: str) -> str:
    """Takes too long."""
    time.sleep(0.5)
    return "late"


async def aslow(query: str) -> str:
    """Takes too long, asynchronously."""
    await asyncio.sleep(30)
    return "late"


def make(**cfg) -> ToolEnv:
    syntax = cfg.pop("syntax", "xml")
    tools = cfg.pop("tools", [search, boom, slow, aslow])
    return ToolEnv(tools, tasks=TASKS, config=ToolEnvConfig(syntax=syntax, **cfg))


def test_reset_info_and_task_pinning():
    env = make()
    obs, info = env.reset(seed=3)
    assert obs in env.observation_space
    assert obs == info["task"]["question"]
    assert set(info) == {"task", "anchor", "tools", "system_prompt", "syntax", "turn"}
    assert info["task"]["golden_answers"] and info["task"]["id"]
    assert [t["function"]["name"] for t in info["tools"]] == ["search", "boom", "slow", "aslow", "answer"]
    assert "<search>query</search>" in info["system_prompt"]
    obs, info = env.reset(options={"task": TASKS[1]})
    assert obs == "Capital of France?" and info["task"]["id"] == "t1"
    obs, info = env.reset(options={"task": TASKS[2].to_dict()})
    assert info["task"]["id"] == "t2"
    with pytest.raises(EnvUsageError):
        env.reset(options={"taks": TASKS[0]})


def test_seeded_draws_are_deterministic():
    a, b = make(), make()
    seq_a = [a.reset(seed=s)[1]["task"]["id"] for s in range(20)]
    seq_b = [b.reset(seed=s)[1]["task"]["id"] for s in range(20)]
    assert seq_a == seq_b and len(set(seq_a)) > 1


def test_xml_episode_with_correct_answer():
    env = make(reward=RewardConfig(em=1.0, f1=0.5, search_cost=0.1))
    env.reset(options={"task": TASKS[0]})
    obs, reward, term, trunc, info = env.step("<think>look it up</think><search>Hamlet author</search>")
    assert obs == "\n<result>\nresults for Hamlet author\n</result>\n"
    assert (reward, term, trunc, info["valid"]) == (pytest.approx(-0.1), False, False, True)
    assert info["tool_calls"] == [{"name": "search", "arguments": {"query": "Hamlet author"},
                                   "ok": True, "error": None}]
    assert info["metrics"] == {"reward/invalid": 0.0, "reward/search_cost": pytest.approx(-0.1),
                               "reward": pytest.approx(-0.1)}
    obs, reward, term, trunc, info = env.step("<answer> shakespeare </answer>")
    assert term and not trunc and obs == "" and info["answer"] == "shakespeare"
    m = info["metrics"]
    assert m["em"] == 1.0 and m["f1"] == 1.0 and m["well_formed"] == 1.0
    assert m["reward/outcome"] == pytest.approx(1.5) and reward == pytest.approx(1.5)
    assert m["calls/search"] == 1.0 and m["turns"] == 2.0
    assert reward == pytest.approx(sum(v for k, v in m.items() if k.startswith("reward/")))
    with pytest.raises(EnvUsageError):
        env.step("<answer>again</answer>")


def test_json_episode_and_async_tool():
    env = make(syntax="json", tools=[asearch])
    env.reset(options={"task": TASKS[1]})
    obs, reward, term, _, info = env.step(
        '<tool_call>{"name": "asearch", "arguments": {"query": "France", "k": "3"}}</tool_call>'
    )
    assert info["valid"] and obs == '["France-0", "France-1", "France-2"]'
    assert info["tool_calls"][0]["arguments"] == {"query": "France", "k": 3}
    obs, reward, term, _, info = env.step(
        '<tool_call>{"name": "answer", "arguments": {"answer": "Paris"}}</tool_call>'
    )
    assert term and reward == 1.0


def test_astep_inside_a_running_loop_and_step_from_one():
    env = make(tools=[asearch])

    async def go():
        env.reset(options={"task": TASKS[1]})
        r1 = await env.astep("<asearch>x</asearch>")
        r2 = env.step("<asearch>y</asearch>")  # sync step from inside a running loop
        return r1, r2

    r1, r2 = asyncio.run(go())
    assert r1[4]["valid"] and r2[4]["valid"] and "y-0" in r2[0]


@pytest.mark.parametrize(
    "action,fragment",
    [
        ("I think it is Paris.", "no tool call found"),
        ("<search>a</search><search>b</search>", "2 tool calls in one turn"),
        ("<lookup>x</lookup>", "unknown tool <lookup>"),
        ("<search>x</search><answer>y</answer>", "2 tool calls in one turn"),
        ("<boom>x</boom>", "index offline"),
        ("<slow>x</slow>", "timed out after 0.2 s"),
        ("<aslow>x</aslow>", "timed out after 0.2 s"),
    ],
)
def test_invalid_actions_xml(action, fragment):
    env = make(tool_timeout_s=0.2, reward=RewardConfig(invalid_penalty=0.5))
    env.reset(options={"task": TASKS[0]})
    obs, reward, term, trunc, info = env.step(action)
    assert not info["valid"] and not term and not trunc
    assert fragment in obs and fragment in info["error"]
    assert reward == -0.5 and info["metrics"]["reward/invalid"] == -0.5
    assert obs in env.observation_space


@pytest.mark.parametrize(
    "action,fragment",
    [
        ("<tool_call>{broken</tool_call>", "not valid JSON"),
        ('<tool_call>{"name": "nope", "arguments": {}}</tool_call>', "unknown tool 'nope'"),
        ('<tool_call>{"name": "search", "arguments": {"q": 1}}</tool_call>', "unknown argument(s) 'q'"),
        ('<tool_call>{"name": "search", "arguments": {}}</tool_call>', "missing required argument(s) 'query'"),
        ('<tool_call>{"name": "answer", "arguments": {"answer": ["x"]}}</tool_call>', "must be a string"),
    ],
)
def test_invalid_actions_json(action, fragment):
    env = make(syntax="json")
    env.reset(options={"task": TASKS[0]})
    obs, reward, term, _, info = env.step(action)
    assert not info["valid"] and not term and reward == 0.0
    assert fragment in obs


def test_multiple_calls_when_allowed():
    env = make(max_calls_per_turn=2, tools=[search, asearch])
    env.reset(options={"task": TASKS[0]})
    obs, _, _, _, info = env.step("<search>a</search><asearch>b</asearch>")
    assert info["valid"] and "results for a" in obs and "b-1" in obs
    obs, _, _, _, info = env.step("<search>a</search><answer>b</answer>")
    assert not info["valid"] and "answer must be the only call" in obs


def test_max_turns_truncates_with_outcome_on_last_step():
    env = make(max_turns=2, reward=RewardConfig(format=0.2))
    env.reset(options={"task": TASKS[0]})
    *_, trunc, info = env.step("<search>a</search>")
    assert not trunc and "em" not in info["metrics"]
    _, reward, term, trunc, info = env.step("<search>b</search>")
    assert trunc and not term and reward == 0.0
    assert info["metrics"]["answered"] == 0.0 and info["metrics"]["em"] == 0.0


def test_format_shaping():
    env = make(reward=RewardConfig(format=0.2))
    env.reset(options={"task": TASKS[1]})
    env.step("<search>a</search>")
    *_, info = env.step("<answer>Lyon</answer>")
    assert info["metrics"]["reward/format"] == pytest.approx(0.2)  # well formed, wrong
    env.reset(options={"task": TASKS[1]})
    env.step("no call")
    _, reward, *_ = env.step("<answer>Paris</answer>")
    assert reward == pytest.approx(0.8)  # right but malformed
    env = make(reward=RewardConfig(format=0.2, format_requires_think=True))
    env.reset(options={"task": TASKS[1]})
    *_, info = env.step("<answer>Lyon</answer>")
    assert info["metrics"]["well_formed"] == 0.0


def test_observation_truncation_and_sanitising():
    def big(query: str) -> str:
        """Returns a lot."""
        return "x" * 5000 + "\x00\U0001F600"

    env = make(tools=[big], max_observation_chars=200)
    env.reset(options={"task": TASKS[0]})
    obs, *_ = env.step("<big>q</big>")
    assert len(obs) <= 200 and obs.endswith("characters]") and "[... truncated " in obs
    assert obs in env.observation_space
    assert sanitize_text("a\x00b\U0001F600") == "a\ufffdb\ufffd"
    assert truncate_text("abc", 10) == "abc"
    t = truncate_text("y" * 1000, 100)
    assert len(t) == 100 and t.endswith(f"[... truncated {1000 - t.index(chr(10))} characters]")


def test_long_prompt_is_truncated_too():
    env = ToolEnv([search], tasks=[Task("long", "q" * 10_000, ["a"])],
                  config=ToolEnvConfig(max_observation_chars=100))
    obs, _ = env.reset(seed=0)
    assert len(obs) <= 100 and obs in env.observation_space


def test_determinism_same_seed_same_actions():
    actions = ["<search>a</search>", "garbage", "<search>b</search>", "<answer>Paris</answer>"]

    def run():
        env = make(reward=RewardConfig(invalid_penalty=0.1, search_cost=0.05, format=0.1))
        out = [env.reset(seed=7)]
        for a in actions:
            out.append(env.step(a))
            if out[-1][2] or out[-1][3]:
                break
        return out

    assert run() == run()


def test_usage_errors_and_definition_errors():
    env = make()
    with pytest.raises(EnvUsageError):
        env.step("<answer>x</answer>")
    with pytest.raises(EnvUsageError):
        ToolEnv([search]).reset()
    with pytest.raises(ToolDefinitionError):
        ToolEnv([search, search])

    def answer(x: str) -> str:
        """Clashes with the built-in."""
        return x

    with pytest.raises(ToolDefinitionError):
        ToolEnv([answer])

    def two(a: str, b: str) -> str:
        """Two required parameters."""
        return a + b

    with pytest.raises(ToolDefinitionError, match="syntax='json'"):
        ToolEnv([two], syntax="xml")
    ToolEnv([two], syntax="json")
    with pytest.raises(ConfigError):
        ToolEnvConfig(max_turns=0)
    with pytest.raises(ConfigError):
        ToolEnv([search], config={"max_turn": 3})


def test_config_from_dict_and_non_text_action():
    env = ToolEnv([search], tasks=TASKS, config={"syntax": "json", "reward": {"em": 2.0}})
    assert env.config.syntax == "json" and env.config.reward.em == 2.0
    env.reset(seed=0)
    obs, _, _, _, info = env.step(None)
    assert not info["valid"] and "must be text" in obs


def test_custom_hooks():
    class Numeric(ToolEnv):
        def reward(self, task, answer):
            try:
                close = abs(float(answer) - float(task.golden_answers[0])) < 1e-6
            except (TypeError, ValueError):
                close = False
            return {"reward": float(close), "correct": float(close), "reward/bonus": 0.25}

        def render_tool_result(self, name, result):
            return f"[{name}] {result.value if result.ok else result.error}"

    env = Numeric([search], tasks=TASKS)
    env.reset(options={"task": TASKS[2]})
    obs, *_ = env.step("<search>q</search>")
    assert obs == "[search] results for q"
    _, reward, term, _, info = env.step("<answer>42.0</answer>")
    assert term and reward == 1.25 and info["metrics"]["reward/bonus"] == 0.25


def test_wide_text_space():
    space = WideText(50)
    assert "héllo 世界\n\t" in space and "\x00" not in space and "\U0001F600" not in space
    assert len(repr(space)) < 120
    import copy
    import pickle

    assert copy.deepcopy(space) == space and pickle.loads(pickle.dumps(space)) == space
    space.seed(0)
    assert space.sample() in space


def test_anchor_is_the_canonical_observation_text():
    env = make()
    obs, i1 = env.reset(options={"task": TASKS[0]})
    assert i1["anchor"] == "Who wrote Hamlet?" == canonical_anchor(obs)
    obs, *_, s1 = env.step("<search>x</search>")
    assert s1["anchor"] == "<result> results for x </result>" == canonical_anchor(obs)
    env.reset(options={"task": TASKS[0]})
    *_, s_other = env.step("<search>y</search>")
    *_, s2 = env.step("<search>x</search>")
    assert s1["anchor"] == s2["anchor"] != i1["anchor"]  # identical states compare equal
    assert s_other["anchor"] != s1["anchor"]  # different observations differ
    _, i2 = env.reset(options={"task": TASKS[1]})
    assert i2["anchor"] != i1["anchor"]
    # whitespace variants of one observation compare equal; the anchor is text, not a hash
    spaced = Task("t9", "  Who   wrote\n\tHamlet? ", ["Shakespeare"], "test")
    _, i3 = env.reset(options={"task": spaced})
    assert i3["anchor"] == i1["anchor"]
    assert canonical_anchor(" a \n\n b\t c  ") == "a b c" and canonical_anchor(" \n ") == ""


def test_render_ansi():
    env = ToolEnv([search], tasks=TASKS, render_mode="ansi")
    env.reset(options={"task": TASKS[0]})
    env.step("<search>q</search>")
    assert "Who wrote Hamlet?" in env.render() and "results for q" in env.render()
    env.close()
    env.close()
