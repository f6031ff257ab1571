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
