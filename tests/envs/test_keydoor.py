"""KeyDoor, the non-search multi-turn example: valid gymnasium env, solvable, deterministic, and
its states recur across the members of a group."""

from __future__ import annotations

import random
import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import creditgym.envs  # noqa: F401  (registers the built-in ids)
from creditgym.envs.demonstration import play
from creditgym.envs.examples.keydoor import (
    MAX_STEPS, MIN_STEPS, MOVES, KeyDoorEnv, load_layout, make_tasks, solve, step_state,
)
from creditgym.errors import ConfigError


def test_registered_and_passes_check_env():
    for kwargs in ({"num_tasks": 10}, {"num_tasks": 10, "syntax": "json"}):
        env = gymnasium.make("creditgym/KeyDoor-v0", **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # check_env warnings are failures here
            check_env(env.unwrapped)
        env.close()


@pytest.mark.parametrize("syntax", ["xml", "json"])
def test_the_expert_solves_every_task_by_the_shortest_way(syntax):
    env_kwargs = {"num_tasks": 60, "seed": 7, "syntax": syntax}
    solved = 0
    for demo in KeyDoorEnv.demonstrations(env_kwargs, count=60, seed=0, options={}):
        actions, rewards, info, terminated = play(demo)
        shortest = demo.task.metadata["shortest"]
        assert MIN_STEPS <= shortest <= MAX_STEPS
        assert terminated and info["valid"] and len(actions) == shortest
        solved += rewards[-1] == 1.0 and info["metrics"]["reached_vault"] == 1.0
    assert solved == 60


def test_a_clumsy_expert_replans_and_still_escapes():
    results = [play(d) for d in KeyDoorEnv.demonstrations(
        {"num_tasks": 20}, count=20, seed=1, options={"mistake_prob": 0.3})]
    detours = [len(actions) - d.task.metadata["shortest"] for (actions, *_), d in
               zip(results, KeyDoorEnv.demonstrations({"num_tasks": 20}, count=20, seed=1,
                                                      options={}))]
    assert max(detours) > 0 and min(detours) >= 0
    assert sum(rewards[-1] == 1.0 for _, rewards, _, _ in results) >= 18
    with pytest.raises(ConfigError, match="mistake_prob"):
        KeyDoorEnv.demonstrations({}, count=1, seed=0, options={"mistakes": 1})


def test_deterministic():
    first, second = make_tasks(20, seed=3), make_tasks(20, seed=3)
    assert [t.to_dict() for t in first] == [t.to_dict() for t in second]
    assert make_tasks(5, seed=3)[0].question != make_tasks(5, seed=4)[0].question
    runs = []
    for _ in range(2):
        env, rng = KeyDoorEnv(num_tasks=10, seed=3), random.Random(0)
        obs, info = env.reset(seed=5)
        trace = [obs, info["anchor"]]
        for _ in range(25):
            action = rng.choice([f"<move>{d}</move>" for d in MOVES] + [
                "<pick_up></pick_up>", "<open_door></open_door>", "<jump>now</jump>"])
            obs, reward, term, trunc, info = env.step(action)
            trace += [obs, reward, info["anchor"], info["valid"]]
        runs.append(trace)
    assert runs[0] == runs[1]


def test_the_rules():
    env = KeyDoorEnv(num_tasks=20)
    # A task whose room west of the door is free (extra walls are random).
    task = next(t for t in env.tasks if [t.metadata["door"][0] - 1, t.metadata["door"][1]]
                not in t.metadata["walls"])
    layout = load_layout(task.metadata)
    obs, info = env.reset(seed=0, options={"task": task})
    assert "You carry nothing" in obs and "The door is locked" in obs
    door = layout["door"]
    # Walk next to the door without the key: it stays locked.
    to_door = solve({**layout, "key": (-9, -9), "vault": (door[0] - 1, door[1])},
                    (layout["start"], False, False))
    for tool, arg in to_door:
        obs, *_ = env.step(f"<{tool}>{arg}</{tool}>")
    assert f"You are in room ({door[0] - 1}, {door[1]})" in obs
    obs, *_ = env.step("<open_door></open_door>")
    assert "you have no key" in obs
    obs, *_ = env.step("<move>east</move>")
    assert "The door is locked." in obs and f"room ({door[0] - 1}, {door[1]})" in obs
    obs, *_ = env.step("<pick_up></pick_up>")
    assert "nothing to pick up" in obs
    obs, reward, term, _, info = env.step("<answer>sesame</answer>")
    assert term and reward == 0.0 and info["metrics"]["reached_vault"] == 0.0


def test_anchors_are_states_and_recur_across_a_group():
    env = KeyDoorEnv(num_tasks=5)
    task = env.tasks[1]
    layout = load_layout(task.metadata)
    start = (layout["start"], False, False)

    def anchors(actions):
        obs, info = env.reset(seed=0, options={"task": task})
        seen = [info["anchor"]]
        for action in actions:
            obs, _, term, trunc, info = env.step(action)
            seen.append(info["anchor"])
        return seen

    plan = [f"<{t}>{a}</{t}>" for t, a in solve(layout, start)]
    plan.append(f"<answer>{layout['password']}</answer>")
    direct = anchors(plan)
    # Another member of the group wanders first (there and back), then follows the plan.
    wander = next(d for d in MOVES if step_state(layout, start, "move", d)[0] != start)
    back = {"north": "south", "south": "north", "east": "west", "west": "east"}[wander]
    detour = anchors([f"<move>{wander}</move>", f"<move>{back}</move>", "<jump>hm</jump>"] + plan)
    assert detour[1] != detour[0] == detour[2] == direct[0]  # back where it started
    assert detour[3] == direct[0]  # an invalid action changes nothing
    assert detour[3:] == direct  # the same states, in the same order, as the direct member
    assert "vault" in direct[-1] and all(a.startswith("You are in room") for a in direct)


def test_compass_points_at_the_key_then_the_door_then_the_vault():
    from creditgym.envs.examples.keydoor import describe

    layout = load_layout(make_tasks(1, seed=3)[0].metadata)
    (kx, ky), (dx, dy), (vx, vy) = layout["key"], layout["door"], layout["vault"]

    def bearing(here, there):
        legs = ([f"{abs(there[0] - here[0])} {'east' if there[0] > here[0] else 'west'}"]
                if there[0] != here[0] else [])
        legs += ([f"{abs(there[1] - here[1])} {'south' if there[1] > here[1] else 'north'}"]
                 if there[1] != here[1] else [])
        return " and ".join(legs)

    start = tuple(layout["start"])
    assert describe(layout, (start, False, False), compass=True).endswith(
        f"The key is {bearing(start, (kx, ky))}.")
    assert describe(layout, ((kx, ky), False, False), compass=True).endswith("The key is here.")
    assert describe(layout, ((kx, ky), True, False), compass=True).endswith(
        f"The door is {bearing((kx, ky), (dx, dy))}.")
    assert describe(layout, ((dx, dy), True, True), compass=True).endswith(
        f"The vault is {bearing((dx, dy), (vx, vy))}.")
    assert "The key" not in describe(layout, (start, False, False))  # off by default

    env = KeyDoorEnv(num_tasks=3, seed=3, compass=True)
    obs, info = env.reset(seed=0, options={"task": env.tasks[0]})
    assert obs.endswith(f"The key is {bearing(start, (kx, ky))}.") and info["anchor"] in obs
    # the expert still solves every task with the compass on
    demos = KeyDoorEnv.demonstrations({"num_tasks": 3, "seed": 3, "compass": True}, count=3,
                                      seed=0, options={})
    assert all(play(d)[1][-1] == 1.0 for d in demos)


@pytest.mark.parametrize("compass", [False, True])
def test_the_vault_note_comes_last_so_the_answer_copies_the_tokens_just_before_it(compass):
    """The password ends the observation, quoted (a byte-level tokenizer then splits it as in
    ``<answer>word</answer>``, without a leading space); anywhere else it is unreadable."""
    from creditgym.envs.examples.keydoor import describe

    layout = load_layout(make_tasks(1, seed=5)[0].metadata)
    password = layout["password"]
    vault = describe(layout, (layout["vault"], True, True), compass=compass)
    assert vault.endswith(f'A note reads: "{password}".') and vault.count(password) == 1
    assert password not in describe(layout, (layout["start"], False, False), compass=compass)


def test_a_fixed_password_keeps_the_layouts_and_counts_only_in_the_vault():
    """``password="done"``: the same maps as without it, every vault's note reads the one word,
    and answering it pays only where it was read; the expert still solves every task."""
    plain, fixed = make_tasks(8, seed=2), make_tasks(8, seed=2, password="done")
    assert [{**t.metadata, "password": ""} for t in plain] == \
        [{**t.metadata, "password": ""} for t in fixed]
    assert {t.metadata["password"] for t in fixed} == {"done"}
    assert all(list(t.golden_answers) == ["done"] for t in fixed)

    env = KeyDoorEnv(num_tasks=8, seed=2, password="done")
    task = env.tasks[0]
    env.reset(seed=0, options={"task": task})
    *_, terminated, _, info = env.step("<answer>done</answer>")  # at the start: a guess
    assert terminated and info["metrics"]["correct"] == 0.0 and info["metrics"]["reward"] == 0.0
    demos = KeyDoorEnv.demonstrations({"num_tasks": 8, "seed": 2, "password": "done"}, count=8,
                                      seed=0, options={})
    results = [play(d) for d in demos]
    assert all(rewards[-1] == 1.0 and info["metrics"]["reached_vault"] == 1.0
               for _, rewards, info, _ in results)
    # without a fixed password a right guess still pays (the random words are the secret)
    env = KeyDoorEnv(num_tasks=8, seed=2)
    env.reset(seed=0, options={"task": env.tasks[0]})
    guess = env.tasks[0].metadata["password"]
    assert env.step(f"<answer>{guess}</answer>")[1] == 1.0


@pytest.mark.parametrize("bad", ["Done", "two words", "", 7])
def test_a_bad_password_is_refused_with_what_is_allowed(bad):
    with pytest.raises(ConfigError, match="one lowercase word"):
        KeyDoorEnv(num_tasks=2, password=bad)
