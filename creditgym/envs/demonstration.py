"""Demonstrations: scripted expert episodes an environment offers for a warm start.

An environment class with a demonstrator implements ``demonstrations(env_kwargs, *, count, seed,
options)`` and yields ``Demonstration`` objects: a ready environment, the task, the reset seed
and a policy ``(observation, info, turn) -> action text``. Whoever records them (the trainer)
plays each one through the real environment::

    obs, info = demo.env.reset(seed=demo.seed, options={"task": demo.task})
    turn, done = 0, False
    while not done:
        obs, reward, terminated, truncated, info = demo.env.step(demo.policy(obs, info, turn))
        turn, done = turn + 1, terminated or truncated

(``play`` does exactly that.) Play each demonstration to its end before taking the next: several
may share one environment and one random generator. The iterator closes the environments it
opened when it is exhausted or closed (``iterator.close()``, or leaving a ``with
contextlib.closing(...)`` block).

``scripted_demonstrations`` builds that iterator for the common case (one environment, its task
list shuffled with ``seed`` and cycled, one policy per task); ``call_text`` writes one tool call
in the environment's syntax, so a demonstrator works in both.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium

from creditgym.envs.task import Task

Policy = Callable[[str, dict, int], str]
"""(observation, info, turn) -> action text; ``turn`` counts from 0."""


@dataclass
class Demonstration:
    """One expert episode: reset ``env`` with ``seed`` and ``task``, then act with ``policy``."""

    env: gymnasium.Env
    task: Task
    seed: int
    policy: Policy


def call_text(syntax: str, tool: str, arguments: dict[str, Any] | None = None) -> str:
    """One call of ``tool`` as action text: ``<tool>value</tool>`` (xml; the one argument's
    value, or an empty tag) or ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``."""
    arguments = dict(arguments or {})
    if syntax == "xml":
        if len(arguments) > 1:
            raise ValueError(f"the xml syntax takes one argument per call, got {sorted(arguments)}")
        value = next(iter(arguments.values()), "")
        return f"<{tool}>{value}</{tool}>"
    return "<tool_call>" + json.dumps({"name": tool, "arguments": arguments}) + "</tool_call>"


def scripted_demonstrations(
    env: gymnasium.Env, make_policy: Callable[[Task, random.Random], Policy], *, count: int,
    seed: int, tasks: list[Task] | None = None, close: bool = True,
) -> Iterator[Demonstration]:
    """``count`` demonstrations over ``tasks`` (default: ``env.unwrapped.tasks``), shuffled with
    ``random.Random(seed)`` and cycled; reset seeds ``seed, seed + 1, ...``. ``make_policy`` gets
    the task and that same generator (for deliberate imperfection). Closes ``env`` at the end
    when ``close``."""
    try:
        order = list(env.unwrapped.tasks if tasks is None else tasks)
        if count > 0 and not order:
            raise ValueError(f"{type(env.unwrapped).__name__} has no tasks to demonstrate")
        rng = random.Random(seed)
        rng.shuffle(order)
        for i in range(count):
            task = order[i % len(order)]
            yield Demonstration(env=env, task=task, seed=seed + i, policy=make_policy(task, rng))
    finally:
        if close:
            env.close()


def play(demo: Demonstration) -> tuple[list[str], list[float], dict[str, Any], bool]:
    """Play ``demo`` to its end: (actions, rewards, the last step's info, terminated)."""
    obs, info = demo.env.reset(seed=demo.seed, options={"task": demo.task})
    actions: list[str] = []
    rewards: list[float] = []
    terminated = truncated = False
    while not (terminated or truncated):
        actions.append(demo.policy(obs, info, len(actions)))
        obs, reward, terminated, truncated, info = demo.env.step(actions[-1])
        rewards.append(float(reward))
    return actions, rewards, info, bool(terminated)
