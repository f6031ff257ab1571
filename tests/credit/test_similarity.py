from difflib import SequenceMatcher

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import Indel

from creditgym.credit import CreditInputError, similarity
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


def test_threshold_zero_and_non_text_rows_are_refused_with_the_row_type():
    # threshold 0 would put every row in the first cluster; both scans refuse it
    for cluster in (greedy_cluster, greedy_cluster_naive):
        with pytest.raises(CreditInputError, match=r"^similarity: threshold must be in \(0, 1\), "
                                                   "got 0.0$"):
            cluster(["a"], 0.0)
        with pytest.raises(CreditInputError, match="^anchor: similarity grouping needs text "
                                                   "anchors, row 1 is int$"):
            cluster(["a", 3], 0.9)


def test_cluster_ids_are_int64_for_indexing():
    # the ids index arrays and feed bincount downstream, which refuses floats
    for cluster in (greedy_cluster, greedy_cluster_naive):
        out = cluster(["abcd", "wxyz", "abce"], 0.75)
        assert out.dtype == np.int64 and out.tolist() == [0, 1, 0]


def test_fast_scan_calls_difflib_only_where_the_bounds_allow_a_match(monkeypatch):
    """The fast scan's point is to skip difflib (module docstring). Counting spies around the real
    difflib and rapidfuzz calls check where it does; the decisions are those of the naive scan."""
    calls = {"ratio": 0, "indel": 0}

    class CountingMatcher(SequenceMatcher):
        def ratio(self):
            calls["ratio"] += 1
            return super().ratio()

    class CountingIndel:
        @staticmethod
        def distance(a, b, **kw):
            calls["indel"] += 1
            return Indel.distance(a, b, **kw)

    monkeypatch.setattr(similarity, "SequenceMatcher", CountingMatcher)
    texts = ["abcde", "abxyz", "abcde", "abcdf", "abc", "a"]
    assert greedy_cluster_naive(texts, 0.5).tolist() == [0, 1, 0, 0, 0, 2]
    assert calls["ratio"] == 0 + 1 + 1 + 1 + 1 + 2  # until the first match, per row
    calls["ratio"] = 0
    monkeypatch.setattr(similarity, "Indel", CountingIndel)
    assert greedy_cluster(texts, 0.5).tolist() == [0, 1, 0, 0, 0, 2]
    # "abxyz" vs "abcde": LCS 2 (Indel 6 <= cutoff 6), bound 2*2/10 = 0.4 < 0.5: skipped after
    # one Indel call. The second "abcde" is memoised: no call at all. "abcdf" (bound 0.8) and
    # "abc" (bound 2*3/8 = 0.75) reach difflib vs "abcde" and join it. "a" has length bound
    # 2*1/6 < 0.5 against both clusters: skipped before Indel.
    assert calls == {"ratio": 2, "indel": 3}
