"""What misbehaving tools cost a ToolEnv: step overhead, threads held, and the timeout that holds.

Four measurements on one machine (no network, no model):

1. per-step cost of a trivial sync tool and a trivial async tool (the thread hop and, for async
   tools, the fresh event loop in the worker);
2. live threads added by 20 steps whose sync tool blocks past the 0.2 s timeout (bounded by
   ``max_tool_workers``, 4 by default);
3. how long a step takes when an async tool blocks its loop for 8 s under a 0.2 s timeout;
4. the same for a ``while True: pass`` tool with ``tool_executor="process"`` (killed on timeout;
   the step also pays for starting the worker process, which is not charged to the timeout).

Usage: ``python benchmarks/tool_reliability.py [--steps 2000]``. It prints a table; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from creditgym.envs.task import Task  # noqa: E402
from creditgym.envs.tool_env import ToolEnv  # noqa: E402

TASK = Task("t", "q", ["a"], "bench")


def echo(query: str) -> str:
    """Echo."""
    return query


async def aecho(query: str) -> str:
    """Async echo."""
    await asyncio.sleep(0)
    return query


def stuck(query: str) -> str:
    """Blocks for 3 s."""
    time.sleep(3)
    return ""


async def ablock(query: str) -> str:
    """Blocks its event loop for 8 s."""
    time.sleep(8)
    return ""


def spin(query: str) -> str:
    """Never returns."""
    while True:
        pass


def env_of(tools, **config) -> ToolEnv:
    env = ToolEnv(tools, tasks=[TASK], config={"max_turns": 10**6, **config})
    env.reset(options={"task": TASK})
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    baseline = threading.active_count()
    rows = []
    for tool in (echo, aecho):
        env = env_of([tool])
        action = f"<{tool.__name__}>x</{tool.__name__}>"
        for _ in range(50):
            env.step(action)
        start = time.perf_counter()
        for _ in range(args.steps):
            env.step(action)
        per_step = (time.perf_counter() - start) / args.steps * 1e6
        rows.append((f"step with a trivial {tool.__name__}", f"{per_step:.0f} us"))
        env.close()
    time.sleep(0.5)  # the closed environments' idle workers exit
    env = env_of([stuck], tool_timeout_s=0.2)
    peak = 0
    for _ in range(20):
        env.step("<stuck>x</stuck>")
        peak = max(peak, threading.active_count() - baseline)
    rows.append(("most threads held by 20 timed-out sync calls", str(peak)))
    env.close()
    for tools, tag, config in (([ablock], "ablock", {}), ([spin], "spin", {"tool_executor": "process"})):
        env = env_of(tools, tool_timeout_s=0.2, **config)
        start = time.perf_counter()
        *_, info = env.step(f"<{tag}>x</{tag}>")
        what = "async tool blocking 8 s" if tag == "ablock" else "while True, process executor"
        took = time.perf_counter() - start
        rows.append((f"step: {what}, timeout 0.2 s", f"{took:.2f} s: {info['error']}"))
        env.close()
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
