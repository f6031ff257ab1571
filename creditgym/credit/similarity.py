"""GiGPO similarity anchors: greedy first-member clustering, exactly the reference's decisions.

The reference (verl-agent) walks the rows of a group in order; a row joins the first existing
cluster whose *first member* ``rep`` has ``difflib.SequenceMatcher(None, row, rep).ratio() >= thr``,
else it opens a new cluster. That costs one difflib call per (row, earlier cluster) pair.

The fast scan below makes the same decisions and calls difflib only where it could say yes:

* **Memo.** A string seen before in the group lands in the same cluster again: every cluster
  before its cluster existed when it was first placed (clusters are only appended) and rejected
  it, and its own cluster accepted it (or it is that cluster's first member, ratio 1).
* **Upper bounds.** ``ratio = 2*M/(len_a+len_b)`` where ``M`` counts the characters of difflib's
  matching blocks, which form a common subsequence, so ``M <= LCS <= min(len_a, len_b)``. The
  LCS comes from rapidfuzz's Indel distance ``d = len_a + len_b - 2*LCS`` (bit-parallel C, with a
  cut-off). The bound is computed with difflib's own expression ``2.0*LCS/length``, so in floating
  point it is never below the ratio difflib would return; a pair under the threshold there is
  skipped without changing any decision.
* **Cached b-side.** difflib indexes its second sequence (``b2j``); each cluster keeps one
  ``SequenceMatcher`` with its representative as ``b`` and only swaps ``a``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from difflib import SequenceMatcher

import numpy as np
from rapidfuzz.distance import Indel

from creditgym.credit._arrays import CreditInputError


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise CreditInputError(f"similarity: threshold must be in (0, 1), got {threshold!r}")


def _check_texts(texts: Sequence[object]) -> None:
    for i, s in enumerate(texts):
        if not isinstance(s, str):
            raise CreditInputError(
                f"anchor: similarity grouping needs text anchors, row {i} is {type(s).__name__}"
            )


def greedy_cluster_naive(texts: Sequence[str], threshold: float) -> np.ndarray:
    """The reference scan, one difflib call per (row, earlier cluster) until the first match."""
    _check_threshold(threshold)
    _check_texts(texts)
    reps: list[str] = []
    out = np.empty(len(texts), dtype=np.int64)
    for k, s in enumerate(texts):
        for c, rep in enumerate(reps):
            if SequenceMatcher(None, s, rep).ratio() >= threshold:
                out[k] = c
                break
        else:
            out[k] = len(reps)
            reps.append(s)
    return out


def greedy_cluster(texts: Sequence[str], threshold: float) -> np.ndarray:
    """Cluster index (0.. in order of opening) for each text; same decisions as the naive scan."""
    _check_threshold(threshold)
    _check_texts(texts)
    memo: dict[str, int] = {}
    reps: list[str] = []
    rep_lens: list[int] = []
    matchers: list[SequenceMatcher] = []
    out = np.empty(len(texts), dtype=np.int64)
    slack = 1.0 - threshold
    for k, s in enumerate(texts):
        c = memo.get(s)
        if c is None:
            c = _place(s, threshold, slack, reps, rep_lens, matchers)
            memo[s] = c
        out[k] = c
    return out


def _place(s, threshold, slack, reps, rep_lens, matchers) -> int:
    la = len(s)
    for c, (rep, lb) in enumerate(zip(reps, rep_lens)):
        length = la + lb
        if length == 0:
            return c  # two empty strings: difflib's ratio is 1.0
        if 2.0 * min(la, lb) / length < threshold:
            continue  # length bound: ratio <= 2*min/(la+lb)
        cutoff = math.floor(length * slack) + 1
        d = Indel.distance(s, rep, score_cutoff=cutoff)
        # d > cutoff means "more than cutoff" (returned as cutoff + 1); the bound stays valid
        if 2.0 * ((length - d) // 2) / length < threshold:
            continue
        m = matchers[c]
        m.set_seq1(s)
        if m.ratio() >= threshold:
            return c
    reps.append(s)
    rep_lens.append(la)
    matchers.append(SequenceMatcher(None, "", s))
    return len(reps) - 1
