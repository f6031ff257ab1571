import numpy as np
import pytest

from creditgym.credit import CreditInputError, oprl, pure


def test_min_form_examples():
    np.testing.assert_allclose(pure.min_form([0.9, -0.5, 0.8]), [0, -0.5, 0], atol=1e-5)
    np.testing.assert_allclose(pure.min_form([0.7, 0.6]), [0.188, 0.439], atol=1e-3)
    both = pure.min_form([0.9, -0.5, 0.8, 0.7, 0.6], lengths=[3, 2])
    np.testing.assert_allclose(both[3:], pure.min_form([0.7, 0.6]))
    assert pure.min_form(np.array([0.5], dtype=np.float32))[0] == pytest.approx(0.5)


def test_min_form_extreme_values_are_stable():
    out = pure.min_form([1000.0, -1000.0, 5.0])
    assert np.isfinite(out).all()
    with pytest.raises(CreditInputError, match="lengths"):
        pure.min_form([1.0, 2.0], lengths=[1])


def test_min_form_errors_name_the_input_and_allow_empty_responses():
    with pytest.raises(CreditInputError, match=r"^temperature: must be > 0, got 0$"):
        pure.min_form([1.0], temperature=0)
    with pytest.raises(CreditInputError, match="^step_reward: expected numbers"):
        pure.min_form(["x"])
    # a response with no steps between two others: T=0.2 weights of [0.7, 0.6] are
    # softmax([-3.5, -3]) = [0.3775, 0.6225]; the lone 0.5 keeps weight 1
    out = pure.min_form([0.7, 0.6, 0.5], temperature=0.2, lengths=[2, 0, 1])
    np.testing.assert_allclose(out, [0.2642785, 0.3734756, 0.5], atol=1e-6)


def test_oprl_worked_example():
    group, traj, q = [0, 0, 0], ["A", "A", "B"], [1.0, 0.5, -1.0]
    np.testing.assert_allclose(oprl.step_rewards(q), [1, 0.5, -1], atol=1e-4)
    assert oprl.trajectory_dpo_loss(group, traj, q, [1, 0]) == pytest.approx(0.6504, abs=1e-4)
    assert oprl.trajectory_dpo_loss(group, traj, q, [1, 1, 0]) == pytest.approx(0.6504, abs=1e-4)
    a = oprl.advantages(group, traj, [10.0, 0.0], [1.0, 0.5, -1.0])
    np.testing.assert_allclose(a, [12, 11.5, -11.75])
    a_rows = oprl.advantages(group, traj, [10.0, 10.0, 0.0], [1.0, 0.5, -1.0])
    np.testing.assert_allclose(a_rows, a)


def test_oprl_edge_cases():
    # no (success, failure) pair -> 0; group of one -> zero baselines
    assert oprl.trajectory_dpo_loss([0, 1], ["a", "b"], [1.0, 2.0], [1, 0]) == 0.0
    assert np.array_equal(oprl.advantages([0], ["a"], [3.0], [0.4]), [0.0])
    assert oprl.step_rewards([]).size == 0
    with pytest.raises(CreditInputError, match="changes inside a trajectory"):
        oprl.advantages([0, 0], ["a", "a"], [1.0, 2.0], [0.1, 0.2])
    with pytest.raises(CreditInputError, match="per row"):
        oprl.advantages([0, 0, 0], ["a", "a", "b"], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.3])


def test_oprl_dpo_pairs_match_loop():
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(5), 12)
    traj = np.repeat(np.arange(20), 3)
    q = rng.normal(size=60)
    succ = rng.random(20) > 0.5
    Q = 0.05 * q.reshape(20, 3).mean(1)
    losses = [np.logaddexp(0, -(Q[i] - Q[j])) for i in range(20) for j in range(20)
              if succ[i] and not succ[j] and i // 4 == j // 4]
    got = oprl.trajectory_dpo_loss(group, traj, q, succ.astype(float))
    assert got == pytest.approx(np.mean(losses))


# --- mutation-testing round 3 (docs/mutation-report.md, "Third run") ---


def test_oprl_step_rewards_default_beta_and_the_1e6_in_the_scale():
    # s = beta q / (max |beta q| + 1e-6) with the default beta 0.05: for q = [1, -0.5] the
    # scale is 0.050001, so the largest step reward is 0.05 / 0.050001, just under 1
    np.testing.assert_allclose(oprl.step_rewards([1.0, -0.5]),
                               [0.05 / 0.050001, -0.025 / 0.050001], rtol=1e-12)
    np.testing.assert_allclose(oprl.step_rewards([1.0, -0.5], beta=1.0),
                               [1 / 1.000001, -0.5 / 1.000001], rtol=1e-12)


def _length_error(call, names, short):
    """``call(columns)`` with column ``short`` one row short: the error names every length."""
    cols = dict(zip(names, ([0, 0, 0], ["A", "A", "B"], [1.0, 0.5, -1.0])))
    cols[short] = cols[short][:2]
    desc = ", ".join(f"{k}={2 if k == short else 3}" for k in cols)
    with pytest.raises(CreditInputError) as info:
        call(cols)
    assert str(info.value) == f"arrays must have the same length, got {desc}"


@pytest.mark.parametrize("short", ["group", "traj", "logratio_sum"])
def test_oprl_dpo_loss_length_mismatch_names_every_array(short):
    _length_error(lambda c: oprl.trajectory_dpo_loss(c["group"], c["traj"], c["logratio_sum"],
                                                     [1, 0]),
                  ("group", "traj", "logratio_sum"), short)


@pytest.mark.parametrize("short", ["group", "traj", "step_reward"])
def test_oprl_advantages_length_mismatch_names_every_array(short):
    _length_error(lambda c: oprl.advantages(c["group"], c["traj"], [10.0, 0.0], c["step_reward"]),
                  ("group", "traj", "step_reward"), short)


def test_oprl_errors_name_the_bad_input():
    nan = float("nan")
    with pytest.raises(CreditInputError, match=r"^logratio_sum: value at row 1 is nan"):
        oprl.step_rewards([1.0, nan])
    with pytest.raises(CreditInputError, match=r"^logratio_sum: value at row 1 is nan"):
        oprl.trajectory_dpo_loss([0, 0], ["a", "b"], [1.0, nan], [1, 0])
    with pytest.raises(CreditInputError, match=r"^success: value changes inside a trajectory"):
        oprl.trajectory_dpo_loss([0, 0, 0], ["a", "a", "b"], [1.0, 0.5, 0.0], [1, 0, 0])
    with pytest.raises(CreditInputError, match=r"^step_reward: value at row 1 is nan"):
        oprl.advantages([0, 0], ["a", "b"], [1.0, 0.0], [1.0, nan])
    with pytest.raises(CreditInputError, match=r"^episode_reward: value changes inside a traj"):
        oprl.advantages([0, 0], ["a", "a"], [1.0, 2.0], [0.1, 0.2])


def test_oprl_success_must_exceed_one_half():
    # success 0.5 is not a win: no (win, loss) pair, loss 0; at 0.51 the pair (a, b) gives
    # -log sigmoid(0.05 * (1 - 0)) = log(1 + e^-0.05)
    assert oprl.trajectory_dpo_loss([0, 0], ["a", "b"], [1.0, 0.0], [0.5, 0.0]) == 0.0
    assert oprl.trajectory_dpo_loss([0, 0], ["a", "b"], [1.0, 0.0], [0.51, 0.0]) == \
        pytest.approx(np.log1p(np.exp(-0.05)))
