import numpy as np
import pytest

from creditgym.credit import CreditInputError, grpo, rloo


def test_grpo_std_and_mean():
    a = grpo.advantages([0, 0, 0, 1, 1], [1.0, 0.0, 0.0, 2.0, 4.0])
    r = np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(a[:3], (r - r.mean()) / (r.std(ddof=1) + 1e-6))
    np.testing.assert_allclose(a[3:], [-0.70711, 0.70711], atol=1e-5)
    np.testing.assert_allclose(grpo.advantages([0, 0], [1.0, 3.0], norm="mean"), [-1, 1])


def test_grpo_group_of_one_and_all_equal_are_zero():
    a = grpo.advantages(["x", "y", "y", "y"], [5.0, 0.1, 0.1, 0.1])
    assert np.array_equal(a, np.zeros(4))
    assert not np.isnan(a).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes(dtype):
    a = grpo.advantages(np.array([0, 0, 0]), np.array([1, 0, 0], dtype=dtype))
    assert a.dtype == np.float64
    np.testing.assert_allclose(a, [1.1547, -0.57735, -0.57735], atol=1e-4)


def test_rloo():
    a = rloo.advantages([0, 0, 0, 1], [3.0, 0.0, 0.0, 7.0])
    np.testing.assert_allclose(a, [3.0, -1.5, -1.5, 0.0])
    assert np.array_equal(rloo.advantages([0, 0], [0.3, 0.3]), [0.0, 0.0])
    # 0.1 - (0.1 + 0.1) / 2 is -1.4e-17 in floating point: equal members are zeroed exactly,
    # in their own group only
    a = rloo.advantages([0, 0, 0, 1, 1], [0.1, 0.1, 0.1, 1.0, 0.0])
    assert np.array_equal(a, [0.0, 0.0, 0.0, 1.0, -1.0])


def test_errors_name_arrays():
    with pytest.raises(CreditInputError, match="group=3, reward=2"):
        grpo.advantages([0, 0, 0], [1.0, 2.0])
    with pytest.raises(CreditInputError, match="no rows"):
        rloo.advantages([], [])
    with pytest.raises(CreditInputError, match="^reward: value at row 1 is nan"):
        grpo.advantages([0, 0], [1.0, float("nan")])
    with pytest.raises(CreditInputError, match="^reward: value at row 0 is inf"):
        rloo.advantages([0, 0], [float("inf"), 1.0])
    with pytest.raises(CreditInputError, match="group=2, reward=1"):
        rloo.advantages([0, 0], [1.0])
    with pytest.raises(CreditInputError, match="norm"):
        grpo.advantages([0, 0], [1.0, 0.0], norm="max")
