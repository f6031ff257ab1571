"""Building many environments of one id cheaply: shared resources, fresh episodes.

``env_factory(env_id, kwargs)`` returns a zero-argument callable that makes one more environment
of ``env_id``. For ``creditgym/Search-v0`` the environments share one open retriever (wrapped in a
``BatchingRetriever``) and one task list, so 256 environments cost one index and their concurrent
searches batch; other ids go through ``gymnasium.make`` each time. Closing an environment never
closes the shared retriever (the factory's ``close`` attribute does, where it exists).
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium

SEARCH_ENV_ID = "creditgym/Search-v0"


def env_factory(env_id: str, kwargs: dict[str, Any] | None = None) -> Callable[[], gymnasium.Env]:
    kwargs = dict(kwargs or {})
    if env_id == SEARCH_ENV_ID:
        from creditgym.envs.search_env import SearchEnv

        first = SearchEnv(**kwargs)
        # The retriever belongs to the factory, not to the first environment: closing that
        # environment (a rollout closes its pool) must not close every later one's index.
        first._owns_retriever = False
        made = [first]

        def make_search_env() -> gymnasium.Env:
            if made:
                return made.pop()
            return SearchEnv(**kwargs, retriever=first.retriever, tasks=first.tasks)

        make_search_env.close = first.retriever.close  # type: ignore[attr-defined]
        return make_search_env
    import creditgym.envs  # noqa: F401  (registers the built-in ids)

    return lambda: gymnasium.make(env_id, **kwargs)
