"""IGPO probe construction, checked on the exact token sequences handed to the scorer.

The scorer is duck-typed (``score(prefixes, continuations) -> per-token log-probs``); the one here
is a real, transparent one: each continuation token scores ``-id/10 - len(prefix)/100``, so every
probe's mean is hand-computable and depends on both the gold tokens and the context length. It
records every call, so the probes themselves (context, suffix, forced answer, end of turn) are
asserted token by token.
"""

from __future__ import annotations

import numpy as np
import pytest

from creditgym.credit import CreditInputError
from creditgym.credit.igpo_probe import ProbeFormat, probe_logprobs
from tests.credit.helpers import make_traj


def encode(text):
    """Letters a..z -> 1..26 (one token per letter; "" -> [])."""
    return [ord(ch) - 96 for ch in text]


class Recorder:
    def __init__(self, dtype=None):
        self.calls = []
        self.dtype = dtype

    def score(self, prefixes, continuations):
        self.calls.append((prefixes, continuations))
        out = [[-c / 10 - len(p) / 100 for c in cont] for p, cont in zip(prefixes, continuations)]
        return [np.asarray(o, dtype=self.dtype) for o in out] if self.dtype else out


# context suffix "t" = [20]; forced "pq" = [16, 17] before the gold, "s" = [19] after, "e" = [5]
FMT = ProbeFormat(context_suffix="t", answer_prefix="pq", answer_suffix="s", end_of_turn="e")


def two_turns(golds=("c", "ab")):
    return make_traj("x", "g", [0, 0], prompt=(1, 2), actions=[[3, 4], [5]],
                     observations=[[6], [7, 8]], task={"golden_answers": list(golds)})


def test_probes_are_context_suffix_then_forced_answer_and_score_the_gold_only():
    rec = Recorder()
    got = probe_logprobs([two_turns()], encode, rec.score, fmt=FMT)
    # turn 1 sees the prompt plus turn 0's action and observation, not only the latter
    assert rec.calls == [([[1, 2, 20], [1, 2, 3, 4, 6, 20]],
                          [[16, 17, 3, 19, 5], [16, 17, 3, 19, 5]])]
    # first alias "c" only: -0.3 minus 3 or 6 context tokens / 100
    np.testing.assert_allclose(got[0], [-0.33, -0.36], rtol=1e-12)


def test_aliases_first_probes_the_first_gold_and_best_keeps_the_best():
    # the second alias "ab" (mean id 1.5) scores higher than the first "c" (id 3)
    first = probe_logprobs([two_turns()], encode, Recorder().score, fmt=FMT, aliases="first")
    np.testing.assert_allclose(first[0], [-0.33, -0.36], rtol=1e-12)
    rec = Recorder()
    best = probe_logprobs([two_turns()], encode, rec.score, fmt=FMT, aliases="best")
    # four distinct probes (2 turns x 2 aliases) in one batch, in turn-major order
    assert [len(c) for c in rec.calls[0][1]] == [5, 6, 5, 6]
    np.testing.assert_allclose(best[0], [-0.15 - 0.03, -0.15 - 0.06], rtol=1e-12)
    # with three aliases, "first" still probes one
    rec = Recorder()
    probe_logprobs([two_turns(("c", "ab", "b"))], encode, rec.score, fmt=FMT)
    assert len(rec.calls[0][0]) == 2


def test_empty_format_pieces_add_no_tokens_even_if_the_encoder_maps_empty_text_to_some():
    # some tokenizers return special tokens for "" (a BOS); an empty piece must contribute none
    def encode_with_bos_for_empty(text):
        return encode(text) or [99]

    rec = Recorder()
    got = probe_logprobs([two_turns()], encode_with_bos_for_empty, rec.score, fmt=ProbeFormat(
        context_suffix="", answer_prefix="", answer_suffix="", end_of_turn=""))
    assert rec.calls == [([[1, 2], [1, 2, 3, 4, 6]], [[3], [3]])]
    np.testing.assert_allclose(got[0], [-0.32, -0.35], rtol=1e-12)


def test_batches_are_consecutive_slices_of_the_distinct_probes():
    rec = Recorder()
    got = probe_logprobs([two_turns()], encode, rec.score, fmt=FMT, aliases="best", batch_size=3)
    assert [p for p, _ in rec.calls] == [[[1, 2, 20]] * 2 + [[1, 2, 3, 4, 6, 20]],
                                         [[1, 2, 3, 4, 6, 20]]]
    np.testing.assert_allclose(got[0], [-0.18, -0.21], rtol=1e-12)


def test_default_batch_is_256_probes():
    # the default bounds one scoring call (GPU memory): 257 distinct probes take two calls
    trajs = [make_traj(f"t{i}", "g", [0], prompt=(i,)) for i in range(257)]
    rec = Recorder()
    got = probe_logprobs(trajs, encode, rec.score)
    assert [len(p) for p, _ in rec.calls] == [256, 1]
    assert len(got) == 257 and all(g.shape == (1,) for g in got)


def test_float32_log_probs_are_averaged_in_float64():
    # a scorer may return float32 arrays (a model's dtype); the mean must not round to float32.
    # gold "abd": ids 1, 2, 4; context [1, 2] + [20] -> each minus 0.03: mean -0.7/3 - 0.03
    rec = Recorder(dtype=np.float32)
    got = probe_logprobs([make_traj("x", "g", [0], task={"golden_answers": ["abd"]})], encode,
                         rec.score, fmt=FMT)
    lp = np.asarray(rec.score([[1, 2, 20]], [[16, 17, 1, 2, 4, 19, 5]])[0], dtype=np.float64)
    assert got[0][0] == lp[2:5].mean() == pytest.approx(-0.7 / 3 - 0.03, rel=1e-6)
    assert got[0][0] != np.float32(lp[2:5].astype(np.float32).mean())


def test_probe_errors_name_the_problem():
    ok = two_turns()
    with pytest.raises(CreditInputError, match=r"^aliases: 'all' is not 'first' or 'best'$"):
        probe_logprobs([ok], encode, Recorder().score, aliases="all")
    for bad in (0, -1):
        with pytest.raises(CreditInputError, match=rf"^batch_size: {bad} probes per call; give "
                                                   "1 or more$"):
            probe_logprobs([ok], encode, Recorder().score, batch_size=bad)
    with pytest.raises(CreditInputError, match=r"^trajectory 'x': task has no golden_answers to "
                                               "probe$"):
        probe_logprobs([two_turns(golds=())], encode, Recorder().score)
    with pytest.raises(CreditInputError, match=r"^trajectory 'x': a gold answer encodes to no "
                                               "tokens$"):
        probe_logprobs([two_turns(golds=("",))], encode, Recorder().score)

    def drops_one(prefixes, continuations):
        return Recorder().score(prefixes, continuations)[1:]

    with pytest.raises(CreditInputError, match="^score returned 1 results for 2 probes$"):
        probe_logprobs([ok], encode, drops_one, fmt=FMT)

    def short_rows(prefixes, continuations):
        return [lp[:-1] for lp in Recorder().score(prefixes, continuations)]

    with pytest.raises(CreditInputError, match="^score returned 4 log-probs for a continuation "
                                               "of 5 tokens$"):
        probe_logprobs([ok], encode, short_rows, fmt=FMT)
