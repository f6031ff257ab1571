"""adapter: trajectory groups laid out as turn rows (flatten, per_turn_input), per-row values
spread over tokens (turns_to_tokens) and read back (tokens_to_turns: exact for per-turn
estimators, the mean for per-token ones), and the errors a user sees for malformed input."""

from __future__ import annotations

import numpy as np
import pytest

from creditgym.credit import CreditInputError, estimate
from creditgym.credit.adapter import (
    flatten,
    per_turn_input,
    tokens_to_turns,
    turns_to_tokens,
)
from tests.credit.helpers import make_traj


def groups():
    return [[make_traj("a", "g", [0, 1], actions=[[1, 2, 3], [4]], observations=[[5], []]),
             make_traj("b", "g", [0, 0, 0], actions=[[1, 2], [], [7, 8, 9, 10]],
                       observations=[[5, 6], [6], []])],
            [make_traj("c", "h", [1.0], prompt=(3, 3, 3))]]


def test_round_trip_is_exact_and_an_empty_turn_reads_zero():
    batch = flatten(groups())
    values = np.array([0.1, 0.7, -1 / 3, 5.0, 0.3, 2.0])
    back = tokens_to_turns(batch, turns_to_tokens(batch, values))
    # exact, not approximate: a turn's one value comes back bit for bit (a mean of 3 x 0.1 would
    # not), so estimators that tie turns tie them in the bench too
    assert back.tolist() == [0.1, 0.7, -1 / 3, 0.0, 0.3, 2.0]


def test_differing_token_values_average_over_the_action_only():
    batch = flatten(groups())
    per_token = [np.arange(len(t.tokens()), dtype=float) for t in batch.trajectories]
    # a: prompt 2 tokens (0, 1), turn 0 action (2, 3, 4), obs (5), turn 1 action (6)
    assert tokens_to_turns(batch, per_token)[:2].tolist() == [3.0, 6.0]


def test_tempo_turns_are_the_mean_of_their_tokens():
    gs = [[make_traj("x", "g", [0, 1], actions=[[1, 2], [3, 4]]),
           make_traj("y", "g", [0, 0], actions=[[1, 2], [3, 5]])]]
    res = estimate(gs, "tempo")
    batch = flatten(gs)
    turns = tokens_to_turns(batch, res.advantages)
    x = res.advantages[0][res.trajectories[0].loss_mask() == 1]
    assert turns[1] == pytest.approx(x[2:].mean()) and x[2] != x[3]


def test_misaligned_arrays_are_refused():
    batch = flatten(groups())
    arrays = turns_to_tokens(batch, np.zeros(6))
    with pytest.raises(CreditInputError, match="per_token\\[1\\].*'b'.*align it with tokens"):
        tokens_to_turns(batch, [arrays[0], arrays[1][:-1], arrays[2]])
    with pytest.raises(CreditInputError, match="expected 3 arrays"):
        tokens_to_turns(batch, arrays[:2])


def test_float32_token_values_are_averaged_in_float64():
    # a trainer may hand back float32 arrays (torch); summing a long turn in float32 drifts
    # (here by ~1e-7 relative), so the turn's mean must be accumulated in float64
    batch = flatten([[make_traj("x", "g", [0.0], actions=[list(range(3000))])]])
    per_token = np.zeros(len(batch.trajectories[0].tokens()), dtype=np.float32)
    action = per_token[2:3002]  # after the 2 prompt tokens
    action[:] = 0.1
    action[0] = 0.2
    want = (float(np.float32(0.2)) + 2999 * float(np.float32(0.1))) / 3000
    assert tokens_to_turns(batch, [per_token])[0] == pytest.approx(want, rel=1e-12, abs=0)


def test_turns_to_tokens_refuses_values_that_are_not_one_per_row():
    with pytest.raises(CreditInputError, match=r"^values: expected 6 rows, got shape \(5,\)$"):
        turns_to_tokens(flatten(groups()), np.zeros(5))


def test_flatten_refuses_no_groups_and_names_a_trajectory_without_turns():
    with pytest.raises(CreditInputError, match=r"^groups: no trajectory groups given$"):
        flatten([])
    # the empty trajectory is not the first one: the message must name it, not its neighbour
    gs = [[make_traj("a", "g", [1.0]), make_traj("e", "g", []), make_traj("f", "g", [])]]
    with pytest.raises(CreditInputError,
                       match=r"^trajectory 'e' has no turns; credit needs >= 1 turn$"):
        flatten(gs)


def test_flatten_valid_is_a_boolean_row_mask():
    # callers select rows with it (reward[valid], ~valid): 0/1 floats would index, not mask
    batch = flatten([[make_traj("a", "g", [1.0, 2.0, 3.0], valid=[1, 0, 1])]])
    assert batch.valid.dtype == bool
    assert batch.reward[batch.valid].tolist() == [1.0, 3.0]


def test_per_turn_input_reads_a_mapping_in_row_order():
    batch = flatten(groups())
    src = {"c": [9.0], "b": [3.0, 4.0, 5.0], "a": [1.0, 2.0]}
    flat = per_turn_input("step_reward", {"step_reward": src}, batch, "pure")
    assert flat.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 9.0]


def test_per_turn_input_errors_name_the_input_and_the_trajectory():
    batch = flatten(groups())
    with pytest.raises(CreditInputError, match=r"^pure needs inputs\['step_reward'\] \(one "
                       r"value per turn of each trajectory, computed by the trainer\)"):
        per_turn_input("step_reward", {"other": [0.0]}, batch, "pure")
    with pytest.raises(CreditInputError,
                       match=r"^inputs\['step_reward'\] has no entry for trajectory 'b'$"):
        per_turn_input("step_reward", {"step_reward": {"a": [0, 0], "c": [0]}}, batch, "pure")
    with pytest.raises(CreditInputError,
                       match=r"^inputs\['step_reward'\] has 2 entries for 3 trajectories$"):
        per_turn_input("step_reward", {"step_reward": [[0, 0], [0, 0, 0]]}, batch, "pure")
    nan = {"a": [0, np.nan], "b": [0, 0, 0], "c": [0]}
    with pytest.raises(CreditInputError, match=r"^inputs\['step_reward'\]: value at row 1 is nan"):
        per_turn_input("step_reward", {"step_reward": nan}, batch, "pure")
