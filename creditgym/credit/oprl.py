"""OPRL: online process reward learning with an implicit PRM (arXiv 2509.19199).

One row = one environment step (turn); rows of a trajectory are contiguous and in time order.

* step log-ratio ``q_{i,t} = sum over the turn's action tokens of (log pi_phi - log pi_ref)``
  (computed by the trainer from the PRM and the rollout log-probs and passed in here);
* step reward ``s = beta * q / (max |beta * q| over the batch + 1e-6)``;
* trajectory DPO: ``Q_i = beta * mean_t q_{i,t}``; over every (successful, failed) pair of a
  group, loss = mean of ``-log sigmoid(Q_win - Q_lose)``; no pair at all gives 0;
* advantage ``A = A^E + step_weight * A^S`` with leave-one-out baselines inside the group:
  ``A^E_i = R_i - mean_{j != i} R_j`` and ``A^S_{i,t} = s_{i,t} - mean`` of the step rewards of
  the *other* trajectories' steps (0 where there is no other trajectory).

Per-trajectory inputs (``episode_reward``, ``success``) may be given per row (constant inside a
trajectory) or once per trajectory, in the order trajectories first appear.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.credit._arrays import (
    as_float,
    check_lengths,
    mean_abs,
    per_trajectory,
    row_layout,
)
from creditgym.credit.adapter import TurnBatch, per_turn_input, turns_to_tokens
from creditgym.credit.registry import register_estimator
from creditgym.credit.rloo import leave_one_out


def step_rewards(logratio_sum: Any, *, beta: float = 0.05) -> np.ndarray:
    """``beta * q`` scaled by the largest absolute value in the batch (+1e-6)."""
    s = beta * as_float("logratio_sum", logratio_sum)
    if s.size == 0:
        return s
    return s / (np.abs(s).max() + 1e-6)


def trajectory_dpo_loss(
    group: Any, traj: Any, logratio_sum: Any, success: Any, *, beta: float = 0.05
) -> float:
    """Mean ``-log sigmoid(Q_win - Q_lose)`` over (success, failure) pairs of each group."""
    check_lengths(group=group, traj=traj, logratio_sum=logratio_sum)
    rows = row_layout(group, traj)
    q = as_float("logratio_sum", logratio_sum)
    Q = beta * np.add.reduceat(q, rows.starts) / rows.lengths
    win = per_trajectory("success", success, rows) > 0.5
    # pad trajectories into (groups, n_max) to form all within-group pairs at once
    order = np.argsort(rows.traj_group, kind="stable")
    sizes = np.bincount(rows.traj_group, minlength=rows.n_groups)
    slot = np.arange(order.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    gq = np.zeros((rows.n_groups, int(sizes.max())))
    gw = np.zeros_like(gq, dtype=bool)
    gl = np.zeros_like(gq, dtype=bool)
    gq[rows.traj_group[order], slot] = Q[order]
    gw[rows.traj_group[order], slot] = win[order]
    gl[rows.traj_group[order], slot] = ~win[order]
    pair = gw[:, :, None] & gl[:, None, :]
    if not pair.any():
        return 0.0
    margin = gq[:, :, None] - gq[:, None, :]
    return float(np.logaddexp(0.0, -margin[pair]).mean())


def advantages(
    group: Any, traj: Any, episode_reward: Any, step_reward: Any, *, step_weight: float = 1.0
) -> np.ndarray:
    """One advantage per row: leave-one-out episode term plus weighted leave-one-out step term."""
    check_lengths(group=group, traj=traj, step_reward=step_reward)
    rows = row_layout(group, traj)
    s = as_float("step_reward", step_reward)
    ep = leave_one_out(per_trajectory("episode_reward", episode_reward, rows), rows.traj_group,
                       rows.n_groups)
    # step baseline: mean of the step rewards of the other trajectories of the group
    g_sum = np.bincount(rows.group, weights=s, minlength=rows.n_groups)
    g_cnt = np.bincount(rows.group, minlength=rows.n_groups).astype(np.float64)
    t_sum = np.add.reduceat(s, rows.starts)
    other_cnt = g_cnt[rows.group] - rows.lengths[rows.traj]
    other_mean = (g_sum[rows.group] - t_sum[rows.traj]) / np.maximum(other_cnt, 1.0)
    a_step = np.where(other_cnt > 0, s - other_mean, 0.0)
    return ep[rows.traj] + step_weight * a_step


@dataclass
class OPRLConfig:
    """OPRL: implicit-PRM step rewards (``inputs["logratio_sum"]``) with leave-one-out baselines."""

    beta: float = 0.05
    """Scale of the PRM log-ratios."""
    step_weight: float = 1.0
    """Weight of the step-level advantage."""
    success_key: str | None = None
    """Metric marking success for the DPO pairs; null: episode return > 0."""


@register_estimator("oprl", OPRLConfig, needs=("logratio_sum",))
def from_trajectories(batch: TurnBatch, config: OPRLConfig, inputs: Mapping[str, Any]):
    """Each turn's advantage on its action tokens, from the trainer's PRM log-ratios; the
    diagnostics carry the trajectory DPO loss of the same log-ratios."""
    q = per_turn_input("logratio_sum", inputs, batch, "oprl")
    s = step_rewards(q, beta=config.beta)
    a = advantages(batch.group, batch.traj, batch.returns, s, step_weight=config.step_weight)
    won = (batch.returns > 0 if config.success_key is None
           else batch.outcome(config.success_key) > 0.5)
    loss = trajectory_dpo_loss(batch.group, batch.traj, q, won.astype(float), beta=config.beta)
    return turns_to_tokens(batch, a), {"dpo_loss": loss, "mean_abs_turn": mean_abs(a)}
