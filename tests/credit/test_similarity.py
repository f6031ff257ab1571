import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym.credit import CreditInputError
from creditgym.credit.similarity import greedy_cluster, greedy_cluster_naive

ALPHABET = "abcde ü文"


@st.composite
def near_duplicates(draw):
    """A few base strings and edited copies (substitutions, insertions, deletions, repeats)."""
    bases = draw(st.lists(st.text(ALPHABET, min_size=0, max_size=40), min_size=1, max_size=4))
    out = []
    for _ in range(draw(st.integers(1, 25))):
        s = list(draw(st.sampled_from(bases)))
        for _ in range(draw(st.integers(0, 3))):
            op = draw(st.sampled_from(["sub", "ins", "del"]))
            pos = draw(st.integers(0, max(len(s), 1) - 1)) if s else 0
            ch = draw(st.sampled_from(ALPHABET))
            if op == "ins" or not s:
                s.insert(pos, ch)
            elif op == "sub":
                s[pos] = ch
            else:
                del s[pos]
        out.append("".join(s))
    return out


@settings(max_examples=300, deadline=None)
@given(texts=near_duplicates(), thr=st.sampled_from([0.5, 0.75, 0.8, 0.9, 0.95, 0.99]))
def test_fast_equals_naive(texts, thr):
    assert np.array_equal(greedy_cluster(texts, thr), greedy_cluster_naive(texts, thr))


def test_long_strings_with_autojunk():
    rng = np.random.default_rng(0)
    base = "".join(rng.choice(list("abcdefgh "), 600))
    texts = [base, base[:300] + "zz" + base[300:], base[::-1], base[5:], "", "", base + base]
    for thr in (0.5, 0.9, 0.99):
        assert np.array_equal(greedy_cluster(texts, thr), greedy_cluster_naive(texts, thr))


def test_threshold_boundary_exact():
    # ratio("abcd", "abce") == 0.75 exactly: joins at thr 0.75, not above
    assert greedy_cluster(["abcd", "abce"], 0.75).tolist() == [0, 0]
    assert greedy_cluster(["abcd", "abce"], 0.7500001).tolist() == [0, 1]


def test_bad_inputs():
    with pytest.raises(CreditInputError, match="threshold"):
        greedy_cluster(["a"], 1.0)
    with pytest.raises(CreditInputError, match="row 1"):
        greedy_cluster(["a", None], 0.9)
