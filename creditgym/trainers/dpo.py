"""OPRL's implicit PRM: the trajectory DPO loss in torch, and one PRM optimiser step.

Same row contract and values as :func:`creditgym.credit.oprl.trajectory_dpo_loss` (one row = one
turn, rows of a trajectory contiguous), but differentiable w.r.t. the step log-ratios::

    q_{i,t} = sum over turn t's action tokens of (log pi_phi - log pi_ref)   (turn_logratio_sums)
    Q_i     = beta * mean_t q_{i,t}
    loss    = mean over (successful w, failed l) pairs of one group of -log sigmoid(Q_w - Q_l)
            = softplus(Q_l - Q_w);  no pair at all: 0 (with a zero gradient)

``pi_ref`` is the rollout policy: its log-probs are the trajectory's ``action_logprobs``.
``prm_update`` runs the "after" schedule of CREDIT.md: one PRM forward gives the step
log-ratios of the batch (returned, for ``oprl.step_rewards``/``oprl.advantages``) *and* the DPO
loss of one PRM optimiser step. With several micro-batches the DPO loss is not a sum over
micro-batches, so the update takes two passes: a no-grad pass for all ``q``, ``dL/dq`` from the
loss on those values, then per micro-batch a backward of ``sum(q * dL/dq)``, which gives exactly
the full-batch gradient (chain rule) while holding one micro-batch's activations at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from creditgym.credit._arrays import CreditInputError, check_lengths, per_trajectory, row_layout
from creditgym.trainers.distributed import (
    all_reduce_sum,
    even_micro_batches,
    raise_together,
    world,
)
from creditgym.trainers.logprobs import (
    Batch,
    TrainerInputError,
    autocast_context,
    model_device,
    pack_trajectories,
    sequence_logprobs,
)
from creditgym.trainers.optim import clip_and_step
from creditgym.trainers.policy_step import prepare_model
from creditgym.trajectory import Trajectory


def _pairs(group: Any, traj: Any, success: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """Row layout and the (winner, loser) trajectory indices of every within-group pair."""
    rows = row_layout(group, traj)
    win = per_trajectory("success", success, rows) > 0.5
    same = rows.traj_group[:, None] == rows.traj_group[None, :]
    w, l = np.nonzero(same & win[:, None] & ~win[None, :])
    return rows, w, l


def trajectory_dpo_loss(group: Any, traj: Any, logratio_sum: torch.Tensor, success: Any, *,
                        beta: float = 0.05, num_pairs: float | None = None) -> torch.Tensor:
    """Mean ``-log sigmoid(Q_win - Q_lose)`` over (success, failure) pairs of each group.

    ``group``/``traj`` are per-row keys, ``success`` is per row or per trajectory (as in the numpy
    version); ``logratio_sum`` is a 1-D tensor, one ``q`` per row. Returns a scalar tensor.
    ``num_pairs`` replaces the local pair count as the denominator (data parallel: the pairs of
    every rank, so the ranks' losses sum to the loss of the whole batch).
    """
    if not isinstance(logratio_sum, torch.Tensor) or logratio_sum.dim() != 1:
        raise CreditInputError("logratio_sum: expected a 1-D torch tensor (one value per row)")
    check_lengths(group=group, traj=traj, logratio_sum=logratio_sum)
    if not torch.isfinite(logratio_sum).all():
        bad = int(torch.nonzero(~torch.isfinite(logratio_sum))[0])
        raise CreditInputError(f"logratio_sum: value at row {bad} is "
                               f"{float(logratio_sum[bad])} (NaN/inf are not allowed)")
    rows, w, l = _pairs(group, traj, success)
    if w.size == 0:
        return (logratio_sum * 0.0).sum()  # no pair: no update, but a defined zero gradient
    dev = logratio_sum.device
    traj_code = torch.as_tensor(rows.traj, device=dev)
    lengths = torch.as_tensor(rows.lengths, device=dev, dtype=logratio_sum.dtype)
    q_sum = torch.zeros(rows.n_traj, dtype=logratio_sum.dtype, device=dev)
    Q = beta * q_sum.index_add(0, traj_code, logratio_sum) / lengths
    margin = Q[torch.as_tensor(w, device=dev)] - Q[torch.as_tensor(l, device=dev)]
    if num_pairs is None:
        return F.softplus(-margin).mean()
    return F.softplus(-margin).sum() / max(float(num_pairs), 1.0)


def turn_logratio_sums(prm_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                       turn_of_token: torch.Tensor, mask: torch.Tensor, *,
                       n_turns: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
    """Per-turn ``sum (prm - ref)`` over masked tokens: one value per (sequence, turn) row.

    Inputs are ``(B, T)`` (or ``(T,)`` for one sequence), token-aligned; ``turn_of_token`` is -1
    outside turns. Rows are ordered sequence by sequence, turns in order; ``n_turns`` (per
    sequence) defaults to ``max(turn_of_token) + 1``, so a trailing turn with no tokens needs it.
    """
    if prm_logprobs.dim() == 1:
        prm_logprobs, ref_logprobs = prm_logprobs[None], ref_logprobs[None]
        turn_of_token, mask = turn_of_token[None], mask[None]
    if not (prm_logprobs.shape == ref_logprobs.shape == turn_of_token.shape == mask.shape):
        raise TrainerInputError("turn_logratio_sums: prm_logprobs, ref_logprobs, turn_of_token "
                                "and mask must have the same shape")
    dev = prm_logprobs.device
    turn_of_token = turn_of_token.to(dev).long()
    if n_turns is None:
        n_turns_t = (turn_of_token.max(dim=1).values + 1).clamp(min=0)
    else:
        n_turns_t = torch.as_tensor(n_turns, device=dev, dtype=torch.long)
    offsets = torch.cumsum(n_turns_t, 0) - n_turns_t
    keep = (mask.to(dev) > 0) & (turn_of_token >= 0)
    if (turn_of_token >= n_turns_t[:, None]).any():
        raise TrainerInputError("turn_logratio_sums: turn_of_token has a turn >= n_turns")
    slot = (offsets[:, None] + turn_of_token)[keep]
    diff = (prm_logprobs - ref_logprobs.to(prm_logprobs.dtype))[keep]
    out = torch.zeros(int(n_turns_t.sum()), dtype=prm_logprobs.dtype, device=dev)
    return out.index_add(0, slot, diff)


@dataclass
class PRMUpdate:
    """What one PRM step computed, rows in trajectory order (turns in time order)."""

    group: list[str]
    """Group key of each row."""
    traj: list[str]
    """Trajectory id of each row."""
    logratio_sum: np.ndarray
    """``q`` of each row under the PRM *before* this step (feed to ``oprl.step_rewards``)."""
    loss: float
    """Trajectory DPO loss before the step."""
    metrics: dict[str, float] = field(default_factory=dict)
    """``dpo_loss``, ``pairs``, ``q_mean``, ``q_abs_mean``, ``grad_norm``, ``lr``, ``tokens``."""


def _micro_q(model: torch.nn.Module, micro: Batch, temperature: float, bf16: bool,
             offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-turn log-ratios of one micro-batch and their row positions in the full batch."""
    micro = micro.to(model_device(model))
    with autocast_context(model, bf16):
        lp = sequence_logprobs(model, micro.input_ids, micro.attention_mask,
                               temperature=temperature)
    q = turn_logratio_sums(lp, micro.old_logprobs, micro.turn_of_token, micro.loss_mask,
                           n_turns=micro.n_turns)
    idx = micro.index.cpu().numpy()
    n = micro.n_turns.cpu().numpy()
    pos = np.concatenate([offsets[i] + np.arange(k) for i, k in zip(idx, n)])
    return q, torch.as_tensor(pos, device=q.device)


def prm_update(prm_model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None,
               trajs: Sequence[Trajectory], *, pad_id: int, beta: float = 0.05,
               success_key: str = "success", temperature: float = 1.0,
               micro_batch_tokens: int | None = 8192, max_grad_norm: float | None = 1.0,
               bf16: bool = True) -> PRMUpdate:
    """One DPO optimiser step of the implicit PRM on a batch; see the module docstring.

    Data parallel (``prm_model`` sharded by ``shard_model``): each rank passes its share (whole
    groups, so every pair is local); the loss divides by the pairs of all ranks, so the step
    equals the single-process step on the union of the shares; metrics are over all ranks, the
    returned rows are this rank's.
    """
    try:
        for t in trajs:
            if t.n_turns == 0:
                raise TrainerInputError(f"trajectory {t.id!r} has no turns; the PRM scores turns")
            if success_key not in t.metrics:
                raise TrainerInputError(
                    f"trajectory {t.id!r}: metrics has no {success_key!r} (has "
                    f"{sorted(t.metrics)}); set success_key to the outcome metric that marks a "
                    f"successful episode")
        batch = pack_trajectories(trajs, pad_id)
    except Exception as e:  # re-raised here; on other ranks it ends their wait too
        raise_together(e)
    raise_together(None)
    distributed = world() > 1
    n_turns = batch.n_turns.numpy()
    offsets = np.cumsum(n_turns) - n_turns
    group = [t.group for t in trajs for _ in range(t.n_turns)]
    traj = [t.id for t in trajs for _ in range(t.n_turns)]
    success = [float(t.metrics[success_key]) for t in trajs]
    n_rows = int(n_turns.sum())
    prepare_model(prm_model, False)
    optimizer.zero_grad(set_to_none=True)
    micros = batch.micro_batches(micro_batch_tokens)
    real = len(micros)
    micros = even_micro_batches(micros)  # padding passes (index >= real) only join collectives
    _, w, _ = _pairs(group, traj, success)
    n_pairs = all_reduce_sum(float(w.size)) if distributed else None
    dev = model_device(prm_model)
    if len(micros) == 1 and not distributed:
        q_mb, pos = _micro_q(prm_model, micros[0], temperature, bf16, offsets)
        q = torch.zeros(n_rows, dtype=q_mb.dtype, device=dev).index_copy(0, pos, q_mb)
        loss = trajectory_dpo_loss(group, traj, q, success, beta=beta)
        loss.backward()  # one pass; with several ranks every rank takes the two-pass path
    else:
        q = torch.zeros(n_rows, dtype=torch.float32, device=dev)
        with torch.no_grad():
            for micro in micros[:real]:
                q_mb, pos = _micro_q(prm_model, micro, temperature, bf16, offsets)
                q.index_copy_(0, pos, q_mb.float())
            for micro in micros[real:]:
                _micro_q(prm_model, micro, temperature, bf16, offsets)
        q.requires_grad_(True)
        loss = trajectory_dpo_loss(group, traj, q, success, beta=beta, num_pairs=n_pairs)
        (dq,) = torch.autograd.grad(loss, q)
        for i, micro in enumerate(micros):
            q_mb, pos = _micro_q(prm_model, micro, temperature, bf16, offsets)
            weight = dq[pos].to(q_mb.dtype) if i < real else torch.zeros_like(q_mb)
            (q_mb * weight).sum().backward()
    grad_norm, lr = clip_and_step(prm_model, optimizer, scheduler, max_grad_norm)
    q_np = q.detach().double().cpu().numpy()
    sums = [float(loss.detach()), float(w.size), float(q_np.sum()), float(np.abs(q_np).sum()),
            float(q_np.size), float(batch.num_tokens)]
    if distributed:  # the loss is already divided by the global pair count
        sums = all_reduce_sum(sums)
    dpo_loss, pairs, q_sum, q_abs, rows, tokens = sums
    metrics = {"dpo_loss": dpo_loss, "pairs": pairs, "q_mean": q_sum / max(rows, 1.0),
               "q_abs_mean": q_abs / max(rows, 1.0), "grad_norm": grad_norm, "lr": lr,
               "tokens": tokens}
    return PRMUpdate(group, traj, q_np, dpo_loss, metrics)
