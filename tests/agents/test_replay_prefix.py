"""``replay_prefix`` without a model: a continuation re-steps a record's first turns through a
freshly reset environment and copies them as recorded; an environment that answers otherwise
than the record (observation, reward, an early end) or a start outside the record is refused."""

from __future__ import annotations

import asyncio

import pytest

from creditgym.agents.rollout import replay_prefix
from creditgym.trajectory import Trajectory
from tests.agents.countdown_env import TASK, CountdownEnv


def scripted_record(actions=("a", "bb", "ccc"), env=None):
    """A record made by stepping ``env`` with ``actions`` (ids and log-probs made up: replay
    copies them without reading them)."""
    env = env or CountdownEnv()
    obs, info = env.reset(seed=3, options={"task": TASK})
    rec = Trajectory(id="r", group="g", task=TASK.to_dict(), prompt_ids=[1, 2, 3], seed=3)
    anchor = info.get("anchor", obs)
    for i, action in enumerate(actions):
        obs, reward, _, _, info = env.step(action)
        rec.add_turn(action=action, action_ids=[10 + i, 11], observation=obs,
                     observation_ids=[20 + i], reward=reward, anchor=anchor, info=info,
                     action_logprobs=[-0.5, -1.5 - i], finish_reason=["length", "stop"][i % 2])
        anchor = info.get("anchor", obs)
    return rec


def replay(rec, turns, env=None):
    env = env or CountdownEnv()
    obs, info = env.reset(seed=3, options={"task": TASK})
    traj = Trajectory(id="c", group="g", task=TASK.to_dict(), prompt_ids=[])
    messages = [{"role": "user", "content": obs}]
    running, anchor = asyncio.run(replay_prefix(env, rec, turns, traj, messages,
                                                info.get("anchor", obs)))
    return traj, messages, running, anchor


def test_replay_prefix_copies_the_recorded_turns_and_grows_the_chat():
    rec = scripted_record()
    traj, messages, running, anchor = replay(rec, 2)
    assert running == [1, 2, 3, 10, 11, 20, 11, 11, 21] and anchor == "state 2"
    assert traj.prompt_ids == [1, 2, 3]
    for field in ("actions", "action_ids", "action_logprobs", "observations", "observation_ids",
                  "rewards", "anchors", "finish_reasons", "turn_metrics"):
        assert getattr(traj, field) == getattr(rec, field)[:2], field
    assert messages[1:] == [{"role": "assistant", "content": "a"},
                            {"role": "user", "content": rec.observations[0]},
                            {"role": "assistant", "content": "bb"},
                            {"role": "user", "content": rec.observations[1]}]


def test_replay_prefix_fills_what_older_records_lack():
    rec = scripted_record(env=CountdownEnv(anchors=False))
    rec.finish_reasons, rec.observations = [], []  # records from before these were kept
    traj, _, _, anchor = replay(rec, 2, env=CountdownEnv(anchors=False))
    assert traj.finish_reasons == ["stop", "stop"]
    assert traj.observations == [f"turn {k}: you wrote {k} characters" for k in (1, 2)]
    assert anchor == traj.observations[1]  # no anchors: the last observation


@pytest.mark.parametrize("turns", [3, -1])
def test_replay_prefix_refuses_a_start_outside_the_record(turns):
    with pytest.raises(ValueError, match=rf"cannot start before turn {turns} \(it has 3 turns, "
                                         r"action texts recorded: True\)"):
        replay(scripted_record(), turns)


def test_replay_prefix_refuses_a_record_without_action_texts():
    rec = scripted_record()
    rec.actions = []
    with pytest.raises(ValueError, match="action texts recorded: False"):
        replay(rec, 1)


def tampered(field, turn, value):
    rec = scripted_record()
    getattr(rec, field)[turn] = value
    return rec


@pytest.mark.parametrize("rec,env", [
    (tampered("observations", 0, "something else"), None),
    (tampered("rewards", 1, 0.6), None),
    (scripted_record(), CountdownEnv(turns=1)),  # the environment ends where the record went on
], ids=["observation", "reward", "early-end"])
def test_replay_prefix_refuses_an_environment_that_answers_otherwise(rec, env):
    with pytest.raises(RuntimeError, match=r"turn \d differs from the record .* the environment "
                                           r"is not deterministic for this seed and task "
                                           r"\(`creditgym replay verify` shows where\)"):
        replay(rec, 2, env=env)


def test_replay_prefix_tolerates_a_reward_within_1e9():
    rec = scripted_record(env=CountdownEnv(reward=0.0))
    rec.rewards[0] = 1e-9
    traj, *_ = replay(rec, 2, env=CountdownEnv(reward=0.0))
    assert traj.rewards == [0.0, 0.0]  # the environment's, not the record's
