import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym.credit import CreditInputError, gigpo
from tests.credit.naive_gigpo import naive_gigpo

WORKED = {"group": [0, 0, 0, 0], "traj": ["A", "A", "B", "B"], "anchor": ["q", "d1", "q", "d2"],
          "reward": [0, 1, 0, 0]}


def test_worked_example():
    r = gigpo.advantages(**WORKED, gamma=1.0, norm="mean")
    np.testing.assert_allclose(r.episode, [0.5, 0.5, -0.5, -0.5])
    np.testing.assert_allclose(r.step, [0.5, 0, -0.5, 0])
    np.testing.assert_allclose(r.total, [1.0, 0.5, -1.0, -0.5])
    assert r.diagnostics["singleton_step_group_share"] == pytest.approx(2 / 3)


def test_invalid_penalty_is_per_row_when_all_anchors_differ():
    # every anchor distinct: step groups are singletons (A^S = 0) and only the episode term,
    # with the penalty on its own row, is left: E = [1, 0.9, 1], mean over rows 2.9 / 3
    r = gigpo.advantages([0, 0, 0], ["a", "a", "a"], ["x", "y", "z"], [0.0, 0.0, 1.0],
                         valid=[True, False, True], gamma=0.5, invalid_penalty=0.1, norm="mean",
                         episode_stats="step")
    np.testing.assert_allclose(r.episode, np.array([1, 0.9, 1]) - 2.9 / 3)
    assert np.array_equal(r.step, np.zeros(3))


def test_shared_anchor_step_group_discount_and_penalty_after_discounting():
    # a: rewards [0, 1], its last turn invalid; b: rewards [0, 0]; both start at anchor s.
    # gamma 0.5: G_a = [0.5, 1], G_b = [0, 0]; penalty 0.1 after discounting, on its own row:
    # Ghat_a = [0.5, 0.9] (penalising before discounting would give G_a0 = 0.45).
    # Step group {a0, b0} = {0.5, 0}: mean 0.25 -> A^S = [0.25, 0 | -0.25, 0] (singletons 0).
    # Episode (trajectory stats): R = [1, 0], mean 0.5; E = R - penalty -> [0.5, 0.4 | -0.5, -0.5]
    args = ([0] * 4, ["a", "a", "b", "b"], ["s", "x", "s", "y"], [0.0, 1.0, 0.0, 0.0])
    r = gigpo.advantages(*args, valid=[True, False, True, True], gamma=0.5, invalid_penalty=0.1,
                         norm="mean", step_weight=2.0)
    np.testing.assert_allclose(r.step, [0.25, 0.0, -0.25, 0.0])
    np.testing.assert_allclose(r.episode, [0.5, 0.4, -0.5, -0.5])
    np.testing.assert_allclose(r.total, [1.0, 0.4, -1.0, -0.5])
    # norm std on the same rows: the step pool {0.5, 0} has std sqrt(0.125), the episode
    # pool R = {1, 0} std sqrt(0.5)
    s = gigpo.advantages(*args, valid=[True, False, True, True], gamma=0.5, invalid_penalty=0.1,
                         norm="std")
    z = 0.5 / (np.sqrt(0.5) + 1e-6)
    np.testing.assert_allclose(s.step, [0.25 / (np.sqrt(0.125) + 1e-6), 0.0,
                                        -0.25 / (np.sqrt(0.125) + 1e-6), 0.0])
    np.testing.assert_allclose(s.episode, [z, 0.4 / (np.sqrt(0.5) + 1e-6), -z, -z])


def test_single_trajectory_group_passes_raw_score():
    r = gigpo.advantages([0, 0], ["a", "a"], ["x", "x"], [0.0, 2.0], gamma=1.0)
    np.testing.assert_allclose(r.episode, [2 / (1 + 1e-6)] * 2)
    # one step group {G=2, G=2}: all equal -> exactly 0
    assert np.array_equal(r.step, [0.0, 0.0])


def test_all_equal_rewards_give_exact_zeros():
    g = np.repeat(np.arange(3), 8)
    t = np.arange(24)
    r = gigpo.advantages(g, t, ["s"] * 24, np.full(24, 0.1))
    assert np.array_equal(r.total, np.zeros(24))
    assert r.diagnostics["zero_adv_group_share"] == 1.0


def test_one_turn_trajectories_values_for_both_dtypes():
    # group 0: R = [1, 0] -> +-0.7071 at both levels (one shared step group, anchor a);
    # group 1 is a lone trajectory: its raw score 3 passes through, its step group is a singleton
    z = 0.5 / (np.sqrt(0.5) + 1e-6)
    for dt in (np.float32, np.float64):
        r = gigpo.advantages([0, 0, 1], [0, 1, 2], ["a", "a", "b"], np.array([1, 0, 3], dtype=dt))
        assert r.total.dtype == np.float64
        np.testing.assert_allclose(r.episode, [z, -z, 3 / (1 + 1e-6)])
        np.testing.assert_allclose(r.step, [z, -z, 0.0])


def test_unicode_long_and_structured_anchors():
    long = "ü∂文字" * 5000
    anchors = [long, long + "x", long, {"pos": [1, 2]}, {"pos": [1, 2]}, ("t", 1)]
    r = gigpo.advantages([0] * 6, [0, 0, 1, 1, 2, 2], anchors, [1, 0, 0, 0, 1, 0], gamma=1.0)
    assert r.step_group[0] == r.step_group[2] != r.step_group[1]
    assert r.step_group[3] == r.step_group[4]


def test_similarity_groups_near_duplicates():
    a = ["the cat sat on the mat", "the cat sat on the hat", "completely different"]
    r = gigpo.advantages([0, 0, 0], [0, 1, 2], a, [1.0, 0.0, 0.0], similarity=0.9)
    assert r.step_group[0] == r.step_group[1] != r.step_group[2]
    with pytest.raises(CreditInputError, match="text anchors"):
        gigpo.advantages([0, 0], [0, 1], ["a", 3], [1.0, 0.0], similarity=0.9)


def test_errors():
    with pytest.raises(CreditInputError, match="anchor=2"):
        gigpo.advantages([0, 0, 0], [0, 0, 1], ["a", "b"], [1, 0, 0])
    with pytest.raises(CreditInputError, match="contiguous"):
        gigpo.advantages([0, 0, 0], ["a", "b", "a"], ["x"] * 3, [1, 0, 0])
    with pytest.raises(CreditInputError, match="no rows"):
        gigpo.advantages([], [], [], [])
    with pytest.raises(CreditInputError, match="episode_stats"):
        gigpo.advantages([0], [0], ["x"], [1.0], episode_stats="turn")


def test_traj_ids_may_repeat_across_groups():
    # ids 0 and 1 name different trajectories in groups 0 and 1: four one-turn trajectories,
    # two per group, each group [win, loss] at both levels (step groups never cross groups)
    r = gigpo.advantages([0, 0, 1, 1], [0, 1, 0, 1], ["x"] * 4, [1, 0, 0, 1])
    z = 0.5 / (np.sqrt(0.5) + 1e-6)
    np.testing.assert_allclose(r.total, [2 * z, -2 * z, -2 * z, 2 * z])
    assert len(set(r.step_group.tolist())) == 2


rows_strategy = st.lists(
    st.tuples(st.integers(1, 4), st.lists(st.sampled_from([0.0, 0.5, 1.0, -1.0]), min_size=1,
                                          max_size=5)),
    min_size=1, max_size=10)


@settings(max_examples=60, deadline=None)
@given(trajs=rows_strategy, data=st.data())
def test_matches_naive_reference(trajs, data):
    group, traj, anchor, reward, valid = [], [], [], [], []
    for k, (g, rs) in enumerate(trajs):
        for t, x in enumerate(rs):
            group.append(g)
            traj.append(k)
            anchor.append(data.draw(st.sampled_from(["s0", "s1", "s2 long", "s3"])))
            reward.append(x)
            valid.append(data.draw(st.booleans()))
    opts = {
        "gamma": data.draw(st.sampled_from([0.5, 0.95, 1.0])),
        "norm": data.draw(st.sampled_from(["std", "mean"])),
        "invalid_penalty": data.draw(st.sampled_from([0.0, 0.1])),
        "episode_stats": data.draw(st.sampled_from(["trajectory", "step"])),
        "similarity": data.draw(st.sampled_from([None, 0.6])),
        "step_weight": 0.7,
    }
    fast = gigpo.advantages(group, traj, anchor, reward, valid=valid, **opts)
    ep, stp, tot = naive_gigpo(group, traj, anchor, reward, valid=valid, **opts)
    np.testing.assert_allclose(fast.episode, ep, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fast.step, stp, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fast.total, tot, rtol=1e-9, atol=1e-9)
