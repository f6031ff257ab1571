"""GiGPO: group-in-group advantages (arXiv 2505.10978), episode level plus anchor-state step level.

Formulas (one row per turn; rows of a trajectory contiguous and in time order):

* step return ``G_t = r_t + gamma * G_{t+1}``; invalid-action penalty after discounting, on its
  own row only: ``Ghat_t = G_t - c * [turn t invalid]``;
* episode score ``E_{i,t} = R_i - c * [turn (i,t) invalid]``; mean/std per group over the
  trajectories' returns ``R_i`` (``episode_stats="trajectory"``) or over the rows' scores ``E``
  (``"step"``, verl-agent's code); a pool of one: mean 0, std 1.
  ``A^E = (E - mean) / (std + eps)`` (``norm="std"``) or ``E - mean`` (``norm="mean"``);
* step groups: rows of one group with equal anchors (or, with ``similarity=thr``, greedy
  first-member difflib clusters, see :mod:`creditgym.credit.similarity`);
  ``A^S = (Ghat - mean) / (std + eps)`` or ``Ghat - mean`` inside a step group, 0 for singletons;
* ``total = A^E + step_weight * A^S``.

std is the unbiased one, eps 1e-6; a pool whose values are all equal gives exactly 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from creditgym.credit._arrays import (
    CreditInputError,
    Rows,
    as_float,
    check_lengths,
    factorize,
    reverse_discounted_sum,
    row_layout,
    seg_stats,
    zscore,
)
from creditgym.credit.adapter import TurnBatch, turns_to_tokens
from creditgym.credit.registry import register_estimator
from creditgym.credit.similarity import greedy_cluster
from creditgym.errors import ConfigError


@dataclass(frozen=True)
class GiGPOAdvantages:
    """Per-row results: ``episode`` (A^E), ``step`` (A^S), ``total``; ``step_group`` codes."""

    episode: np.ndarray
    step: np.ndarray
    total: np.ndarray
    step_group: np.ndarray
    diagnostics: dict[str, float] = field(default_factory=dict)


def advantages(
    group: Any,
    traj: Any,
    anchor: Any,
    reward: Any,
    *,
    valid: Any = None,
    gamma: float = 0.95,
    step_weight: float = 1.0,
    norm: str = "std",
    invalid_penalty: float = 0.0,
    episode_stats: str = "trajectory",
    similarity: float | None = None,
) -> GiGPOAdvantages:
    """GiGPO advantages for flat turn rows (see the module docstring for the formulas)."""
    if norm not in ("std", "mean"):
        raise CreditInputError(f"norm: {norm!r} is not one of 'std', 'mean'")
    if episode_stats not in ("trajectory", "step"):
        raise CreditInputError(f"episode_stats: {episode_stats!r} is not 'trajectory' or 'step'")
    if valid is None:
        check_lengths(group=group, traj=traj, anchor=anchor, reward=reward)
    else:
        check_lengths(group=group, traj=traj, anchor=anchor, reward=reward, valid=valid)
    rows = row_layout(group, traj)
    r = as_float("reward", reward)
    pen = np.zeros(r.size)
    if valid is not None and invalid_penalty:
        pen = invalid_penalty * (~np.asarray(valid, dtype=bool)).astype(np.float64)

    g_hat = reverse_discounted_sum(r, rows, float(gamma)) - pen
    ret = np.add.reduceat(r, rows.starts)
    score = ret[rows.traj] - pen
    if episode_stats == "trajectory":
        st = seg_stats(ret, rows.traj_group, rows.n_groups, ddof=1)
    else:
        st = seg_stats(score, rows.group, rows.n_groups, ddof=1)
    one = st.count == 1  # a pool of one: raw score passes through
    st.mean[one], st.std[one] = 0.0, 1.0
    a_ep = zscore(score, rows.group, st, norm)

    step_group, n_step = _step_groups(rows, anchor, similarity)
    sst = seg_stats(g_hat, step_group, n_step, ddof=1)
    a_step = zscore(g_hat, step_group, sst, norm)
    a_step[sst.count[step_group] == 1] = 0.0
    total = a_ep + step_weight * a_step
    diag = _diagnostics(rows, a_ep, a_step, total, step_group, sst.count)
    return GiGPOAdvantages(a_ep, a_step, total, step_group, diag)


def _step_groups(rows: Rows, anchor: Any, similarity: float | None) -> tuple[np.ndarray, int]:
    if similarity is None:
        a, n_a = factorize("anchor", anchor)
        return factorize("step_group", rows.group * max(n_a, 1) + a)
    texts = list(anchor)
    order = np.argsort(rows.group, kind="stable")
    bounds = np.flatnonzero(np.diff(rows.group[order])) + 1
    cluster = np.empty(rows.group.size, dtype=np.int64)
    offset = 0
    for idx in np.split(order, bounds):
        c = greedy_cluster([texts[i] for i in idx], similarity)
        cluster[idx] = c + offset
        offset += int(c.max()) + 1
    return cluster, offset


def _diagnostics(rows, a_ep, a_step, total, step_group, step_count) -> dict[str, float]:
    gsize = np.bincount(rows.traj_group, minlength=rows.n_groups)
    zero = np.bincount(rows.group, weights=(total != 0).astype(np.float64), minlength=rows.n_groups)
    return {
        "groups": float(rows.n_groups),
        "group_size_mean": float(gsize.mean()),
        "group_size_min": float(gsize.min()),
        "step_groups": float(step_count.size),
        "step_group_size_mean": float(step_count.mean()),
        "singleton_step_group_share": float((step_count == 1).mean()),
        "zero_adv_group_share": float((zero == 0).mean()),
        "mean_abs_episode": float(np.abs(a_ep).mean()),
        "mean_abs_step": float(np.abs(a_step).mean()),
        "mean_abs_total": float(np.abs(total).mean()),
    }


@dataclass
class GiGPOConfig:
    """GiGPO: episode level plus anchor-state step level (defaults: the paper's scripts)."""

    gamma: float = 0.95
    """Discount of the step returns."""
    step_weight: float = 1.0
    """Weight of the step-level advantage in the total."""
    norm: Literal["std", "mean"] = "std"
    """``std`` for search/ALFWorld, ``mean`` for WebShop."""
    invalid_penalty: float = 0.0
    """Subtracted on invalid turns (0.1 ALFWorld/WebShop, 0.01 search in the paper)."""
    episode_stats: Literal["trajectory", "step"] = "trajectory"
    """Episode mean/std over trajectories (paper) or over all turn rows (verl-agent code)."""
    similarity: float | None = None
    """difflib ratio threshold in (0, 1) for similar text anchors (0.9 for search); null: exact."""

    def __post_init__(self) -> None:
        if self.similarity is not None and not 0.0 < self.similarity < 1.0:
            raise ConfigError(f"gigpo.similarity must be in (0, 1) or null, got {self.similarity}")


@register_estimator("gigpo", GiGPOConfig)
def from_trajectories(batch: TurnBatch, config: GiGPOConfig, inputs: Mapping[str, Any]):
    """Each turn's total advantage on its action tokens."""
    r = advantages(
        batch.group, batch.traj, batch.anchors, batch.reward, valid=batch.valid,
        gamma=config.gamma, step_weight=config.step_weight, norm=config.norm,
        invalid_penalty=config.invalid_penalty, episode_stats=config.episode_stats,
        similarity=config.similarity)
    return turns_to_tokens(batch, r.total), dict(r.diagnostics)
