"""Policy-gradient loss on per-token advantages: PPO clipped ratio, KL to a reference, aggregation.

All tensors are ``(batch, seq)`` and aligned with the token sequence; ``mask`` is 1 on the tokens
that are trained (the policy's generated tokens) and 0 elsewhere. Per token::

    ratio   = exp(logp - old_logp)
    pg      = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)
    pg      = min(pg, -dual_clip * A)          where A < 0, when dual_clip (> 1) is set
    kl      = k1: logp - ref_logp
              k2: (logp - ref_logp)^2 / 2
              k3: exp(ref_logp - logp) - (ref_logp - logp) - 1      (>= 0, unbiased, low variance)
    loss_t  = pg + kl_coef * kl

Aggregation of ``loss_t`` over the masked tokens (``n_b`` = masked tokens of sequence b):

* ``token-mean``:                 sum_{b,t} loss_t / sum_b n_b
* ``seq-mean-token-sum``:         (1/B) sum_b sum_t loss_t
* ``seq-mean-token-mean``:        (1/B) sum_b (sum_t loss_t / n_b)

``num_tokens`` / ``num_seqs`` override the denominators ``sum_b n_b`` / ``B``: a micro-batch of a
larger batch passes the *whole* batch's counts so that the micro-batch losses add up to the
full-batch loss (and their gradients to the full-batch gradient).
"""

from __future__ import annotations

from typing import Literal

import torch

from creditgym.errors import ConfigError

KLEstimator = Literal["k1", "k2", "k3"]
Aggregation = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"]
KL_ESTIMATORS = ("k1", "k2", "k3")
AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3"
               ) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled by pi (formulas above)."""
    diff = logprobs - ref_logprobs
    if estimator == "k1":
        return diff
    if estimator == "k2":
        return 0.5 * diff.square()
    if estimator == "k3":
        # clamp keeps exp() finite when the policy has drifted far from the reference
        neg = (-diff).clamp(max=20.0)
        return neg.exp() - neg - 1.0
    raise ConfigError(f"kl_estimator {estimator!r} is not one of {', '.join(KL_ESTIMATORS)}")


def aggregate(values: torch.Tensor, mask: torch.Tensor, agg: str = "token-mean", *,
              num_tokens: float | None = None, num_seqs: float | None = None) -> torch.Tensor:
    """Reduce per-token ``values`` over ``mask`` with one of the aggregation modes above."""
    mask = mask.to(values.dtype)
    masked = values * mask
    if agg == "token-mean":
        if num_tokens is None:
            return masked.sum() / mask.sum().clamp(min=1.0)
        return masked.sum() / max(float(num_tokens), 1.0)
    n_seqs = float(values.shape[0] if num_seqs is None else num_seqs)
    if agg == "seq-mean-token-sum":
        return masked.sum() / max(n_seqs, 1.0)
    if agg == "seq-mean-token-mean":
        per_seq = masked.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)
        return per_seq.sum() / max(n_seqs, 1.0)
    raise ConfigError(f"agg {agg!r} is not one of {', '.join(AGGREGATIONS)}")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    m = mask.to(x.dtype)
    return float((x * m).sum() / m.sum().clamp(min=1.0))


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    agg: str = "token-mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped policy-gradient loss (module docstring) and token-mean statistics.

    Statistics (over masked tokens, detached): ``pg_loss`` (aggregated like the loss),
    ``clip_frac`` (tokens where the clipped term is the active one), ``dual_clip_frac``,
    ``ratio_mean``, ``approx_kl_old`` (k3 estimate of KL(pi_old || pi)), ``kl_ref`` (the chosen
    estimator against the reference, when given), ``tokens`` (masked tokens here).
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ConfigError(f"dual_clip must be > 1 (typically 3), got {dual_clip}")
    if kl_coef != 0.0 and ref_logprobs is None:
        raise ConfigError("kl_coef is non-zero but no ref_logprobs were given; pass the "
                          "reference model's log-probs or set kl_coef to 0")
    if not (logprobs.shape == old_logprobs.shape == advantages.shape == mask.shape):
        raise ValueError(
            f"policy_loss: shapes differ: logprobs {tuple(logprobs.shape)}, old_logprobs "
            f"{tuple(old_logprobs.shape)}, advantages {tuple(advantages.shape)}, mask "
            f"{tuple(mask.shape)}")
    mask_f = mask.to(logprobs.dtype)
    old = old_logprobs.to(logprobs.dtype)
    adv = advantages.to(logprobs.dtype)
    # masked-out positions (padding, prompt) may hold arbitrary values: zero the log-ratio there
    # so exp() cannot overflow into NaN gradients
    log_ratio = (logprobs - old) * mask_f
    ratio = log_ratio.exp()
    pg_unclipped = -adv * ratio
    pg_clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(pg_unclipped, pg_clipped)
    clipped = pg_clipped > pg_unclipped
    dual = torch.zeros_like(clipped)
    if dual_clip is not None:
        bound = -adv * dual_clip
        dual = (adv < 0) & (pg > bound)
        pg = torch.where(adv < 0, torch.minimum(pg, bound), pg)

    per_token = pg
    stats: dict[str, float] = {}
    if ref_logprobs is not None:
        kl = kl_penalty(logprobs, ref_logprobs.to(logprobs.dtype), kl_estimator) * mask_f
        stats["kl_ref"] = _masked_mean(kl.detach(), mask_f)
        if kl_coef != 0.0:
            per_token = pg + kl_coef * kl
    loss = aggregate(per_token, mask_f, agg, num_tokens=num_tokens, num_seqs=num_seqs)
    with torch.no_grad():
        stats["pg_loss"] = float(aggregate(pg, mask_f, agg, num_tokens=num_tokens,
                                           num_seqs=num_seqs))
        stats["clip_frac"] = _masked_mean(clipped.to(logprobs.dtype), mask_f)
        stats["dual_clip_frac"] = _masked_mean(dual.to(logprobs.dtype), mask_f)
        stats["ratio_mean"] = _masked_mean(ratio, mask_f)
        stats["approx_kl_old"] = _masked_mean(log_ratio.exp() - log_ratio - 1.0, mask_f)
        stats["tokens"] = float(mask_f.sum())
    return loss, stats


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` over the last dim: ``logsumexp(z) - sum softmax(z) * z``."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)
