"""creditgym: reinforcement learning for multi-turn tool-using LLM agents.

Subpackages are the architecture: ``envs`` (environments, tools, world, retrieval), ``agents``
(policy backends, rollout), ``credit`` (advantage estimators, numpy only) and ``trainers``
(policy updates). Dependencies flow one way: envs <- agents <- trainers; credit stands alone.
"""

__version__ = "0.1.0"


def _register_envs() -> None:
    # Lets gymnasium.make("creditgym/Search-v0") work right after `import creditgym`;
    # registration only records entry-point strings, so nothing heavy is imported here.
    from creditgym.envs.registration import register_envs

    register_envs()


_register_envs()
