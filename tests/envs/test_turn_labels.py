"""Ground-truth turn labels (``EnvContract.turn_labels``): episodes recorded through the real
built-in world (bm25s index) and the real KeyDoor environment, each label list checked by hand
against what the episode's observations show."""

from __future__ import annotations

import pytest

from creditgym.envs.contract import TURN_LABELS, EnvContract
from creditgym.envs.demonstration import Demonstration, call_text
from creditgym.envs.examples.keydoor import KeyDoorEnv, load_layout, solve
from creditgym.envs.task import Task
from creditgym.envs.world.expert import expert_action
from creditgym.trainers.demos import play_episode


def record(env, task, policy, seed=0):
    """One episode through ``env``, recorded the way demonstrations and rollouts are."""
    return play_episode(Demonstration(env=env, task=task, seed=seed, policy=policy), traj_id="t")


def scripted(actions):
    return lambda obs, info, turn: actions[turn]


@pytest.fixture(scope="module", params=["xml", "json"])
def world(request):
    from creditgym.envs.search_env import SearchEnv

    env = SearchEnv(split="test", world_backend="bm25s", syntax=request.param)
    yield env
    env.close()


def search(env, query):
    return call_text(env.config.syntax, "search", {"query": query})


def answer(env, text):
    return call_text(env.config.syntax, "answer", {"answer": text})


def test_default_hook_has_no_labels():
    assert EnvContract.turn_labels(object()) is None
    assert TURN_LABELS == ("useful", "wasted", "harmful")


# ---------------------------------------------------------------------------- built-in world


def test_world_expert_two_hops_every_turn_useful(world):
    task = world.tasks[1]  # The Forgotten Tregreish -> Tebrask -> Piteisia
    traj = record(world, task, lambda obs, info, turn: expert_action(
        task, turn, obs, syntax=world.config.syntax))
    assert traj.success
    assert "(Title: The Forgotten Tregreish)" in traj.observations[0]
    assert "(Title: Tebrask)" in traj.observations[1]
    assert type(world).turn_labels(traj) == ["useful", "useful", "useful"]


def test_world_a_chain_document_found_early_makes_its_own_search_wasted(world):
    task = world.tasks[3]  # 4 hops: The Lost Vreistas, Liteir Subrirn, Sheideim Foundation, Grehil
    traj = record(world, task, lambda obs, info, turn: expert_action(
        task, turn, obs, syntax=world.config.syntax))
    # search 2 (Liteir Subrirn) already returned hop 3's document, so search 3 finds nothing new
    assert "(Title: Sheideim Foundation)" in traj.observations[1]
    assert traj.success
    assert type(world).turn_labels(traj) == ["useful", "useful", "wasted", "useful", "useful"]


def test_world_repeated_off_chain_and_invalid_turns_are_wasted(world):
    task = world.tasks[1]
    actions = [search(world, "The Forgotten Tregreish"), search(world, "The Forgotten Tregreish"),
               search(world, "Huva Fidreidund"), "I think <search", search(world, "Tebrask"),
               answer(world, "Piteisia")]
    traj = record(world, task, scripted(actions))
    assert "(Title: Huva Fidreidund)" in traj.observations[0]  # off-chain, though retrieved
    assert "(Title: Tebrask)" not in traj.observations[2]
    assert traj.valid == [True, True, True, False, True, True] and traj.success
    assert type(world).turn_labels(traj) == [
        "useful", "wasted", "wasted", "wasted", "useful", "useful"]


def test_world_expert_mistakes_end_the_episode_harmfully(world):
    task = world.tasks[1]
    early = record(world, task, lambda obs, info, turn: expert_action(
        task, turn, obs, syntax=world.config.syntax, early_answer_prob=1.0))
    assert "Tebrask" in early.actions[1] and not early.success  # the bridge entity, wrong
    assert type(world).turn_labels(early) == ["useful", "harmful"]
    skip = record(world, task, lambda obs, info, turn: expert_action(
        task, turn, obs, syntax=world.config.syntax, skip_search_prob=1.0))
    assert type(world).turn_labels(skip) == ["harmful"]


def test_world_turn_limit_is_harmful_even_after_progress(world):
    task = world.tasks[1]
    traj = record(world, task, scripted([search(world, "Tebrask")] * 6))
    assert traj.truncated and not traj.terminated
    assert type(world).turn_labels(traj) == ["useful"] + ["wasted"] * 4 + ["harmful"]


def test_world_no_chain_or_no_texts_means_no_labels(world):
    nq = Task("nq-1", "who wrote x?", ("y",), "nq", {})
    traj = record(world, nq, scripted([search(world, "x"), answer(world, "y")]))
    assert type(world).turn_labels(traj) is None
    task = world.tasks[1]
    traj = record(world, task, lambda obs, info, turn: expert_action(
        task, turn, obs, syntax=world.config.syntax))
    traj.observations = []
    assert type(world).turn_labels(traj) is None


# ----------------------------------------------------------------------------------- KeyDoor


@pytest.fixture(scope="module")
def keydoor():
    env = KeyDoorEnv(num_tasks=4, seed=0)
    yield env
    env.close()


def move(direction):
    return call_text("xml", "move", {"direction": direction})


PICK, OPEN = call_text("xml", "pick_up"), call_text("xml", "open_door")


def test_keydoor_demonstrator_every_turn_useful():
    labelled = 0
    for demo in KeyDoorEnv.demonstrations({"num_tasks": 6, "seed": 2}, count=6, seed=0,
                                          options={}):
        traj = record(demo.env, demo.task, demo.policy, seed=demo.seed)
        assert traj.success and traj.n_turns == demo.task.metadata["shortest"]
        assert KeyDoorEnv.turn_labels(traj) == ["useful"] * traj.n_turns
        labelled += 1
    assert labelled == 6


def test_keydoor_mistakes_hand_checked(keydoor):
    task = keydoor.tasks[0]
    layout = load_layout(task.metadata)
    # start (0, 4), key (1, 3), door (3, 3) locked, vault (5, 2); the wall is column x = 3
    assert (layout["start"], layout["key"], layout["door"], layout["vault"]) == (
        (0, 4), (1, 3), (3, 3), (5, 2))
    actions = [
        move("west"),    # off the map: nothing changes                    wasted
        move("north"),   # (0, 3): one step nearer the key                 useful
        PICK,            # no key here                                     wasted
        move("east"),    # (1, 3): onto the key                            useful
        move("west"),    # away from the key                               wasted
        move("east"),    # back: nearer the key                            useful
        PICK,            # picks the key up                                useful
        OPEN,            # the door is two rooms away                      wasted
        move("east"),    # (2, 3): next to the door                        useful
        move("east"),    # into the locked door: stays                     wasted
        OPEN,            # unlocks it                                      useful
        move("east"),    # (3, 3), the doorway                             useful
        move("east"),    # (4, 3)                                          useful
        move("east"),    # (5, 3), one step below the vault                useful
        "<fly>north</fly>",  # invalid action                              wasted
        call_text("xml", "answer", {"answer": "amber"}),  # wrong password harmful
    ]
    traj = record(keydoor, task, scripted(actions))
    assert traj.terminated and not traj.success and traj.valid[14] is False
    assert KeyDoorEnv.turn_labels(traj) == [
        "wasted", "useful", "wasted", "useful", "wasted", "useful", "useful", "wasted",
        "useful", "wasted", "useful", "useful", "useful", "useful", "wasted", "harmful"]


def test_keydoor_right_answer_useful_turn_limit_harmful():
    env = KeyDoorEnv(num_tasks=4, seed=0, config={"max_turns": 3})
    task = env.tasks[0]
    plan = solve(load_layout(task.metadata), ((0, 4), False, False))
    traj = record(env, task, scripted([move(plan[0][1]), move(plan[1][1]), PICK]))
    assert traj.truncated
    assert KeyDoorEnv.turn_labels(traj) == ["useful", "useful", "harmful"]
    right = record(env, task, scripted([call_text("xml", "answer", {"answer": "marble"})]))
    assert right.success and KeyDoorEnv.turn_labels(right) == ["useful"]
    right.tool_calls = []
    assert KeyDoorEnv.turn_labels(right) is None  # nothing to replay
    env.close()
