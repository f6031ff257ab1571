"""GRPO: episode-level group-relative advantages, the baseline every other method extends.

``A_i = (R_i - mean_g R) / (std_g R + eps)`` (``norm="std"``, unbiased std, eps 1e-6) or
``A_i = R_i - mean_g R`` (``norm="mean"``). A group of one gets 0; a group whose returns are all
equal gets exactly 0 (advantage collapse, never NaN).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from creditgym.credit._arrays import (
    as_float,
    check_lengths,
    factorize,
    mean_abs,
    seg_stats,
    zscore,
)
from creditgym.credit.adapter import TurnBatch, turns_to_tokens
from creditgym.credit.registry import register_estimator


def advantages(group: Any, reward: Any, *, norm: str = "std") -> np.ndarray:
    """One advantage per trajectory; ``group`` and ``reward`` hold one entry per trajectory."""
    check_lengths(group=group, reward=reward)
    g, n_groups = factorize("group", group)
    r = as_float("reward", reward)
    st = seg_stats(r, g, n_groups, ddof=1)
    out = zscore(r, g, st, norm)
    out[st.count[g] == 1] = 0.0
    return out


@dataclass
class GRPOConfig:
    """GRPO: episode-level group z-score."""

    norm: Literal["std", "mean"] = "std"
    """``std``: (R - mean)/(std + eps); ``mean``: R - mean."""
    outcome_key: str | None = None
    """Metric used as R (e.g. ``em``); null: the episode return (sum of turn rewards)."""


@register_estimator("grpo", GRPOConfig)
def from_trajectories(batch: TurnBatch, config: GRPOConfig, inputs: Mapping[str, Any]):
    """Each trajectory's advantage on all its action tokens."""
    a = advantages(batch.traj_group, batch.outcome(config.outcome_key), norm=config.norm)
    return turns_to_tokens(batch, a[batch.traj]), {"mean_abs_episode": mean_abs(a)}
