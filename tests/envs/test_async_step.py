"""``creditgym.envs.astep`` and ``AsyncWrapper``: async stepping that never skips a wrapper.

The environment is the README's calculator (a real ToolEnv); a subclass notes which event loop
each ``astep`` ran on, so the tests can tell "awaited on the caller's loop" from "ran ``step`` in
a worker thread" (ToolEnv.step runs astep on its own private loop there).
"""

from __future__ import annotations

import asyncio

import gymnasium
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

from creditgym.envs import AsyncWrapper, astep
from creditgym.envs.async_step import has_astep
from creditgym.envs.examples.calculator import CalculatorEnv

CALL = "<calculate>1 + 2</calculate>"


class LoopNotingCalculator(CalculatorEnv):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def astep(self, action):
        self.loops.append(asyncio.get_running_loop())
        return await super().astep(action)


class Shout(gymnasium.ObservationWrapper):
    """A plain, sync gymnasium wrapper."""

    def observation(self, observation):
        return f"SHOUT {observation}"


class Tag(AsyncWrapper):
    def observation(self, observation):
        return f"TAG {observation}"

    def reward(self, reward):
        return reward + 10.0


class StepOnly(AsyncWrapper):
    """Overrides ``step`` itself, not the hooks: astep must still apply it."""

    def step(self, action):
        obs, reward, term, trunc, info = self.env.step(action)
        return f"STEPPED {obs}", reward, term, trunc, info


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def calc():
    env = LoopNotingCalculator()
    yield env
    env.close()


def test_async_wrapper_applies_its_hooks_on_reset_step_and_astep(calc):
    env = Tag(calc)
    obs, _ = env.reset(seed=0)
    assert obs.startswith("TAG ")
    obs, reward, *_ = env.step(CALL)
    assert obs.startswith("TAG ") and "3" in obs and reward == 10.0  # a valid call earns 0

    async def go():
        result = await astep(env, CALL)
        return result, asyncio.get_running_loop()

    (obs, reward, *_), loop = run(go())
    assert obs.startswith("TAG ") and reward == 10.0
    assert calc.loops[-1] is loop  # awaited on the caller's loop, not in a thread


def test_sync_wrappers_are_honoured_in_a_thread_at_any_depth(calc):
    env = Shout(Tag(calc))
    env.reset(seed=0)

    async def go():
        return await astep(env, CALL), asyncio.get_running_loop()

    (obs, *_), loop = run(go())
    assert obs.startswith("SHOUT TAG ")
    assert calc.loops[-1] is not loop  # the sync outer wrapper forced the thread path
    inner = Tag(Shout(calc))  # async outside, sync inside: still both
    inner.reset(seed=0)
    obs, *_ = run(astep(inner, CALL))
    assert obs.startswith("TAG SHOUT ")


def test_a_subclass_that_overrides_step_is_not_bypassed(calc):
    env = StepOnly(calc)
    env.reset(seed=0)
    obs, *_ = run(astep(env, CALL))
    assert obs.startswith("STEPPED ")


def test_a_time_limit_truncates_on_the_async_path(calc):
    env = TimeLimit(calc, max_episode_steps=1)
    env.reset(seed=0)
    *_, truncated, _ = run(astep(env, CALL))
    assert truncated


def test_gymnasium_make_bookkeeping_wrappers_pass_through_once_their_checks_ran(calc):
    env = OrderEnforcing(PassiveEnvChecker(calc))  # what gymnasium.make puts around an env
    with pytest.raises(ResetNeeded):
        run(astep(env, CALL))
    env.reset(seed=0)

    async def go():
        results = [await astep(env, CALL) for _ in range(4)]
        return results, asyncio.get_running_loop()

    results, loop = run(go())
    assert all("3" in obs for obs, *_ in results)
    # the checker's first two steps (its step and data-reuse checks) ran its own sync step;
    # from then on the steps were awaited on the caller's loop
    assert [seen is loop for seen in calc.loops] == [False, False, True, True]


def test_has_astep_looks_at_the_class_not_forwarded_attributes(calc):
    assert has_astep(calc) and has_astep(Tag(calc))
    assert not has_astep(Shout(calc)) and not has_astep(OrderEnforcing(calc))
