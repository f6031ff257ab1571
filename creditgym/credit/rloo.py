"""RLOO: leave-one-out baseline, ``A_i = R_i - mean_{j != i} R_j = (n R_i - sum_j R_j) / (n - 1)``.

A group of one has no other member and gets 0; equal returns give exactly 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.credit._arrays import as_float, check_lengths, factorize, mean_abs
from creditgym.credit.adapter import TurnBatch, turns_to_tokens
from creditgym.credit.registry import register_estimator


def advantages(group: Any, reward: Any) -> np.ndarray:
    """One advantage per trajectory; ``group`` and ``reward`` hold one entry per trajectory."""
    check_lengths(group=group, reward=reward)
    g, n_groups = factorize("group", group)
    r = as_float("reward", reward)
    return leave_one_out(r, g, n_groups)


def leave_one_out(x: np.ndarray, seg: np.ndarray, n_seg: int) -> np.ndarray:
    """``x_i - mean of the other members of its segment`` (0 for a segment of one)."""
    n = np.bincount(seg, minlength=n_seg).astype(np.float64)
    total = np.bincount(seg, weights=x, minlength=n_seg)
    others = n[seg] - 1.0
    out = x - (total[seg] - x) / np.maximum(others, 1.0)
    out[others == 0] = 0.0
    # exact zeros where every member is equal
    ref = np.zeros(n_seg)
    ref[seg] = x
    differs = np.bincount(seg, weights=(x != ref[seg]).astype(np.float64), minlength=n_seg) > 0
    out[~differs[seg]] = 0.0
    return out


@dataclass
class RLOOConfig:
    """RLOO: leave-one-out baseline on the episode outcome."""

    outcome_key: str | None = None
    """Metric used as R; null: the episode return."""


@register_estimator("rloo", RLOOConfig)
def from_trajectories(batch: TurnBatch, config: RLOOConfig, inputs: Mapping[str, Any]):
    """Each trajectory's advantage on all its action tokens."""
    a = advantages(batch.traj_group, batch.outcome(config.outcome_key))
    return turns_to_tokens(batch, a[batch.traj]), {"mean_abs_episode": mean_abs(a)}
