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


# --- mutation-testing round 3 (docs/mutation-report.md, "Third run") ---


def test_defaults_are_gamma_095_and_no_penalty_without_an_invalid_penalty():
    # WORKED with the default gamma 0.95: G_A = [0.95, 1], G_B = [0, 0]; step group q = {0.95, 0},
    # mean 0.475 -> A^S = [0.475, 0 | -0.475, 0]; episode R = [1, 0] -> +-0.5 (norm mean)
    want_step = [0.475, 0.0, -0.475, 0.0]
    r = gigpo.advantages(**WORKED, norm="mean")
    np.testing.assert_allclose(r.step, want_step)
    np.testing.assert_allclose(r.episode, [0.5, 0.5, -0.5, -0.5])
    # an invalid turn costs nothing unless invalid_penalty is set (default 0)
    r = gigpo.advantages(**WORKED, norm="mean", valid=[True, False, True, True])
    np.testing.assert_allclose(r.step, want_step)
    np.testing.assert_allclose(r.episode, [0.5, 0.5, -0.5, -0.5])
    # a penalty without `valid` has no invalid turn to apply to
    r = gigpo.advantages(**WORKED, norm="mean", invalid_penalty=0.1)
    np.testing.assert_allclose(r.step, want_step)
    np.testing.assert_allclose(r.episode, [0.5, 0.5, -0.5, -0.5])


def test_valid_flags_given_as_0_1_integers_act_as_booleans():
    # the shared-anchor case above with valid as ints (a list and an int array): same values
    args = ([0] * 4, ["a", "a", "b", "b"], ["s", "x", "s", "y"], [0.0, 1.0, 0.0, 0.0])
    for valid in ([1, 0, 1, 1], np.array([1, 0, 1, 1])):
        r = gigpo.advantages(*args, valid=valid, gamma=0.5, invalid_penalty=0.1, norm="mean",
                             step_weight=2.0)
        np.testing.assert_allclose(r.step, [0.25, 0.0, -0.25, 0.0])
        np.testing.assert_allclose(r.episode, [0.5, 0.4, -0.5, -0.5])


@pytest.mark.parametrize("with_valid", [False, True])
@pytest.mark.parametrize("short", ["group", "traj", "anchor", "reward", "valid"])
def test_length_mismatch_names_every_array(short, with_valid):
    if short == "valid" and not with_valid:
        pytest.skip("no valid array")
    cols = {"group": [0, 0, 0], "traj": [0, 1, 2], "anchor": ["x", "x", "y"],
            "reward": [1.0, 0.0, 0.0], "valid": [True, False, True]}
    cols[short] = cols[short][:2]
    names = ["group", "traj", "anchor", "reward"] + (["valid"] if with_valid else [])
    desc = ", ".join(f"{k}={2 if k == short else 3}" for k in names)
    kwargs = {"valid": cols["valid"], "invalid_penalty": 0.1} if with_valid else {}
    with pytest.raises(CreditInputError) as info:
        gigpo.advantages(cols["group"], cols["traj"], cols["anchor"], cols["reward"], **kwargs)
    assert str(info.value) == f"arrays must have the same length, got {desc}"


def test_error_messages_name_the_bad_input():
    with pytest.raises(CreditInputError, match=r"^reward: value at row 1 is nan"):
        gigpo.advantages([0, 0], [0, 1], ["x", "x"], [1.0, float("nan")])
    with pytest.raises(CreditInputError, match=r"^norm: 'z' is not one of 'std', 'mean'$"):
        gigpo.advantages([0], [0], ["x"], [1.0], norm="z")


def test_step_groups_never_merge_across_groups_and_are_numbered_in_order():
    # 3 groups of two one-turn trajectories, anchors x, y in each: 6 singleton step groups,
    # numbered (group, anchor) in order: 0..5. All A^S are 0 though rows 1 (y, reward 1) and
    # 4 (x, reward 0) would share a key if the (group, anchor) pairs were not kept apart.
    r = gigpo.advantages([0, 0, 1, 1, 2, 2], [0, 1, 2, 3, 4, 5], ["x", "y"] * 3,
                         [0.0, 1.0, 0.0, 0.0, 0.0, 1.0], norm="mean")
    assert r.step_group.tolist() == [0, 1, 2, 3, 4, 5]
    assert np.array_equal(r.step, np.zeros(6))
    assert r.diagnostics["step_groups"] == 6.0
    # group 0 rows: anchors x, y, x -> codes 0, 1, 0; group 1: y -> 2
    r = gigpo.advantages([0, 0, 0, 1], [0, 1, 2, 3], ["x", "y", "x", "y"], [1.0, 0.0, 0.0, 1.0])
    assert r.step_group.tolist() == [0, 1, 0, 2]


def test_similarity_step_groups_are_numbered_from_zero_per_group_in_order():
    # group 0: two near-duplicates (cluster 0) and one other text (1); group 1: one text (2)
    a = ["the cat sat on the mat", "the cat sat on the hat", "completely different", "other"]
    r = gigpo.advantages([0, 0, 0, 1], [0, 1, 2, 3], a, [1.0, 0.0, 0.0, 1.0], similarity=0.9,
                         norm="mean", gamma=1.0)
    assert r.step_group.tolist() == [0, 0, 1, 2]
    assert r.diagnostics["step_groups"] == 3.0
    assert r.diagnostics["step_group_size_mean"] == pytest.approx(4 / 3)
    assert r.diagnostics["singleton_step_group_share"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(r.step, [0.5, -0.5, 0.0, 0.0])


def test_similarity_clusters_scan_each_group_in_row_order():
    # A ~ B and B ~ C (difflib ratio 0.9) but A !~ C (0.8). Scanned in row order A, B, C:
    # A opens a cluster, B joins it, C opens a new one. Groups 0 and 1 interleave row by row
    # (40 one-turn trajectories), so the scan order comes from a stable sort of the groups.
    A, B, C = "abcdefghij", "abcdefghiX", "abcdefghYX"
    texts = [f"{i:02d}" * 6 + "#" * (i % 7) for i in range(40)]  # pairwise far apart
    texts[4], texts[6], texts[8] = A, B, C
    group = [i % 2 for i in range(40)]
    reward = [0.0] * 40
    reward[4] = 1.0
    r = gigpo.advantages(group, list(range(40)), texts, reward, similarity=0.9, norm="mean")
    assert r.step_group[4] == r.step_group[6] != r.step_group[8]
    # cluster {A, B} = returns {1, 0}: +-0.5; C is alone: 0
    np.testing.assert_allclose(r.step[[4, 6, 8]], [0.5, -0.5, 0.0])


def test_diagnostics_of_the_worked_example():
    r = gigpo.advantages(**WORKED, gamma=1.0, norm="mean")
    assert r.diagnostics == pytest.approx({
        "groups": 1.0, "group_size_mean": 2.0, "group_size_min": 2.0,
        "step_groups": 3.0, "step_group_size_mean": 4 / 3, "singleton_step_group_share": 2 / 3,
        "zero_adv_group_share": 0.0, "mean_abs_episode": 0.5, "mean_abs_step": 0.25,
        "mean_abs_total": 0.75})


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_config_similarity_must_be_strictly_between_0_and_1(bad):
    from creditgym.errors import ConfigError

    with pytest.raises(ConfigError, match="similarity"):
        gigpo.GiGPOConfig(similarity=bad)
    assert gigpo.GiGPOConfig(similarity=0.5).similarity == 0.5
    assert gigpo.GiGPOConfig(similarity=None).similarity is None
