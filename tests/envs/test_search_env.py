"""SearchEnv over the built-in world with a real Lucene index (pyserini) and real bm25s."""

from __future__ import annotations

import json
import threading
from collections import Counter

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import creditgym  # noqa: F401  (registers the environment ids)
from creditgym.envs.defaults import ensure_world_index
from creditgym.envs.retrieval import RetrieverConfig, make_retriever
from creditgym.envs.retrieval.batching import BatchingRetriever
from creditgym.envs.rewards import RewardConfig
from creditgym.envs.search_env import SearchEnv, SearchEnvConfig
from creditgym.envs.world import World, WorldConfig
from creditgym.envs.world.expert import expert_action

WORLD = WorldConfig()


@pytest.fixture(scope="module")
def lucene():
    built = ensure_world_index(WORLD, "lucene")
    retriever = BatchingRetriever(make_retriever(RetrieverConfig(backend="lucene", index=str(built.index))))
    yield retriever
    retriever.close()


def run_expert(env: SearchEnv, task, syntax="xml"):
    obs, info = env.reset(seed=0, options={"task": task})
    turn, total, done = 0, 0.0, False
    while not done:
        obs, reward, term, trunc, info = env.step(expert_action(task, turn, obs, syntax=syntax))
        total += reward
        turn += 1
        done = term or trunc
    return total, info


def test_expert_reaches_em_1_on_the_test_split_through_lucene(lucene):
    env = SearchEnv(split="test", retriever=lucene)
    ems, hops = [], Counter()
    for task in env.tasks:
        _, info = run_expert(env, task)
        ems.append(info["metrics"]["em"])
        hops[task.metadata["hops"]] += 1
        assert info["metrics"]["calls/search"] == task.metadata["hops"]
    assert len(ems) == 500 and set(hops) == {1, 2, 3, 4}
    assert sum(ems) / len(ems) == 1.0


def test_answering_without_searching_scores_near_zero(lucene):
    env = SearchEnv(split="test", retriever=lucene)
    train = World.generate(WORLD).questions("train")
    guess = Counter(t.golden_answers[0] for t in train).most_common(1)[0][0]
    ems = []
    for task in env.tasks:
        env.reset(options={"task": task})
        _, reward, term, _, info = env.step(f"<answer>{guess}</answer>")
        assert term and info["metrics"]["calls/search"] == 0
        ems.append(info["metrics"]["em"])
    assert sum(ems) / len(ems) < 0.03


def test_gymnasium_make_and_check_env(lucene):
    env = gymnasium.make("creditgym/Search-v0", split="test", top_k=2)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=1)
    assert info["task"]["question"] == obs and info["anchor"]


def test_search_r1_observation_format_and_anchor(lucene):
    env = SearchEnv(split="test", retriever=lucene, top_k=2)
    task = env.tasks[0]
    obs, info = env.reset(options={"task": task})
    assert info["anchor"] == " ".join(task.question.split())
    query = task.metadata["chain"][0]["query"]
    obs, *_, info = env.step(f"<think>look it up</think><search> {query} </search>")
    assert obs.startswith("\n\n<information>Doc 1(Title: ") and obs.endswith("</information>\n\n")
    assert f"Doc 1(Title: {query})" in obs and "Doc 2(Title: " in obs and "Doc 3(" not in obs
    assert info["valid"] and info["anchor"] == " ".join(obs.split())


def test_deterministic_given_seed_and_actions(lucene):
    def episode():
        env = SearchEnv(split="train", retriever=lucene)
        obs, info = env.reset(seed=7)
        out = [(obs, json.dumps(info, sort_keys=True))]
        for action in ["<search>Velmora</search>", "no call at all", "<answer>x</answer>"]:
            step = env.step(action)
            out.append((step[0], step[1], step[2], step[3], json.dumps(step[4], sort_keys=True)))
        return out

    assert episode() == episode()


def test_rewards_costs_and_limits(lucene):
    cfg = SearchEnvConfig(
        split="test", max_turns=2, max_passage_chars=40,
        reward=RewardConfig(search_cost=0.05, invalid_penalty=0.1, costly_tools=("search",)),
    )
    env = SearchEnv(cfg, retriever=lucene)
    task = next(t for t in env.tasks if t.metadata["hops"] >= 2)
    env.reset(options={"task": task})
    obs, reward, term, trunc, info = env.step(f"<search>{task.metadata['chain'][0]['query']}</search>")
    assert reward == pytest.approx(-0.05) and info["metrics"]["reward/search_cost"] == pytest.approx(-0.05)
    assert all(len(line.split(") ", 1)[1]) <= 40 for line in obs.strip()[13:-14].split("\n"))
    obs, reward, term, trunc, info = env.step("<search></search>")  # empty query: invalid
    assert not info["valid"] and trunc and not term
    assert info["metrics"]["reward/invalid"] == pytest.approx(-0.1)
    assert info["metrics"]["answered"] == 0.0 and info["metrics"]["em"] == 0.0


def test_judge_and_goal_tools(lucene):
    env = SearchEnv(split="test", retriever=lucene, judge=True, goal=True, judge_reward=0.5)
    task = next(t for t in env.tasks if t.metadata["hops"] == 1)
    obs, info = env.reset(options={"task": task})
    assert "<judge>" in info["system_prompt"] and {t["function"]["name"] for t in info["tools"]} == {
        "search", "judge", "goal", "answer"}
    env.step("<goal>where the person was born</goal>")
    env.step("<judge>sufficient</judge>")  # wrong: nothing searched yet
    env.step(f"<search>{task.metadata['chain'][0]['query']}</search>")
    env.step("<judge>sufficient</judge>")  # right: the passage names the answer
    *_, info = env.step(f"<answer>{task.golden_answers[0]}</answer>")
    m = info["metrics"]
    assert m["goals"] == 1 and m["judgements"] == 2 and m["reward/judge"] == 0.0
    assert info["metrics"]["reward"] == pytest.approx(1.0)


def test_json_syntax_expert(lucene):
    env = SearchEnv(split="test", retriever=lucene, syntax="json")
    for task in env.tasks[:20]:
        _, info = run_expert(env, task, syntax="json")
        assert info["metrics"]["em"] == 1.0


def test_concurrent_envs_batch_their_searches(lucene):
    backend = BatchingRetriever(lucene.backend, window_s=0.005)
    envs = [SearchEnv(split="test", retriever=backend) for _ in range(32)]
    tasks = envs[0].tasks[:32]
    results: dict[int, float] = {}

    def worker(i):
        _, info = run_expert(envs[i], tasks[i])
        results[i] = info["metrics"]["em"]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: 1.0 for i in range(32)}
    assert backend.queries == sum(t.metadata["hops"] for t in tasks)
    assert backend.backend_calls < backend.queries  # some searches shared a backend call


def test_bm25s_backend_and_searchr1_tasks_file(tmp_path):
    built = ensure_world_index(WORLD, "bm25s")
    tasks = World.generate(WORLD).questions("test")[:10]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(
        json.dumps({"id": t.id, "question": t.question, "golden_answers": list(t.golden_answers)}) + "\n"
        for t in tasks))
    env = SearchEnv(tasks_path=str(path), split="test",
                    retriever=RetrieverConfig(backend="bm25s", index=str(built.index)))
    assert [t.question for t in env.tasks] == [t.question for t in tasks]
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(f"<search>{tasks[0].metadata['chain'][0]['query']}</search>")
    assert "<information>Doc 1(Title: " in obs
    env.close()


LONG_QUERY = " ".join(f"zq{i}x" for i in range(1100))  # over Lucene's 1,024 clauses


class _RefusingBackend:
    """A real backend that raises for one query, as a broken backend would."""

    def __init__(self, inner, refuse: str) -> None:
        self.inner, self.refuse = inner, refuse

    def search(self, queries, k):
        if self.refuse in queries:
            raise RuntimeError("the backend cannot search this")
        return self.inner.search(queries, k)

    def close(self) -> None:
        pass


def _step_together(envs, actions):
    """Step every env at once in its own thread; the (obs, valid) of each, in order."""
    out: list = [None] * len(envs)
    barrier = threading.Barrier(len(envs))

    def worker(i):
        barrier.wait()
        obs, _, _, _, info = envs[i].step(actions[i])
        out[i] = (obs, info["valid"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(envs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a step never returned"
    return out


@pytest.mark.parametrize("bad", ["long_query", "backend_error"])
def test_one_bad_query_never_invalidates_the_envs_batched_with_it(lucene, bad):
    bad_query = LONG_QUERY if bad == "long_query" else "Velmora refused"
    backend = lucene.backend if bad == "long_query" else _RefusingBackend(lucene.backend, bad_query)
    shared = BatchingRetriever(backend, window_s=0.02)
    tasks = SearchEnv(split="test", retriever=lucene).tasks[:32]
    envs = [SearchEnv(split="test", retriever=shared, tasks=tasks) for _ in range(32)]
    for env, task in zip(envs, tasks):
        env.reset(options={"task": task})
    for round_ in range(2):  # two rounds: the bad env keeps sending its query
        actions = [f"<search>{t.metadata['chain'][0]['query']} {round_}</search>" for t in tasks]
        actions[13] = f"<search>{bad_query}</search>"
        together = _step_together(envs, actions)
        alone_env = SearchEnv(split="test", retriever=lucene)
        for i, (action, task) in enumerate(zip(actions, tasks)):
            if i == 13:
                continue
            alone_env.reset(options={"task": task})
            obs, *_, info = alone_env.step(action)
            assert together[i] == (obs, True), f"env {i} in round {round_}"
        # the long query is cut to Lucene's clause limit and served; a query the backend
        # cannot search fails its own step only
        assert together[13][1] is (bad == "long_query")
    if bad == "long_query":  # the bad query really shared batches
        assert shared.backend_calls < shared.queries
    else:
        assert shared.split_batches >= 1
