"""creditgym: reinforcement learning for multi-turn tool-using LLM agents.

Subpackages are the architecture: ``envs`` (environments, tools, world, retrieval), ``agents``
(policy backends, rollout), ``credit`` (advantage estimators, numpy only) and ``trainers``
(policy updates). Dependencies flow one way: envs <- agents <- trainers; credit stands alone.
"""

__version__ = "0.1.0"
