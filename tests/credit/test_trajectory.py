import json

import numpy as np
import pytest

from creditgym.trajectory import SCHEMA, Trajectory, TrajectoryFormatError
from tests.credit.helpers import make_traj


def test_tokens_and_loss_mask():
    t = make_traj("a", "g", [0, 1], actions=[[3, 4], [5]], observations=[[6], []])
    assert t.tokens().tolist() == [1, 2, 3, 4, 6, 5]
    assert t.loss_mask().tolist() == [0, 0, 1, 1, 0, 1]
    assert t.turn_of_token().tolist() == [-1, -1, 0, 0, 0, 1]
    assert t.episode_return == 1.0 and t.n_turns == 2


def test_roundtrip_json():
    t = make_traj("a", "g", [0.5], anchors=[{"room": "kitchen"}], metrics={"em": 1.0})
    d = json.loads(json.dumps(t.to_dict()))
    assert d["schema"] == SCHEMA
    back = Trajectory.from_dict(d)
    assert back == t


def test_rejects_bad_records():
    d = make_traj("a", "g", [0.5]).to_dict()
    with pytest.raises(TrajectoryFormatError, match="schema"):
        Trajectory.from_dict({**d, "schema": "other/2"})
    with pytest.raises(TrajectoryFormatError, match="unknown"):
        Trajectory.from_dict({**d, "extra": 1})
    with pytest.raises(TrajectoryFormatError, match="rewards=2"):
        Trajectory.from_dict({**d, "rewards": [0.0, 1.0]})
    with pytest.raises(TrajectoryFormatError, match="logprobs"):
        Trajectory.from_dict({**d, "action_logprobs": [[-0.1]]})


def test_zero_turn_trajectory_is_representable():
    t = Trajectory(id="z", group="g", task={}, prompt_ids=[1, 2])
    assert t.tokens().tolist() == [1, 2] and t.loss_mask().tolist() == [0, 0]
    assert isinstance(t.tokens(), np.ndarray)


def test_replay_fields_are_empty_or_one_per_turn():
    t = make_traj("a", "g", [0.0, 1.0])
    assert t.actions == [] and t.env_id == "" and t.error is None and t.created > 0
    full = make_traj("b", "g", [0.0, 1.0])
    full.actions, full.observations = ["<search>x</search>", "<answer>y</answer>"], ["obs", ""]
    back = Trajectory.from_dict(json.loads(json.dumps(full.to_dict())))
    assert back == full and back.actions[1] == "<answer>y</answer>"
    d = full.to_dict()
    with pytest.raises(TrajectoryFormatError, match="observations=1"):
        Trajectory.from_dict({**d, "observations": ["only one"]})
    with pytest.raises(TrajectoryFormatError, match="malformed"):
        Trajectory.from_dict({**d, "finish_reasons": None})


def test_records_without_replay_fields_load_with_defaults():
    d = make_traj("a", "g", [1.0], metrics={"em": 1.0}).to_dict()
    for key in ("env_id", "env_kwargs", "seed", "prompt_messages", "actions", "observations",
                "turn_metrics", "tool_calls", "finish_reasons", "terminated", "truncated", "error",
                "created"):
        del d[key]
    t = Trajectory.from_dict(d)
    assert t.created == 0.0 and t.env_kwargs == {} and t.terminated is False
    assert t.success is True and make_traj("b", "g", [0.0]).success is None


def test_add_turn_and_finish_record_every_per_turn_field():
    t = Trajectory(id="r", group="g", task={}, prompt_ids=[1])
    call = {"name": "search", "arguments": {"query": "x"}, "ok": True, "error": None}
    t.add_turn(action="<search>x</search>", action_ids=[5, 6], observation="docs",
               observation_ids=[7], reward=0.0, anchor="q", action_logprobs=[-0.5, -0.25],
               info={"valid": True, "tool_calls": [call], "metrics": {"searches": 1}},
               finish_reason="length")
    t.add_turn(action="<answer>y</answer>", action_ids=[8], observation="", observation_ids=[],
               reward=1.0, anchor="q|x", info={"metrics": {"em": 1.0, "success": 1.0}})
    t.metrics["rollout/diagnostic"] = 3  # kept by finish: the last turn does not set it
    t.finish(terminated=True, truncated=False)
    assert t.tokens().tolist() == [1, 5, 6, 7, 8] and t.loss_mask().tolist() == [0, 1, 1, 0, 1]
    assert t.action_logprobs == [[-0.5, -0.25], [0.0]]  # a demonstration's turn: zeros
    assert t.tool_calls == [[call], []] and t.finish_reasons == ["length", "stop"]
    assert t.turn_metrics == [{"searches": 1}, {"em": 1.0, "success": 1.0}]
    assert t.metrics == {"rollout/diagnostic": 3, "em": 1.0, "success": 1.0}
    assert t.terminated and not t.truncated and t.success is True and t.valid == [True, True]
    assert Trajectory.from_dict(json.loads(json.dumps(t.to_dict()))) == t


def test_add_turn_rejects_mismatched_logprobs_and_mixed_records():
    t = Trajectory(id="r", group="g", task={}, prompt_ids=[1])
    with pytest.raises(TrajectoryFormatError, match="2 action ids but 1 logprobs"):
        t.add_turn(action="a", action_ids=[1, 2], observation="", observation_ids=[], reward=0,
                   anchor=None, info={}, action_logprobs=[-1.0])
    assert t.n_turns == 0
    legacy = make_traj("a", "g", [0.0])  # turns built without texts
    with pytest.raises(TrajectoryFormatError, match="add_turn"):
        legacy.add_turn(action="a", action_ids=[1], observation="", observation_ids=[],
                        reward=0, anchor=None, info={})
