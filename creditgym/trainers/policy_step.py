"""One policy update on a batch of trajectories with per-token advantages.

The batch is cut into ``mini_batches`` optimiser steps (repeated ``ppo_epochs`` times); each
mini-batch is cut into micro-batches of at most ``micro_batch_tokens`` padded tokens whose
gradients are accumulated. The micro-batch losses are normalised by the *mini-batch's* token count
(``token-mean``) or sequence count (``seq-mean-*``), so the sum of micro-batch losses is exactly
the mini-batch loss of :func:`creditgym.trainers.loss.policy_loss` and the accumulated gradient is
the full-batch gradient, whatever the micro-batch size. Then: clip the gradient norm, AdamW step,
scheduler step. The ratio is taken against the rollout's log-probs (``Trajectory.action_logprobs``),
so ``temperature`` must be the rollout's sampling temperature.

Data parallel (several ranks, the model sharded by
:func:`creditgym.trainers.distributed.shard_model`): each rank passes its own share of the
trajectories (whole groups). The token and sequence counts of each mini-batch are summed over
ranks before they divide the loss, and FSDP sums the gradients, so with ``mini_batches: 1`` the
update equals the single-process update on the union of the shares, in every aggregation mode;
the clipped norm is the global one. With ``mini_batches: k`` optimiser step ``i`` uses every
rank's ``i``-th contiguous chunk of its own share. Returned metrics are over all ranks. One
process without a process group runs exactly the single-process code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from creditgym.errors import ConfigError
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
from creditgym.trainers.loss import AGGREGATIONS, KL_ESTIMATORS, policy_loss
from creditgym.trainers.optim import clip_and_step
from creditgym.trajectory import Trajectory


@dataclass(frozen=True)
class PolicyUpdateConfig:
    """How one policy update turns a batch of trajectories into optimiser steps."""

    clip_low: float = 0.2
    """Lower clip range: the ratio is clipped at ``1 - clip_low``."""
    clip_high: float = 0.2
    """Upper clip range: the ratio is clipped at ``1 + clip_high`` (0.28 for DAPO clip-higher)."""
    dual_clip: float | None = None
    """Dual-clip constant c > 1 bounding the loss of negative-advantage tokens at ``-c * A``
    (null: off)."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to the frozen reference model (0: no penalty)."""
    kl_estimator: str = "k3"
    """KL estimator: ``k1`` (log-ratio), ``k2`` (half squared log-ratio), ``k3`` (low variance)."""
    agg: str = "token-mean"
    """Loss aggregation: ``token-mean``, ``seq-mean-token-sum`` or ``seq-mean-token-mean``."""
    temperature: float = 1.0
    """Sampling temperature of the rollout; log-probs are computed at the same temperature."""
    micro_batch_tokens: int | None = 8192
    """Most padded tokens (rows x length) per forward/backward pass (null: whole mini-batch)."""
    ppo_epochs: int = 1
    """Passes over the batch."""
    mini_batches: int = 1
    """Optimiser steps per pass; the batch is split into this many contiguous mini-batches."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient's global L2 norm to this (null or 0: no clipping, norm still logged)."""
    bf16: bool = True
    """Run the forward pass under bf16 autocast when the model is on CUDA (ignored on CPU)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (transformers models)."""

    def __post_init__(self) -> None:
        if not (0.0 <= self.clip_low < 1.0) or self.clip_high < 0.0:
            raise ConfigError(f"PolicyUpdateConfig: need 0 <= clip_low < 1 and clip_high >= 0, "
                              f"got clip_low={self.clip_low}, clip_high={self.clip_high}")
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ConfigError(f"PolicyUpdateConfig.dual_clip must be > 1 (e.g. 3), got "
                              f"{self.dual_clip}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ConfigError(f"PolicyUpdateConfig.kl_estimator {self.kl_estimator!r} is not one "
                              f"of {', '.join(KL_ESTIMATORS)}")
        if self.agg not in AGGREGATIONS:
            raise ConfigError(f"PolicyUpdateConfig.agg {self.agg!r} is not one of "
                              f"{', '.join(AGGREGATIONS)}")
        if self.temperature <= 0:
            raise ConfigError(f"PolicyUpdateConfig.temperature must be > 0, got {self.temperature}")
        if self.micro_batch_tokens is not None and self.micro_batch_tokens <= 0:
            raise ConfigError(f"PolicyUpdateConfig.micro_batch_tokens must be > 0 or null, got "
                              f"{self.micro_batch_tokens}")
        if self.ppo_epochs < 1 or self.mini_batches < 1:
            raise ConfigError(f"PolicyUpdateConfig: ppo_epochs and mini_batches must be >= 1, got "
                              f"{self.ppo_epochs} and {self.mini_batches}")


def prepare_model(model: torch.nn.Module, gradient_checkpointing: bool) -> None:
    """Training mode, and gradient checkpointing switched on when asked for."""
    model.train()
    if gradient_checkpointing and not getattr(model, "is_gradient_checkpointing", False):
        enable = getattr(model, "gradient_checkpointing_enable", None)
        if enable is None:
            raise ConfigError(f"gradient_checkpointing is on but {type(model).__name__} has no "
                              f"gradient_checkpointing_enable(); use a transformers model or "
                              f"turn the option off")
        # non-reentrant checkpointing works with inputs that do not require grad
        enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def accumulate_policy_gradients(model: torch.nn.Module, batch: Batch, cfg: PolicyUpdateConfig,
                                *, ref_model: torch.nn.Module | None = None) -> dict[str, float]:
    """Forward/backward every micro-batch of ``batch``; ``.grad`` then holds the batch gradient.

    Returns token-weighted statistics of the whole batch (``loss`` is the batch loss). With
    several ranks ``batch`` is this rank's share, and the statistics are those of all shares.
    """
    if cfg.kl_coef and ref_model is None:
        raise ConfigError("kl_coef is non-zero but no ref_model was given; pass the frozen "
                          "reference model or set kl_coef: 0")
    device = model_device(model)
    n_tokens, n_seqs = batch.num_tokens, batch.num_seqs
    distributed = world() > 1
    if distributed:  # the denominators of the global loss (module docstring)
        n_tokens, n_seqs = (int(v) for v in all_reduce_sum([n_tokens, n_seqs]))
    sums = {"loss": 0.0, "pg_loss": 0.0, "entropy": 0.0, "clip_frac": 0.0,
            "dual_clip_frac": 0.0, "ratio_mean": 0.0, "approx_kl_old": 0.0, "kl_ref": 0.0}
    for micro in even_micro_batches(batch.micro_batches(cfg.micro_batch_tokens)):
        micro = micro.to(device)
        ref_lp = None
        if ref_model is not None:
            with torch.no_grad(), autocast_context(ref_model, cfg.bf16):
                ref_lp = sequence_logprobs(ref_model, micro.input_ids, micro.attention_mask,
                                           temperature=cfg.temperature)
        with autocast_context(model, cfg.bf16):
            logprobs, entropy = sequence_logprobs(
                model, micro.input_ids, micro.attention_mask, temperature=cfg.temperature,
                return_entropy=True)
        loss, stats = policy_loss(
            logprobs, micro.old_logprobs, micro.advantages, micro.loss_mask,
            clip_low=cfg.clip_low, clip_high=cfg.clip_high, dual_clip=cfg.dual_clip,
            ref_logprobs=ref_lp, kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator,
            agg=cfg.agg, num_tokens=n_tokens, num_seqs=n_seqs)
        loss.backward()
        w = stats["tokens"] / max(n_tokens, 1)
        sums["loss"] += float(loss.detach())
        sums["pg_loss"] += stats["pg_loss"]  # already normalised by the batch counts
        sums["entropy"] += float((entropy * micro.loss_mask).sum()) / max(n_tokens, 1)
        for key in ("clip_frac", "dual_clip_frac", "ratio_mean", "approx_kl_old", "kl_ref"):
            sums[key] += stats.get(key, 0.0) * w
    if distributed:  # every term above is already divided by the global counts
        keys = sorted(sums)
        sums = dict(zip(keys, all_reduce_sum([sums[k] for k in keys])))
    if ref_model is None:
        del sums["kl_ref"]
    sums["tokens"] = float(n_tokens)
    return sums


def policy_update(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LRScheduler | None,
                  trajs: Sequence[Trajectory], cfg: PolicyUpdateConfig, *,
                  ref_model: torch.nn.Module | None = None, pad_id: int) -> dict[str, float]:
    """All optimiser steps of one batch; returns metrics averaged over those steps.

    Metrics: ``loss``, ``pg_loss``, ``entropy``, ``clip_frac``, ``dual_clip_frac``,
    ``ratio_mean``, ``approx_kl_old``, ``kl_ref`` (with a reference model), ``grad_norm`` (before
    clipping), ``lr``, ``tokens`` (trained tokens in the batch), ``optimizer_steps``.
    """
    try:
        batch = pack_trajectories(trajs, pad_id, require_advantages=True)
        if cfg.mini_batches > batch.num_seqs:
            raise TrainerInputError(f"mini_batches={cfg.mini_batches} exceeds the "
                                    f"{batch.num_seqs} trajectories of the batch; lower "
                                    f"mini_batches")
    except Exception as e:  # re-raised here; on other ranks it ends their wait too
        raise_together(e)
    raise_together(None)
    prepare_model(model, cfg.gradient_checkpointing)
    if ref_model is not None:
        ref_model.eval()
    optimizer.zero_grad(set_to_none=True)
    steps: list[dict[str, float]] = []
    for _ in range(cfg.ppo_epochs):
        for rows in np.array_split(np.arange(batch.num_seqs), cfg.mini_batches):
            stats = accumulate_policy_gradients(model, batch.select(rows), cfg,
                                                ref_model=ref_model)
            stats["grad_norm"], stats["lr"] = clip_and_step(model, optimizer, scheduler,
                                                            cfg.max_grad_norm)
            steps.append(stats)
    metrics = {k: float(np.mean([s[k] for s in steps])) for k in steps[0] if k != "tokens"}
    metrics["tokens"] = float(batch.num_tokens if world() == 1
                              else all_reduce_sum(batch.num_tokens))
    metrics["optimizer_steps"] = float(len(steps))
    return metrics
