"""The environment contract a trainer relies on: hooks on every environment, and resolving ids."""

from __future__ import annotations

import textwrap

import gymnasium
import pytest

from creditgym.envs import Task, ToolEnv
from creditgym.envs.demonstration import Demonstration, call_text, play
from creditgym.envs.examples.calculator import CalculatorEnv
from creditgym.envs.examples.keydoor import KeyDoorEnv
from creditgym.envs.factory import check_env_kwargs, env_factory, resolve_env
from creditgym.envs.search_env import SearchEnv
from creditgym.errors import ConfigError, EnvSpecError

SMALL_WORLD = {"num_documents": 600, "num_train_questions": 10, "num_test_questions": 5}
SEARCH_KWARGS = {"world": SMALL_WORLD, "world_backend": "bm25s", "top_k": 3}
BUILTIN = ("creditgym/Search-v0", "creditgym/Calculator-v0", "creditgym/KeyDoor-v0")

USER_MODULE = '''
"""A user's environment in a file of its own: plain functions, no creditgym internals."""
import gymnasium
from creditgym.envs import Task, ToolEnv


def shout(text: str) -> str:
    """Repeat the text in capitals.

    Args:
        text: What to shout.
    """
    return text.upper()


class ShoutEnv(ToolEnv):
    def __init__(self, word: str = "hello", **kwargs):
        super().__init__([shout], tasks=[Task("s0", f"Shout {word}.", [word.upper()])], **kwargs)


def make_shout(word: str = "hey"):
    return ShoutEnv(word=word)


class Loud(gymnasium.ObservationWrapper):
    def observation(self, observation):
        return "LOUD: " + observation
'''


@pytest.fixture(scope="module")
def search_env():
    env = SearchEnv(**SEARCH_KWARGS)
    yield env
    env.close()


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_envs_for_test.py").write_text(textwrap.dedent(USER_MODULE))
    (tmp_path / "broken_envs_for_test.py").write_text("raise RuntimeError('half-written module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_envs_for_test"


# ----------------------------------------------------------------------------- hooks


def test_stop_strings_follow_syntax_and_tools(search_env):
    assert search_env.stop_strings == ["</search>", "</answer>"]
    assert KeyDoorEnv(num_tasks=2).stop_strings == ["</move>", "</pick_up>", "</open_door>",
                                                    "</answer>"]
    assert CalculatorEnv().stop_strings == ["</calculate>", "</answer>"]
    json_env = CalculatorEnv(config={"syntax": "json", "answer_tool": "final"})
    assert json_env.stop_strings == ["</tool_call>", "</final>"]
    judging = SearchEnv(**SEARCH_KWARGS, judge=True, retriever=search_env.retriever,
                        tasks=search_env.tasks)
    assert "</judge>" in judging.stop_strings


def test_every_env_lists_its_tasks(search_env):
    for env in (search_env, CalculatorEnv(), KeyDoorEnv(num_tasks=3)):
        tasks = env.unwrapped.tasks
        assert tasks and all(isinstance(t, Task) for t in tasks)
        assert len({t.id for t in tasks}) == len(tasks)


def test_base_metrics_are_means_of_numeric_keys():
    rows = [{"success": True, "reward": 1.0, "calls/x": 2, "note": "text"},
            {"success": False, "reward": 0.0, "turns": 3.0, "bad": float("nan")}]
    assert ToolEnv.aggregate_metrics(rows) == {"success": 0.5, "reward": 0.5, "calls/x": 2.0,
                                               "turns": 3.0}
    assert ToolEnv.aggregate_metrics([]) == {}


def test_search_metrics_keep_their_names():
    rows = [{"success": 1.0, "em": 1.0, "f1": 1.0, "calls/search": 2.0, "turns": 3.0},
            {"success": 0.0, "em": 0.0, "f1": 0.5, "calls/search": 1.0, "turns": 2.0}]
    out = SearchEnv.aggregate_metrics(rows)
    assert out["searches"] == 1.5 and out["f1"] == 0.75 and out["success"] == 0.5
    assert SearchEnv.aggregate_metrics([])["searches"] == 0.0


def test_an_env_without_demonstrator_says_so():
    assert ToolEnv.demonstrations({}, count=3, seed=0, options={}) is None


@pytest.mark.parametrize("syntax", ["xml", "json"])
def test_calculator_demonstrations_solve_their_tasks(syntax):
    seen = []
    for demo in CalculatorEnv.demonstrations({"syntax": syntax}, count=6, seed=3, options={}):
        actions, rewards, info, terminated = play(demo)  # play each before taking the next
        assert terminated and rewards[-1] == 1.0 and info["metrics"]["calls/calculate"] == 1.0
        seen.append((demo.seed, demo.task.id))
    assert [s for s, _ in seen] == list(range(3, 9))
    assert [t for _, t in seen] != [f"calc-{i}" for i in range(6)]  # shuffled with the seed
    again = CalculatorEnv.demonstrations({"syntax": syntax}, count=6, seed=3, options={})
    assert [d.task.id for d in again] == [t for _, t in seen]


class RecordingCalculator(CalculatorEnv):
    made: list = []

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.closed = False
        self.made.append(self)

    def close(self):
        self.closed = True
        super().close()


def test_demonstrations_close_what_they_opened():
    RecordingCalculator.made.clear()
    for demo in RecordingCalculator.demonstrations({}, count=2, seed=0, options={}):
        assert not demo.env.closed
        play(demo)
    assert [env.closed for env in RecordingCalculator.made] == [True]
    demos = RecordingCalculator.demonstrations({}, count=5, seed=0, options={})
    play(next(demos))
    demos.close()  # the trainer stopped early
    assert [env.closed for env in RecordingCalculator.made] == [True, True]


def test_search_demonstrator_is_the_world_expert(search_env):
    demos = SearchEnv.demonstrations(SEARCH_KWARGS, count=4, seed=0, options={"perfect": True})
    train_ids = {t.id for t in search_env.tasks}
    results = []
    for demo in demos:
        assert isinstance(demo, Demonstration) and demo.task.id in train_ids
        results.append(play(demo))
    assert sum(info["metrics"]["em"] for _, _, info, _ in results) >= 3
    assert all(a[0].startswith("<search>") for a, *_ in results)
    # The imperfect expert answers right after its first search, a bridge entity when the
    # question has more hops.
    early = SearchEnv.demonstrations(SEARCH_KWARGS, count=8, seed=0,
                                     options={"early_answer_prob": 1.0})
    assert {len(play(d)[0]) for d in early} == {2}
    assert SearchEnv.demonstrations({**SEARCH_KWARGS, "tasks_path": "x.jsonl"}, count=1, seed=0,
                                    options={}) is None


def test_search_demonstrations_in_other_worlds(search_env):
    demos = SearchEnv.demonstrations(SEARCH_KWARGS, count=3, seed=0,
                                     options={"worlds": 1, "perfect": True})
    questions = {t.question for t in search_env.tasks}
    results = [(d.task.question, play(d)[2]["metrics"]["em"]) for d in demos]
    assert len(results) == 3 and not questions & {q for q, _ in results}
    assert sum(em for _, em in results) >= 2
    with pytest.raises(ConfigError, match="early_anwser_prob"):
        SearchEnv.demonstrations(SEARCH_KWARGS, count=1, seed=0,
                                 options={"early_anwser_prob": 0.5})


def test_search_corpus_is_the_documents_and_training_questions_of_every_world(search_env):
    from creditgym.envs.search_env import search_config
    from creditgym.envs.world import World

    corpus = SearchEnv.corpus_texts(SEARCH_KWARGS, demonstrator={"worlds": 2})
    world = World.generate(search_config(None, SEARCH_KWARGS).world)
    documents = [d["contents"] for d in world.iter_documents()]
    assert corpus[: len(documents)] == documents
    assert {t.question for t in world.questions("train")} <= set(corpus)
    # never the held-out questions; and two more worlds (their own names) follow
    assert not {t.question for t in world.questions("test")} & set(corpus)
    assert len(corpus) > 3 * len(documents)
    assert SearchEnv.corpus_texts(SEARCH_KWARGS, demonstrator={})[-1] != corpus[-1]
    assert SearchEnv.corpus_texts({**SEARCH_KWARGS, "tasks_path": "x.jsonl"},
                                  demonstrator={}) is None
    assert CalculatorEnv.corpus_texts({}, demonstrator={}) is None  # the default: no corpus
    with pytest.raises(ConfigError, match="wrlds"):
        SearchEnv.corpus_texts(SEARCH_KWARGS, demonstrator={"wrlds": 1})


def test_make_factory_base_and_shared_search(search_env):
    make = KeyDoorEnv.make_factory(num_tasks=4)
    first, second = make(), make()
    assert first is not second and [t.id for t in first.tasks] == [t.id for t in second.tasks]
    make = SearchEnv.make_factory(**SEARCH_KWARGS)
    a, b = make(), make()
    assert a.retriever is b.retriever and a.tasks[0] is b.tasks[0]  # parsed once
    a.close()
    b.reset(seed=0)
    obs, *_ = b.step("<search> anything </search>")
    assert "<information>" in obs  # closing an environment left the shared index open
    b.close()
    make.close()


def test_call_text_both_syntaxes():
    assert call_text("xml", "move", {"direction": "north"}) == "<move>north</move>"
    assert call_text("xml", "pick_up") == "<pick_up></pick_up>"
    assert call_text("json", "move", {"direction": "n"}) == \
        '<tool_call>{"name": "move", "arguments": {"direction": "n"}}</tool_call>'


# ----------------------------------------------------------------------------- resolving ids


@pytest.mark.parametrize("env_id", BUILTIN)
def test_registered_ids_resolve_to_their_classes(env_id):
    entry, kind = resolve_env(env_id)
    assert kind == "class" and issubclass(entry, ToolEnv)
    assert f"{entry.__module__}:{entry.__name__}" == gymnasium.spec(env_id).entry_point


def test_module_attr_ids_and_wrappers(user_module):
    entry, kind = resolve_env(f"{user_module}:ShoutEnv")
    assert kind == "class" and entry.__name__ == "ShoutEnv"
    assert resolve_env(f"{user_module}:make_shout")[1] == "function"
    make = env_factory(f"{user_module}:ShoutEnv", {"word": "yo"},
                       wrappers=[f"{user_module}:Loud"])
    env = make()
    obs, _ = env.reset(seed=0)
    assert obs == "LOUD: Shout yo."
    obs, *_ = env.step("<shout>yo</shout>")  # the wrapper applies on every step too
    assert obs.startswith("LOUD: ") and "YO" in obs
    env = env_factory(f"{user_module}:make_shout", {"word": "hi"})()
    assert env.reset(seed=0)[0] == "Shout hi."
    assert env_factory("creditgym.envs:creditgym/Calculator-v0")().reset(seed=0)[0].startswith(
        "What is")
    make.close()


def test_a_bad_id_names_the_id_what_was_tried_and_the_registered_ids(user_module):
    with pytest.raises(EnvSpecError) as err:
        env_factory("creditgym/Serch-v0", {})
    message = str(err.value)
    assert "'creditgym/Serch-v0'" in message and "registry" in message
    assert "Did you mean 'creditgym/Search-v0'" in message
    assert all(env_id in message for env_id in BUILTIN)
    for bad, why in [("no_such_module_xyz:Env", "ModuleNotFoundError"),
                     ("broken_envs_for_test:Env", "half-written module"),
                     (f"{user_module}:Shout", "has no attribute 'Shout'"),
                     ("creditgym.envs.task:Task", "not a gymnasium.Env")]:
        with pytest.raises(EnvSpecError) as err:
            check_env_kwargs(bad, {})
        assert bad in str(err.value) and why in str(err.value)
        assert all(env_id in str(err.value) for env_id in BUILTIN)
    assert isinstance(err.value, ConfigError)
    with pytest.raises(EnvSpecError, match="nowhere_xyz"):
        env_factory(f"{user_module}:ShoutEnv", {}, wrappers=["nowhere_xyz:Wrapper"])


@pytest.mark.parametrize("env_id,kwargs,named", [
    ("creditgym/KeyDoor-v0", {"room_count": 3}, "'room_count'"),
    ("creditgym/Calculator-v0", {"config": {"max_turn": 3}}, "'max_turn'"),
    ("creditgym/Calculator-v0", {"colour": "red"}, "'colour'"),
    ("creditgym/Search-v0", {"wrld": {}}, "'wrld'"),
    ("creditgym/Search-v0", {"world": {"num_docs": 3}}, "'num_docs'"),
    ("creditgym/Search-v0", {"top_k": 0}, "top_k"),
])
def test_options_the_env_rejects(env_id, kwargs, named):
    with pytest.raises(EnvSpecError) as err:
        check_env_kwargs(env_id, kwargs)
    assert env_id in str(err.value) and named in str(err.value)


def test_options_the_env_accepts(user_module):
    check_env_kwargs("creditgym/Search-v0", {**SEARCH_KWARGS, "split": "test"})
    check_env_kwargs("creditgym/Calculator-v0", {"config": {"syntax": "json"}})
    check_env_kwargs("creditgym/KeyDoor-v0", {"num_tasks": 5, "config": {"max_turns": 30}})
    check_env_kwargs(f"{user_module}:ShoutEnv", {"word": "x", "syntax": "json"})
    with pytest.raises(EnvSpecError, match="colour"):
        check_env_kwargs(f"{user_module}:make_shout", {"colour": 1})
