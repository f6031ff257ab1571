"""Stepping an environment from a coroutine, through every wrapper around it.

The async protocol: an environment or wrapper may define ``async def astep(self, action)``
returning what ``step(action)`` returns. ``await astep(env, action)`` awaits the outermost
object's own ``astep`` when its class defines one; otherwise it runs ``env.step(action)`` in a
worker thread, so a plain gymnasium wrapper (``ObservationWrapper``, ``TimeLimit``, a user's)
is always applied, just not concurrently on the loop. Callers step the object they hold, never
``env.unwrapped``: that would skip the wrappers.

``AsyncWrapper`` is the base for wrappers that stay async: its ``astep`` applies the same hooks
as its ``step`` (``action`` on the way in; ``transform_step``, by default ``observation`` and
``reward``, on the way out; ``observation`` on ``reset`` too) around ``await astep(self.env,
...)``. A subclass that overrides ``step`` itself (not the hooks) still has that ``step``
honoured: its ``astep`` then runs ``step`` in a worker thread.

The bookkeeping wrappers ``gymnasium.make`` adds (``OrderEnforcing``, and ``PassiveEnvChecker``
once its first-step checks have run) do not change a step's result, so ``astep`` passes
through them to the async environment inside; before ``reset`` (or for the checker's first
steps) it takes their own ``step``, which raises or checks exactly as they would.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, SupportsFloat

import gymnasium
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker

StepResult = tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]

_TRANSPARENT: dict[type, Callable[[Any], bool]] = {
    OrderEnforcing: lambda w: bool(getattr(w, "has_reset", False)),
    PassiveEnvChecker: lambda w: bool(getattr(w, "checked_step", False)
                                      and getattr(w, "checked_data_reuse", False)),
}
"""Wrapper type -> whether its ``step`` would now just return ``self.env.step(action)``.
Exact types only: a subclass may do more in ``step``. An attribute a future gymnasium renames
reads as False: its own ``step`` then runs, in a thread (correct, just not concurrent)."""


def has_astep(env: Any) -> bool:
    """Whether ``env``'s own class defines a coroutine ``astep`` (looked up on the class, so an
    attribute forwarded from an inner environment never counts)."""
    return inspect.iscoroutinefunction(getattr(type(env), "astep", None))


async def astep(env: gymnasium.Env, action: Any) -> StepResult:
    """``env.step(action)`` from a coroutine, through every wrapper (see the module docstring)."""
    if has_astep(env):
        return await env.astep(action)
    passes = _TRANSPARENT.get(type(env))
    if passes is not None and passes(env):
        return await astep(env.env, action)  # type: ignore[attr-defined]
    return await asyncio.to_thread(env.step, action)


class AsyncWrapper(gymnasium.Wrapper):
    """A ``gymnasium.Wrapper`` whose transformations apply on ``step``, ``astep`` and ``reset``
    alike. Override the hooks (``observation``, ``reward``, ``action`` or, for ``terminated``,
    ``truncated`` and ``info`` too, ``transform_step``); they may not block for long, since on
    the async path they run on the event loop."""

    def action(self, action: Any) -> Any:
        """The action passed on to the wrapped environment (default: unchanged)."""
        return action

    def observation(self, observation: Any) -> Any:
        """The observation returned by ``reset`` and ``step`` (default: unchanged)."""
        return observation

    def reward(self, reward: SupportsFloat) -> SupportsFloat:
        """The reward returned by ``step`` (default: unchanged)."""
        return reward

    def transform_step(self, observation: Any, reward: SupportsFloat, terminated: bool,
                       truncated: bool, info: dict[str, Any]) -> StepResult:
        """The whole step result (default: ``observation`` and ``reward`` applied)."""
        return self.observation(observation), self.reward(reward), terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = self.env.reset(seed=seed, options=options)
        return self.observation(observation), info

    def step(self, action: Any) -> StepResult:
        return self.transform_step(*self.env.step(self.action(action)))

    async def astep(self, action: Any) -> StepResult:
        if type(self).step is not AsyncWrapper.step:  # a subclass rewrote step: honour it
            return await asyncio.to_thread(self.step, action)
        return self.transform_step(*await astep(self.env, self.action(action)))
