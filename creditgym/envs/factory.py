"""Building many environments of one id cheaply: shared resources, fresh episodes.

``env_factory(env_id, kwargs)`` returns a zero-argument callable that makes one more environment
of ``env_id``. For ``creditgym/Search-v0`` the environments share one open retriever (wrapped in a
``BatchingRetriever``) and one task list, so 256 environments cost one index and their concurrent
searches batch; other ids go through ``gymnasium.make`` each time.
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
        made = [first]

        def make_search_env() -> gymnasium.Env:
            if made:
                return made.pop()
            return SearchEnv(**kwargs, retriever=first.retriever, tasks=first.tasks)

        return make_search_env
    import creditgym.envs  # noqa: F401  (registers the built-in ids)

    return lambda: gymnasium.make(env_id, **kwargs)
