"""IGPO: information-gain turn rewards (arXiv 2510.14967).

Before each turn t = 0..T-1 the policy is probed with the gold answer teacher-forced after the
current context; ``l_t`` is the mean log-probability of the gold tokens (see
:mod:`creditgym.credit.igpo_probe`, which builds and scores the probes through a backend).

* turn rewards: ``IG_t = g(l_{t+1}) - g(l_t)`` for t = 0..T-2, ``g`` the identity
  (``gain="log_prob_diff"``, the official training script) or ``exp`` (``gain="prob_diff"``, the
  paper); the last turn gets the outcome (F1 of the answer, or the env's format penalty);
* per group, ``norm="separate"`` z-scores outcomes among themselves and all IG values of the group
  in one pool, ``norm="joint"`` uses one pool; population std, ``sigma = sqrt(var + 1e-8)``,
  ``z = (x - mean) / (sigma + eps)``; a pool of one maps to 0;
* ``A_t = sum_{m >= t} gamma^{m-t} z_m`` (default gamma 1), broadcast to turn t's policy tokens.

The probe log-probs need a model: the trainer computes them (``igpo_probe.probe_logprobs``) and
passes them in; this module is numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from creditgym.credit._arrays import (
    EPS,
    CreditInputError,
    Rows,
    as_float,
    check_lengths,
    factorize,
    mean_abs,
    ragged,
    reverse_discounted_sum,
    seg_stats,
    split,
)
from creditgym.credit.adapter import TurnBatch, per_turn_input, turns_to_tokens
from creditgym.credit.registry import register_estimator


def turn_advantages(
    group: Any,
    probe_logprob: Sequence[Sequence[float]],
    outcome: Any,
    *,
    gamma: float = 1.0,
    gain: str = "log_prob_diff",
    norm: str = "separate",
) -> list[np.ndarray]:
    """One array of ``T_i`` turn advantages per trajectory (``T_i = len(probe_logprob[i])``)."""
    return split(*_flat_turn_advantages(group, probe_logprob, outcome, gamma, gain, norm))


def _flat_turn_advantages(group, probe_logprob, outcome, gamma, gain, norm):
    if gain not in ("log_prob_diff", "prob_diff"):
        raise CreditInputError(f"gain: {gain!r} is not 'log_prob_diff' or 'prob_diff'")
    if norm not in ("separate", "joint"):
        raise CreditInputError(f"norm: {norm!r} is not 'separate' or 'joint'")
    check_lengths(group=group, probe_logprob=probe_logprob, outcome=outcome)
    g, n_groups = factorize("group", group)
    out_r = as_float("outcome", outcome)
    l, lengths = ragged("probe_logprob", probe_logprob)
    if (lengths == 0).any():
        bad = int(np.flatnonzero(lengths == 0)[0])
        raise CreditInputError(
            f"probe_logprob: trajectory {bad} has no turns; every trajectory needs >= 1 probe value"
        )
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    rows = Rows(np.repeat(g, lengths), np.repeat(np.arange(lengths.size), lengths), starts,
                lengths, g, n_groups)
    last = starts + lengths - 1
    gl = np.exp(l) if gain == "prob_diff" else l
    x = np.empty(l.size)
    x[:-1] = gl[1:] - gl[:-1]
    x[last] = out_r
    is_last = np.zeros(l.size, dtype=np.int64)
    is_last[last] = 1
    pool = rows.group * 2 + is_last if norm == "separate" else rows.group
    n_pool = 2 * n_groups if norm == "separate" else n_groups
    st = seg_stats(x, pool, n_pool, ddof=0)
    sigma = np.where(st.count > 1, np.sqrt(st.var + 1e-8), 1.0)
    z = (x - st.mean[pool]) / (sigma[pool] + EPS)
    return reverse_discounted_sum(z, rows, float(gamma)), lengths


@dataclass
class IGPOConfig:
    """IGPO: information-gain turn rewards from probe log-probs (``inputs["probe_logprob"]``)."""

    gamma: float = 1.0
    """Discount of the reverse sum of normalised turn rewards."""
    gain: Literal["log_prob_diff", "prob_diff"] = "log_prob_diff"
    """IG on log-probs (official script) or on probabilities (paper)."""
    norm: Literal["separate", "joint"] = "separate"
    """Outcomes and IG values z-scored in separate pools or one."""
    outcome_key: str | None = None
    """Metric rewarding the last turn (e.g. ``f1``); null: the episode return."""


@register_estimator("igpo", IGPOConfig, needs=("probe_logprob",))
def from_trajectories(batch: TurnBatch, config: IGPOConfig, inputs: Mapping[str, Any]):
    """Each turn's advantage on its action tokens, from the trainer's probe log-probs."""
    l = per_turn_input("probe_logprob", inputs, batch, "igpo")
    flat, _ = _flat_turn_advantages(batch.traj_group, split(l, batch.n_turns),
                                    batch.outcome(config.outcome_key), config.gamma,
                                    config.gain, config.norm)
    return turns_to_tokens(batch, flat), {"mean_abs_turn": mean_abs(flat)}
