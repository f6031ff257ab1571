"""env_factory: environments share one retriever, and closing one never breaks the others."""

from __future__ import annotations

from creditgym.envs.factory import SEARCH_ENV_ID, env_factory

SMALL_WORLD = {"num_documents": 600, "num_train_questions": 10, "num_test_questions": 5}


def test_closing_one_environment_keeps_the_shared_retriever_open():
    make = env_factory(SEARCH_ENV_ID, {"world": SMALL_WORLD, "world_backend": "bm25s",
                                       "split": "test", "top_k": 1})
    first, second = make(), make()
    assert first.unwrapped.retriever is second.unwrapped.retriever
    task = first.unwrapped.tasks[0]
    first.close()  # a rollout closes its environments when it is done
    third = make()
    for env in (second, third):
        env.reset(seed=0, options={"task": task})
        obs, *_ = env.step(f"<search> {task.metadata['chain'][0]['query']} </search>")
        assert "Error" not in obs and task.metadata["chain"][0]["answer"] in obs
    make.close()
