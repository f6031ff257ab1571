"""PURE min-form credit (arXiv 2504.15275): ``r'_k = softmax_k(-r_k / T) * r_k`` per response.

The weights concentrate on the worst step, so ``sum_k r'_k ~ min_k r_k``: the value of a prefix
is its worst future step, which stops a policy from farming many mildly positive PRM steps.
Example (T = 0.1): ``[0.9, -0.5, 0.8] -> [~0, -0.5, ~0]``; ``[0.7, 0.6] -> [0.188, 0.439]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.credit import rloo
from creditgym.credit._arrays import (
    CreditInputError,
    as_float,
    mean_abs,
    reverse_discounted_sum,
    row_layout,
)
from creditgym.credit.adapter import TurnBatch, per_turn_input, turns_to_tokens
from creditgym.credit.registry import register_estimator


def min_form(step_reward: Any, *, temperature: float = 0.1, lengths: Any = None) -> np.ndarray:
    """Min-form transform of the step rewards of one response.

    ``lengths`` (optional) cuts a flat array into several consecutive responses, each
    transformed on its own (vectorised); without it the whole array is one response.
    """
    if not temperature > 0:
        raise CreditInputError(f"temperature: must be > 0, got {temperature!r}")
    r = as_float("step_reward", step_reward)
    if lengths is None:
        seg = np.zeros(r.size, dtype=np.int64)
        n_seg = 1
    else:
        lens = np.asarray(lengths, dtype=np.int64)
        if (lens < 0).any() or lens.sum() != r.size:
            raise CreditInputError(
                f"lengths: must be non-negative and sum to len(step_reward)={r.size}, "
                f"got sum {int(lens.sum())}"
            )
        seg = np.repeat(np.arange(lens.size), lens)
        n_seg = lens.size
    if r.size == 0:
        return r
    z = -r / temperature
    zmax = np.full(n_seg, -np.inf)
    np.maximum.at(zmax, seg, z)
    w = np.exp(z - zmax[seg])
    w /= np.bincount(seg, weights=w, minlength=n_seg)[seg]
    return w * r


@dataclass
class PUREConfig:
    """PURE: min-form process returns plus an RLOO outcome advantage."""

    temperature: float = 0.1
    """Softmax temperature of the min-form weights."""
    outcome_weight: float = 1.0
    """Weight of the RLOO advantage on the outcome (0: process rewards only)."""
    outcome_key: str | None = None
    """Metric used as the verifiable outcome; null: the episode return."""


@register_estimator("pure", PUREConfig, optional=("step_reward",))
def from_trajectories(batch: TurnBatch, config: PUREConfig, inputs: Mapping[str, Any]):
    """Per turn: the min-form return-to-go of the step rewards (``inputs["step_reward"]``, else
    the env's turn rewards) plus ``outcome_weight`` times the RLOO outcome advantage."""
    if "step_reward" in inputs:
        s = per_turn_input("step_reward", inputs, batch, "pure")
    else:
        s = batch.reward
    m = min_form(s, temperature=config.temperature, lengths=batch.n_turns)
    proc = reverse_discounted_sum(m, row_layout(batch.group, batch.traj), 1.0)
    out_adv = rloo.advantages(batch.traj_group, batch.outcome(config.outcome_key))
    a = proc + config.outcome_weight * out_adv[batch.traj]
    return turns_to_tokens(batch, a), {"mean_abs_process": mean_abs(proc),
                                       "mean_abs_episode": mean_abs(out_adv)}
