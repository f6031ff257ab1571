"""SFT warm start: maximum likelihood on the generated tokens of demonstration trajectories.

Loss (token mean over the loss-mask-1 tokens of the whole batch, ``N`` of them)::

    L = -(1/N) * sum_{b,t: mask_bt = 1} log p(x_bt | x_b,<t)

Prompt and observation tokens are context only: they are never targets. Micro-batches are
normalised by the batch's ``N``, so the accumulated gradient equals the full-batch gradient.
With ``all_tokens=True`` every token after the first is a target (plain language modelling on
the transcripts). A small model learns to copy names from context (induction) far sooner from
that dense signal, since questions and passages repeat each entity's name, than from the few
action tokens alone; ``creditgym train`` uses it as a first warm-start phase.
Demonstrations are ordinary ``Trajectory`` records (e.g. from the scripted expert of the built-in
world); their ``action_logprobs`` and ``advantages`` are ignored.
With several ranks (model sharded by :func:`creditgym.trainers.distributed.shard_model`) each
rank passes its share; ``N`` is summed over ranks and FSDP sums the gradients, so the step
equals the single-process step on the union of the shares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from creditgym.trainers.distributed import (
    all_reduce_sum,
    even_micro_batches,
    raise_together,
    world,
)
from creditgym.trainers.logprobs import (
    Batch,
    autocast_context,
    model_device,
    pack_trajectories,
    sequence_logprobs,
)
from creditgym.trainers.optim import clip_and_step
from creditgym.trainers.policy_step import prepare_model
from creditgym.trajectory import Trajectory


def sft_loss(model: torch.nn.Module, batch: Batch, *, num_tokens: float | None = None,
             bf16: bool = True) -> torch.Tensor:
    """Summed negative log-likelihood of the loss-mask tokens of ``batch`` / ``num_tokens``.

    ``num_tokens`` defaults to the batch's own trained-token count (the plain token mean).
    """
    batch = batch.to(model_device(model))
    with autocast_context(model, bf16):
        logprobs = sequence_logprobs(model, batch.input_ids, batch.attention_mask)
    denom = float(batch.num_tokens if num_tokens is None else num_tokens)
    return -(logprobs * batch.loss_mask).sum() / max(denom, 1.0)


def accumulate_sft_gradients(model: torch.nn.Module, batch: Batch, *,
                             micro_batch_tokens: int | None, bf16: bool = True) -> float:
    """Backward every micro-batch of ``batch``; returns the batch loss (``.grad``: its gradient).

    With several ranks ``batch`` is this rank's share and the loss is that of all shares.
    """
    total = 0.0
    n_tokens = batch.num_tokens
    if world() > 1:
        n_tokens = int(all_reduce_sum(n_tokens))
    for micro in even_micro_batches(batch.micro_batches(micro_batch_tokens)):
        loss = sft_loss(model, micro, num_tokens=n_tokens, bf16=bf16)
        loss.backward()
        total += float(loss.detach())
    return total if world() == 1 else all_reduce_sum(total)


def sft_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None,
             trajs: Sequence[Trajectory], *, pad_id: int, micro_batch_tokens: int | None = 8192,
             max_grad_norm: float | None = 1.0, bf16: bool = True,
             gradient_checkpointing: bool = False, all_tokens: bool = False) -> dict[str, float]:
    """One SFT optimiser step on ``trajs``; returns ``loss``, ``tokens``, ``grad_norm``, ``lr``."""
    try:
        batch = pack_trajectories(trajs, pad_id)
    except Exception as e:  # re-raised here; on other ranks it ends their wait too
        raise_together(e)
    raise_together(None)
    if all_tokens:  # every real token but the first (it has no context to be predicted from)
        mask = batch.attention_mask.clone().to(batch.loss_mask.dtype)
        mask[:, 0] = 0
        batch = dataclasses.replace(batch, loss_mask=mask)
    prepare_model(model, gradient_checkpointing)
    optimizer.zero_grad(set_to_none=True)
    loss = accumulate_sft_gradients(model, batch, micro_batch_tokens=micro_batch_tokens,
                                    bf16=bf16)
    grad_norm, lr = clip_and_step(model, optimizer, scheduler, max_grad_norm)
    tokens = float(batch.num_tokens if world() == 1 else all_reduce_sum(batch.num_tokens))
    return {"loss": loss, "tokens": tokens, "grad_norm": grad_norm, "lr": lr}
