"""What a misbehaving tool can do to ToolEnv: never an exception, never a missed timeout, never a
thread per timed-out call, and with the process executor a stuck tool is really killed."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings

import pytest
from gymnasium.utils.env_checker import check_env

from creditgym.envs.task import Task
from creditgym.envs.tool_env import ToolEnv, ToolEnvConfig
from creditgym.envs.tools import Tool, ToolRunner, run_tool
from creditgym.errors import ConfigError, ToolDefinitionError
from tests.envs.process_tools import echo, hard_exit, spin, unsendable

TASK = Task("t0", "What is 6*7?", ["42"], "test")


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class Shouting(str):
    def __str__(self) -> str:
        raise RuntimeError("a str subclass whose __str__ fails")


def weird(query: str) -> Unprintable:
    """Returns an object that cannot be shown as text."""
    return Unprintable()


def shouting(query: str) -> str:
    """Returns a str subclass with a broken __str__ (its characters are still text)."""
    return Shouting(f"loud {query}")


def exits(query: str) -> str:
    """Calls sys.exit, which in a tool is a failure of the tool, not of the program."""
    raise SystemExit(3)


def interrupts(query: str) -> str:
    """Raises KeyboardInterrupt from tool code (not the user's Ctrl-C)."""
    raise KeyboardInterrupt


async def blocks_loop(query: str) -> str:
    """An async tool that blocks its event loop (no await), which wait_for cannot cancel."""
    time.sleep(8)
    return "late"


def make(tools, **config) -> ToolEnv:
    env = ToolEnv(tools, tasks=[TASK], config=ToolEnvConfig(**config))
    env.reset(options={"task": TASK})
    return env


@pytest.mark.parametrize("syntax", ["xml", "json"])
def test_unprintable_result_is_an_invalid_action(syntax):
    env = make([weird, shouting], syntax=syntax)
    action = ("<weird>q</weird>" if syntax == "xml"
              else '<tool_call>{"name": "weird", "arguments": {"query": "q"}}</tool_call>')
    obs, reward, term, trunc, info = env.step(action)
    assert not info["valid"] and not term and not trunc
    assert "tool weird returned a Unprintable that cannot be shown as text" in info["error"]
    assert "no text for you" in obs and "weird" in obs and obs in env.observation_space
    assert info["tool_calls"][0]["ok"] is False and reward == -env.config.reward.invalid_penalty
    # A str subclass is text: its characters are used without calling its __str__.
    action = ("<shouting>q</shouting>" if syntax == "xml"
              else '<tool_call>{"name": "shouting", "arguments": {"query": "q"}}</tool_call>')
    obs, _, _, _, info = env.step(action)
    assert info["valid"] and "loud q" in obs
    env.close()


def test_render_hook_failure_and_base_exceptions_are_invalid_actions():
    class Strict(ToolEnv):
        def render_tool_result(self, name, result):
            if name == "echo":
                return 42  # not a str
            return super().render_tool_result(name, result)

    env = Strict([echo, exits, interrupts], tasks=[TASK])
    env.reset(options={"task": TASK})
    obs, _, _, _, info = env.step("<echo>x</echo>")
    assert not info["valid"] and "result of tool echo cannot become an observation" in obs
    assert "render_tool_result returned int, not str" in info["error"]
    _, _, _, _, info = env.step("<exits>x</exits>")
    assert not info["valid"] and info["error"] == "tool exits failed with SystemExit: 3"
    _, _, _, _, info = env.step("<interrupts>x</interrupts>")
    assert not info["valid"] and info["error"] == "tool interrupts failed with KeyboardInterrupt"
    env.close()


def test_async_tool_blocking_its_loop_times_out_on_time():
    env = make([blocks_loop, echo], tool_timeout_s=1.0)
    start = time.monotonic()
    obs, _, _, _, info = env.step("<blocks_loop>q</blocks_loop>")
    assert time.monotonic() - start < 5.0  # the tool sleeps 8 s
    assert not info["valid"] and "tool blocks_loop timed out after 1 s" in obs
    # The stuck call holds one worker; the next call runs on another at once.
    obs, _, _, _, info = env.step("<echo>q</echo>")
    assert info["valid"] and "echo q" in obs
    env.close()


def test_blocking_async_tool_leaves_the_callers_loop_running():
    env = make([blocks_loop], tool_timeout_s=1.0)
    ticks = []

    async def go():
        async def tick():
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        ticker = asyncio.create_task(tick())
        result = await env.astep("<blocks_loop>q</blocks_loop>")
        ticker.cancel()
        return result

    start = time.monotonic()
    _, _, _, _, info = asyncio.run(go())
    assert time.monotonic() - start < 5.0 and "timed out after 1 s" in info["error"]
    assert len(ticks) >= 5  # the rollout's loop kept going while the tool blocked
    env.close()


def test_timed_out_sync_tools_use_a_bounded_number_of_threads():
    release = threading.Event()

    def stuck(query: str) -> str:
        """Blocks until the test ends."""
        release.wait(30)
        return "done"

    before = threading.active_count()
    env = make([stuck], tool_timeout_s=0.05, max_tool_workers=2, max_turns=50)
    try:
        errors = []
        for _ in range(20):
            _, _, _, _, info = env.step("<stuck>q</stuck>")
            errors.append(info["error"])
            assert threading.active_count() <= before + 2
        assert all("tool stuck timed out after 0.05 s" in e for e in errors)
        assert errors[0] == "tool stuck timed out after 0.05 s"  # it ran, and was abandoned
        assert "without starting: all 2 tool workers were busy (2 with earlier calls" in errors[-1]
        assert env._runner.abandoned == 2
    finally:
        release.set()
        env.close()
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before  # closed: the freed workers exit


def test_run_tool_runner_reuses_its_threads():
    async def go():
        runner = ToolRunner("thread", 3)
        try:
            names = set()

            def where(query: str) -> str:
                """The worker thread's name."""
                return threading.current_thread().name

            for i in range(10):
                tool = Tool.from_function(where)
                result = await run_tool(tool, {"query": str(i)}, 5, runner=runner)
                names.add(result.value)
            return names
        finally:
            runner.close()

    names = asyncio.run(go())
    assert len(names) == 1 and next(iter(names)).startswith("creditgym-tool")


def test_process_executor_kills_a_stuck_tool(tmp_path):
    env = make([spin, hard_exit, unsendable, echo], tool_executor="process", tool_timeout_s=1.0)
    pid_file = tmp_path / "pid"
    start = time.monotonic()
    obs, _, _, _, info = env.step(f"<spin>{pid_file}</spin>")
    assert time.monotonic() - start < 30.0  # a worker's start-up is not charged to the tool
    assert not info["valid"]
    assert info["error"] == "tool spin timed out after 1 s (its worker process was killed)"
    pid = int(pid_file.read_text())
    assert pid != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    _, _, _, _, info = env.step("<hard_exit>x</hard_exit>")
    assert "worker process ended unexpectedly (exit code 7)" in info["error"]
    _, _, _, _, info = env.step("<unsendable>x</unsendable>")
    assert "returned a lock that cannot be sent back from its process" in info["error"]
    obs, _, _, _, info = env.step("<echo>back</echo>")
    assert info["valid"] and "echo back" in obs
    env.close()


def test_process_executor_rejects_unpicklable_tools():
    def local(query: str) -> str:
        """A closure: cannot be pickled."""
        return query

    with pytest.raises(ToolDefinitionError, match="'local' cannot run with tool_executor='process'"):
        ToolEnv([local], tasks=[TASK], config={"tool_executor": "process"})
    ToolEnv([local], tasks=[TASK])  # the thread executor takes any callable


@pytest.mark.parametrize("field,value", [("tool_executor", "fork"), ("max_tool_workers", 0)])
def test_executor_config_is_checked(field, value):
    with pytest.raises(ConfigError, match=field):
        ToolEnvConfig(**{field: value})


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_check_env_passes_with_either_executor(executor):
    env = ToolEnv([echo], tasks=[TASK], config={"tool_executor": executor, "tool_timeout_s": 5.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    env.reset(options={"task": TASK})
    obs, _, _, _, info = env.step("<echo>hi</echo>")
    assert info["valid"] and "echo hi" in obs
    env.close()
