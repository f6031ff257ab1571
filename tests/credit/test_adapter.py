"""adapter.tokens_to_turns: per-token arrays read back as one value per turn (the inverse of
turns_to_tokens), exact for per-turn estimators, the mean for per-token ones."""

from __future__ import annotations

import numpy as np
import pytest

from creditgym.credit import CreditInputError, estimate
from creditgym.credit.adapter import flatten, tokens_to_turns, turns_to_tokens
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
