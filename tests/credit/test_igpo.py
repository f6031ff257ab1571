import numpy as np
import pytest

from creditgym.credit import CreditInputError, igpo
from creditgym.credit.igpo_probe import ProbeFormat, probe_logprobs
from tests.credit.helpers import make_traj


def test_worked_example():
    a = igpo.turn_advantages([0, 0, 0], [[-3, -1, -0.5], [-3, -2.5], [-7]], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(a[0], [1.9318, 0.5176, 1.2247], atol=1e-4)
    np.testing.assert_allclose(a[1], [-1.9318, -1.2247], atol=1e-4)
    np.testing.assert_allclose(a[2], [0.0], atol=1e-12)


def test_prob_diff_joint_and_gamma():
    l = [[-1.0, -0.5], [-2.0]]
    a = igpo.turn_advantages([0, 0], l, [1.0, 0.0], gain="prob_diff", norm="joint", gamma=0.5)
    x = np.array([np.exp(-0.5) - np.exp(-1.0), 1.0, 0.0])  # IG_A0, outcome A, outcome B
    z = (x - x.mean()) / (np.sqrt(x.var() + 1e-8) + 1e-6)
    np.testing.assert_allclose(a[0], [z[0] + 0.5 * z[1], z[1]])
    np.testing.assert_allclose(a[1], [z[2]])


def test_group_of_one_all_equal_and_dtypes():
    a = igpo.turn_advantages([0], [np.array([-1.0, -0.5], dtype=np.float32)], [1.0])
    assert np.array_equal(a[0], [0.0, 0.0])
    b = igpo.turn_advantages([0, 0], [[-1.0, -1.0], [-2.0, -2.0]], [0.5, 0.5])
    assert all(np.array_equal(x, np.zeros(2)) for x in b)


def test_errors():
    with pytest.raises(CreditInputError, match="probe_logprob=1"):
        igpo.turn_advantages([0, 0], [[-1.0]], [1.0, 0.0])
    with pytest.raises(CreditInputError, match="no turns"):
        igpo.turn_advantages([0], [[]], [1.0])
    with pytest.raises(CreditInputError, match="gain"):
        igpo.turn_advantages([0], [[-1.0]], [1.0], gain="kl")


class Bigram:
    """A tiny real scorer: log-probs from a fixed random bigram table over a 50-token vocab."""

    def __init__(self, vocab=50, seed=0):
        logits = np.random.default_rng(seed).normal(size=(vocab, vocab))
        self.table = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        self.calls = 0

    def score(self, prefixes, continuations):
        self.calls += 1
        out = []
        for p, c in zip(prefixes, continuations):
            seq = list(p) + list(c)
            out.append([float(self.table[seq[len(p) + k - 1], seq[len(p) + k]])
                        for k in range(len(c))])
        return out


def encode(text):
    return [ord(ch) % 50 for ch in text]


def test_probe_builder_with_bigram_scorer():
    model = Bigram()
    fmt = ProbeFormat(context_suffix="<", answer_prefix="ans:", answer_suffix="/", end_of_turn="$")
    task = {"id": "t", "question": "q", "golden_answers": ["Paris", "paris"]}
    t1 = make_traj("a", "g", [0, 1], actions=[[3, 4], [5]], observations=[[6], [7, 8]], task=task)
    t2 = make_traj("b", "g", [0], actions=[[9]], observations=[[1]], task=task)
    got = probe_logprobs([t1, t2], encode, model.score, fmt=fmt)
    assert [g.size for g in got] == [2, 1]

    def manual(context, gold):
        prefix = context + encode("<")
        cont = encode("ans:") + encode(gold) + encode("/") + encode("$")
        lp = model.score([prefix], [cont])[0]
        return np.mean(lp[4 : 4 + len(gold)])

    ctx0 = [1, 2]
    ctx1 = ctx0 + [3, 4, 6]
    assert got[0][0] == pytest.approx(manual(ctx0, "Paris"))
    assert got[0][1] == pytest.approx(manual(ctx1, "Paris"))
    assert got[1][0] == pytest.approx(manual(ctx0, "Paris"))  # shared turn-0 probe
    best = probe_logprobs([t1], encode, model.score, fmt=fmt, aliases="best")
    assert best[0][1] == pytest.approx(max(manual(ctx1, "Paris"), manual(ctx1, "paris")))
    # probes feed the turn advantages directly
    adv = igpo.turn_advantages(["g", "g"], got, [1.0, 0.0])
    assert [a.size for a in adv] == [2, 1]


def test_probe_dedup_and_batching():
    model = Bigram()
    trajs = [make_traj(f"t{i}", "g", [0, 0, 1]) for i in range(4)]
    got = probe_logprobs(trajs, encode, model.score, batch_size=2)
    # identical trajectories: 3 distinct probes, scored in 2 calls of at most 2
    assert model.calls == 2
    assert all(np.array_equal(g, got[0]) for g in got)


# --- mutation-testing round 3 (docs/mutation-report.md, "Third run") ---


@pytest.mark.parametrize("short", ["group", "probe_logprob", "outcome"])
def test_length_mismatch_names_every_array(short):
    cols = {"group": [0, 0, 0], "probe_logprob": [[-1.0], [-2.0], [-3.0]],
            "outcome": [1.0, 0.0, 0.0]}
    cols[short] = cols[short][:2]
    desc = ", ".join(f"{k}={2 if k == short else 3}" for k in cols)
    with pytest.raises(CreditInputError) as info:
        igpo.turn_advantages(cols["group"], cols["probe_logprob"], cols["outcome"])
    assert str(info.value) == f"arrays must have the same length, got {desc}"


def test_error_messages_name_the_bad_input():
    nan = float("nan")
    with pytest.raises(CreditInputError, match=r"^outcome: value at row 1 is nan"):
        igpo.turn_advantages([0, 0], [[-1.0], [-2.0]], [1.0, nan])
    with pytest.raises(CreditInputError, match=r"^probe_logprob: value at row 2 is nan"):
        igpo.turn_advantages([0, 0], [[-1.0, -0.5], [nan]], [1.0, 0.0])
    with pytest.raises(CreditInputError, match=r"^probe_logprob: expected sequences of numbers"):
        igpo.turn_advantages([0, 0], [[-1.0], ["x"]], [1.0, 0.0])
    with pytest.raises(CreditInputError, match=r"^norm: 'pooled' is not 'separate' or 'joint'$"):
        igpo.turn_advantages([0], [[-1.0]], [1.0], norm="pooled")
    with pytest.raises(CreditInputError, match=r"^probe_logprob: trajectory 1 has no turns"):
        igpo.turn_advantages([0, 0], [[-1.0], []], [1.0, 0.0])


def test_pool_of_two_uses_its_population_std():
    # two one-turn trajectories: no IG values, outcome pool {1, 0} with population variance 0.25,
    # sigma = sqrt(0.25 + 1e-8); z = +-0.5 / (sigma + 1e-6)
    a = igpo.turn_advantages([0, 0], [[-1.0], [-2.0]], [1.0, 0.0])
    z = 0.5 / (np.sqrt(0.25 + 1e-8) + 1e-6)
    np.testing.assert_allclose(np.concatenate(a), [z, -z], rtol=1e-12)
