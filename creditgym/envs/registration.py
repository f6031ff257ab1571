"""Registers creditgym's built-in environments with gymnasium.

``register_envs()`` runs when ``creditgym.envs`` is imported, so after ``import creditgym.envs``
(or with the ``module:id`` form, ``gymnasium.make("creditgym.envs:creditgym/Calculator-v0")``)
``gymnasium.make("creditgym/Calculator-v0", config={...})`` works. Entry points are strings, so
registering imports no environment module. Calling it again changes nothing.
"""

from __future__ import annotations

import gymnasium

BUILTIN_ENVS: dict[str, str] = {
    "creditgym/Search-v0": "creditgym.envs.search_env:SearchEnv",
    "creditgym/Calculator-v0": "creditgym.envs.examples.calculator:CalculatorEnv",
    "creditgym/KeyDoor-v0": "creditgym.envs.examples.keydoor:KeyDoorEnv",
}
"""Environment id -> ``module:Class`` entry point."""

DEFAULT_ENV_ID = "creditgym/Search-v0"
"""The environment ``creditgym train`` uses when a config names none (the built-in world)."""


def register_envs() -> list[str]:
    """Register every built-in id not registered yet; returns the ids of the built-in envs."""
    for env_id, entry_point in BUILTIN_ENVS.items():
        if env_id not in gymnasium.registry:
            # No max_episode_steps: ToolEnv truncates at its own max_turns, and a TimeLimit
            # wrapper on top would truncate a second, differently configured way.
            gymnasium.register(id=env_id, entry_point=entry_point, nondeterministic=False)
    return list(BUILTIN_ENVS)
