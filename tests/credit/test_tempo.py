import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym.credit import CreditInputError, tempo


def test_worked_example():
    a = tempo.token_advantages([0, 0, 0], [[5, 6, 7], [5, 6, 8], [5, 9]], [1, 0, 0])
    np.testing.assert_allclose(a[0], [1.1547, 1.4434, 2.0207], atol=1e-4)
    np.testing.assert_allclose(a[1], [-0.5774, -0.2887, -1.4434], atol=1e-4)
    np.testing.assert_allclose(a[2], [-0.5774, -1.1547], atol=1e-4)


def test_no_branch_equals_grpo_and_masking():
    toks = [[1, 2, 3], [1, 2, 3]]
    a = tempo.token_advantages([0, 0], toks, [1.0, 0.0], policy_mask=[[1, 0, 1], [1, 1, 1]])
    z = 0.5 / (np.std([1, 0], ddof=1) + 1e-6)
    np.testing.assert_allclose(a[0], [z, 0, z])
    np.testing.assert_allclose(a[1], [-z, -z, -z])


def test_branch_after_masked_token_still_counts():
    # the official code stops at the first masked token; we keep the TD term after it
    toks = [[1, 9, 2], [1, 9, 3]]
    a = tempo.token_advantages([0, 0], toks, [1.0, 0.0], policy_mask=[[1, 0, 1], [1, 0, 1]])
    assert a[0][2] > a[0][0] > 0 and a[0][1] == 0


def test_group_of_one_all_equal_and_empty_response():
    a = tempo.token_advantages([0, 1, 1, 2, 2], [[1, 2], [1], [2], [3], []],
                               [1.0, 0.5, 0.5, 1.0, 0.0])
    assert np.array_equal(a[0], [0, 0]) and np.array_equal(a[1], [0]) and np.array_equal(a[2], [0])
    assert a[4].size == 0 and np.isfinite(a[3]).all()


def test_errors():
    with pytest.raises(CreditInputError, match="tokens=1"):
        tempo.token_advantages([0, 0], [[1]], [1.0, 0.0])
    with pytest.raises(CreditInputError, match=r"policy_mask\[0\]"):
        tempo.token_advantages([0, 0], [[1], [2]], [1.0, 0.0], policy_mask=[[1, 1], [1]])
    with pytest.raises(CreditInputError, match="integers"):
        tempo.token_advantages([0, 0], [[1.5], [2]], [1.0, 0.0])


def test_errors_name_every_array_and_the_bad_reward():
    """The messages name each array with its length, and the array holding a bad value."""
    with pytest.raises(CreditInputError, match=r"got group=2, tokens=1, reward=2$"):
        tempo.token_advantages([0, 0], [[1]], [1.0, 0.0])
    with pytest.raises(CreditInputError, match=r"got group=2, tokens=2, reward=1$"):
        tempo.token_advantages([0, 0], [[1], [2]], [1.0])
    with pytest.raises(CreditInputError, match=r"got group=2, tokens=2, reward=2, policy_mask=1$"):
        tempo.token_advantages([0, 0], [[1], [2]], [1.0, 0.0], policy_mask=[[1]])
    for fn in (tempo.token_advantages, tempo.token_advantages_naive):
        with pytest.raises(CreditInputError, match=r"^reward: value at row 1 is nan"):
            fn([0, 0], [[1], [2]], [1.0, float("nan")])


@st.composite
def groups(draw):
    group, tokens, reward, mask = [], [], [], []
    for g in range(draw(st.integers(1, 4))):
        trunk = draw(st.lists(st.integers(0, 3), max_size=6))
        for _ in range(draw(st.integers(1, 6))):
            cut = draw(st.integers(0, len(trunk)))
            seq = trunk[:cut] + draw(st.lists(st.integers(0, 3), max_size=6))
            group.append(g)
            tokens.append(seq)
            reward.append(draw(st.sampled_from([0.0, 0.5, 1.0])))
            mask.append(draw(st.lists(st.booleans(), min_size=len(seq), max_size=len(seq))))
    return group, tokens, reward, mask


@settings(max_examples=200, deadline=None)
@given(groups())
def test_vectorised_equals_naive_trie(data):
    group, tokens, reward, mask = data
    fast = tempo.token_advantages(group, tokens, reward, policy_mask=mask)
    slow = tempo.token_advantages_naive(group, tokens, reward, policy_mask=mask)
    for f, s in zip(fast, slow):
        np.testing.assert_allclose(f, s, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunk", [1, 100])  # 100: widths that do not divide evenly
def test_chunking_matches(monkeypatch, chunk):
    rng = np.random.default_rng(1)
    group = np.repeat(np.arange(6), 4)
    tokens = [rng.integers(0, 3, rng.integers(1, 30)) for _ in range(24)]
    reward = rng.random(24)
    full = tempo.token_advantages(group, tokens, reward)
    monkeypatch.setattr(tempo, "_CHUNK_ELEMENTS", chunk)
    for a, b in zip(full, tempo.token_advantages(group, tokens, reward)):
        np.testing.assert_allclose(a, b)
