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
