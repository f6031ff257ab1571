"""policy_loss against hand-computed clipping, dual-clip, KL and aggregation values."""

from __future__ import annotations

import math

import pytest
import torch

from creditgym.errors import ConfigError
from creditgym.trainers.loss import aggregate, entropy_from_logits, kl_penalty, policy_loss


def _row(ratios, advs):
    """One sequence whose token ratios are ``ratios`` (old log-prob -1, new -1 + log r)."""
    logp = torch.tensor([[-1.0 + math.log(r) for r in ratios]], dtype=torch.float64,
                        requires_grad=True)
    old = torch.full_like(logp, -1.0).detach()
    adv = torch.tensor([advs], dtype=torch.float64)
    return logp, old, adv, torch.ones_like(adv)


def test_clipping_both_signs_both_sides():
    # (ratio, A): A>0 low side unclipped, A>0 high side clipped, A<0 low side clipped,
    # A<0 high side unclipped, inside the range
    logp, old, adv, mask = _row([0.5, 1.5, 0.5, 1.5, 1.1], [1.0, 1.0, -1.0, -1.0, 2.0])
    loss, stats = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    per_token = [-0.5, -1.28, 0.8, 1.5, -2.2]
    assert loss.item() == pytest.approx(sum(per_token) / 5)
    assert stats["clip_frac"] == pytest.approx(2 / 5)
    assert stats["ratio_mean"] == pytest.approx((0.5 + 1.5 + 0.5 + 1.5 + 1.1) / 5)
    loss.backward()
    # d(-A r)/d logp = -A r where unclipped, 0 where the clipped term is active; / 5 tokens
    expected = torch.tensor([[-0.5, 0.0, 0.0, 1.5, -2.2]], dtype=torch.float64) / 5
    assert torch.allclose(logp.grad, expected)


def test_asymmetric_clip_high_only_widens_upper_side():
    logp, old, adv, mask = _row([1.25, 0.75], [1.0, -1.0])
    sym, s_sym = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    asym, s_asym = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert sym.item() == pytest.approx((-1.2 + 0.8) / 2)   # both tokens clipped
    assert asym.item() == pytest.approx((-1.25 + 0.8) / 2)  # 1.25 < 1.28: upper not clipped
    assert s_sym["clip_frac"] == pytest.approx(1.0)
    assert s_asym["clip_frac"] == pytest.approx(0.5)


@pytest.mark.parametrize("ratio,adv,want", [
    # A > 0 clips only above: min(1.5 * 3, 1.3 * 3) = 3.9 (a swap would give 1.1 * 3 = 3.3)
    (1.5, 3.0, -3.9),
    # A > 0 below the range is not clipped: min(0.5 * 2, 0.9 * 2) = 1.0
    (0.5, 2.0, -1.0),
    # A < 0 clips only below: -min(0.5 * -0.5, 0.9 * -0.5) = 0.45 (a swap: 0.7 * 0.5 = 0.35)
    (0.5, -0.5, 0.45),
    # A < 0 above the range is not clipped: -min(1.5 * -4, 1.3 * -4) = 6.0
    (1.5, -4.0, 6.0),
])
def test_one_sided_clip_uses_clip_low_below_and_clip_high_above(ratio, adv, want):
    # clip_low 0.1 != clip_high 0.3 and a different |A| on each side, so swapping the two
    # bounds (or the sides) changes every clipped value instead of cancelling out
    logp, old, a, mask = _row([ratio], [adv])
    loss, stats = policy_loss(logp, old, a, mask, clip_low=0.1, clip_high=0.3)
    assert loss.item() == pytest.approx(want)
    assert stats["clip_frac"] == (1.0 if want in (-3.9, 0.45) else 0.0)


def test_dual_clip_bounds_negative_advantages_only():
    logp, old, adv, mask = _row([5.0, 5.0], [-1.0, 1.0])
    loss, stats = policy_loss(logp, old, adv, mask, dual_clip=3.0)
    # A<0: max(5, 1.2) = 5 bounded to 3; A>0: -min(5, 1.2) = -1.2
    assert loss.item() == pytest.approx((3.0 - 1.2) / 2)
    assert stats["dual_clip_frac"] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match=r"dual_clip must be > 1 \(typically 3\), got 1.0"):
        policy_loss(logp, old, adv, mask, dual_clip=1.0)
    # any bound above 1 is accepted: A<0 bounded at 1.5 * 1 instead of 3
    loss, _ = policy_loss(logp, old, adv, mask, dual_clip=1.5)
    assert loss.item() == pytest.approx((1.5 - 1.2) / 2)


def test_dual_clip_leaves_positive_advantages_alone_and_counts_strictly():
    # A = 0.5 > 0 at ratio 1 is never bounded (bounding it would give -0.5 * e instead of -0.5);
    # A = -1 at ratio e (log-ratio exactly 1) sits exactly on the bound e * 1: not counted
    logp = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    old = torch.tensor([[0.0, -1.0]], dtype=torch.float64)
    adv = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    loss, stats = policy_loss(logp, old, adv, torch.ones_like(adv), dual_clip=math.e)
    assert loss.item() == pytest.approx((-0.5 + math.e) / 2)
    assert stats["dual_clip_frac"] == 0.0


def test_kl_coef_one_and_statistics():
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    ref = torch.tensor([[-2.0, -1.0]], dtype=torch.float64)
    old = torch.tensor([[-1.5, -2.0]], dtype=torch.float64)
    zeros = torch.zeros_like(ref)
    loss, stats = policy_loss(logp, old, zeros, torch.ones_like(ref), ref_logprobs=ref,
                              kl_coef=1.0, kl_estimator="k1")
    assert loss.item() == pytest.approx((1.0 - 1.0) / 2 + 0.0)
    loss, stats = policy_loss(logp, old, zeros, torch.ones_like(ref), ref_logprobs=ref,
                              kl_coef=1.0, kl_estimator="k2")
    assert loss.item() == pytest.approx(0.5)  # k2 = [0.5, 0.5], with kl_coef 1 (not skipped)
    # approx_kl_old: k3 of log-ratio [0.5, 0]: e^0.5 - 0.5 - 1 over 2 tokens
    assert stats["approx_kl_old"] == pytest.approx((math.exp(0.5) - 1.5) / 2)


def test_kl_estimators_hand_values():
    logp = torch.tensor([-1.0, -2.0], dtype=torch.float64)
    ref = torch.tensor([-2.0, -1.0], dtype=torch.float64)
    assert kl_penalty(logp, ref, "k1").tolist() == pytest.approx([1.0, -1.0])
    assert kl_penalty(logp, ref, "k2").tolist() == pytest.approx([0.5, 0.5])
    assert kl_penalty(logp, ref, "k3").tolist() == pytest.approx([math.exp(-1), math.e - 2])
    assert kl_penalty(logp, ref).tolist() == pytest.approx([math.exp(-1), math.e - 2])  # k3
    # |diff| 2: k2 = 2^2 / 2 = 2 (not 0.5 / 2^2)
    assert kl_penalty(torch.tensor([0.0]), torch.tensor([2.0]), "k2").item() == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="kl_estimator 'k9' is not one of k1, k2, k3"):
        kl_penalty(logp, ref, "k9")


def test_k3_clamps_the_exponent_at_20():
    # ref - logp = 30 would overflow float32 in exp(); the log-ratio is clamped at 20
    kl = kl_penalty(torch.tensor([-31.0], dtype=torch.float64),
                    torch.tensor([-1.0], dtype=torch.float64))
    assert kl.item() == pytest.approx(math.exp(20) - 20 - 1)


@pytest.mark.parametrize("est,per_token", [("k1", [1.0, -1.0]), ("k3", [math.exp(-1), math.e - 2])])
def test_kl_penalty_enters_loss(est, per_token):
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-2.0, -1.0]], dtype=torch.float64)
    zeros = torch.zeros_like(ref)
    loss, stats = policy_loss(logp, logp.detach(), zeros, torch.ones_like(ref), ref_logprobs=ref,
                              kl_coef=0.1, kl_estimator=est)
    assert loss.item() == pytest.approx(0.1 * sum(per_token) / 2)
    assert stats["kl_ref"] == pytest.approx(sum(per_token) / 2)
    loss.backward()
    # k1: d/dlogp = 1; k3: d/dlogp [e^(ref-logp) - (ref-logp) - 1] = 1 - e^(ref-logp)
    dk = [1.0, 1.0] if est == "k1" else [1 - math.exp(-1), 1 - math.e]
    assert logp.grad[0].tolist() == pytest.approx([0.1 * d / 2 for d in dk])
    with pytest.raises(ConfigError, match="kl_coef is non-zero but no ref_logprobs were given; "
                       "pass the reference model's log-probs or set kl_coef to 0"):
        policy_loss(logp, logp.detach(), zeros, torch.ones_like(ref), kl_coef=0.1)


def test_aggregation_modes():
    values = torch.tensor([[1.0, 2.0, 3.0, 99.0], [4.0, 99.0, 99.0, 99.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.float64)
    # ratio 1 and A = -values make the per-token loss equal to values
    logp = torch.zeros_like(values)
    expected = {"token-mean": 10 / 4, "seq-mean-token-sum": (6 + 4) / 2,
                "seq-mean-token-mean": (2 + 4) / 2}
    for agg, want in expected.items():
        loss, stats = policy_loss(logp, logp, -values, mask, agg=agg)
        assert loss.item() == pytest.approx(want), agg
        assert stats["pg_loss"] == pytest.approx(want), agg
        assert aggregate(values, mask, agg).item() == pytest.approx(want), agg
    assert aggregate(values, mask, "token-mean", num_tokens=8).item() == pytest.approx(10 / 8)
    assert aggregate(values, mask, "seq-mean-token-sum", num_seqs=5).item() == pytest.approx(2.0)
    assert aggregate(values, mask, "seq-mean-token-mean", num_seqs=4).item() == pytest.approx(1.5)
    assert aggregate(values, mask).item() == pytest.approx(10 / 4)  # token-mean by default
    # a count of 1 divides by 1 (the floor is 1, for empty micro-batches)
    assert aggregate(values, mask, "token-mean", num_tokens=1).item() == pytest.approx(10.0)
    assert aggregate(values, mask, "seq-mean-token-sum", num_seqs=1).item() == pytest.approx(10.0)
    assert aggregate(values, mask, "seq-mean-token-mean", num_seqs=1).item() == pytest.approx(6.0)
    with pytest.raises(ConfigError, match="agg 'sum' is not one of token-mean, seq-mean-token-sum"):
        aggregate(values, mask, "sum")


def test_shape_mismatch_names_every_shape():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match=r"shapes differ: logprobs \(1, 2\), old_logprobs "
                       r"\(1, 3\), advantages \(2, 2\), mask \(1, 4\)"):
        policy_loss(x, torch.zeros(1, 3), torch.zeros(2, 2), torch.zeros(1, 4))


def test_loss_follows_the_dtype_of_the_logprobs():
    # rollout log-probs and advantages arrive as float64; a bf16/fp32 model's loss must stay in
    # its own dtype (both are cast to it)
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float32, requires_grad=True)
    loss, _ = policy_loss(logp, torch.tensor([[-1.0, -2.5]], dtype=torch.float64),
                          torch.tensor([[1.0, -1.0]], dtype=torch.float64),
                          torch.tensor([[1, 1]]))
    assert loss.dtype == torch.float32
    mask64, _ = policy_loss(logp, logp.detach(), torch.ones(1, 2), torch.ones(1, 2,
                                                                            dtype=torch.float64))
    assert mask64.dtype == torch.float32
    with_ref, _ = policy_loss(logp, logp.detach(), torch.zeros(1, 2), torch.ones(1, 2),
                              ref_logprobs=torch.tensor([[-1.0, -2.0]], dtype=torch.float64),
                              kl_coef=0.1)
    assert with_ref.dtype == torch.float32
    assert loss.item() == pytest.approx((-1.0 + math.exp(0.5)) / 2)


def test_masked_positions_never_produce_nan():
    logp = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -500.0]])  # garbage at a masked (padding) position
    loss, stats = policy_loss(logp, old, torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["approx_kl_old"] == pytest.approx(0.0)


def test_entropy_from_logits():
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4))
    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0))
    want = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(entropy_from_logits(logits), want, atol=1e-6)
