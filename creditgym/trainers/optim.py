"""AdamW with a warm-up learning-rate schedule, and the clip-then-step shared by every trainer.

Learning-rate factor at optimiser step ``s`` (``w`` = warmup_steps, ``N`` = total_steps,
``m`` = min_lr_ratio)::

    s < w:      (s + 1) / w                                  (linear warm-up, full lr at step w-1)
    otherwise:  p = min(1, (s - w) / max(1, N - w))
                constant: 1
                linear:   m + (1 - m) * (1 - p)
                cosine:   m + (1 - m) * (1 + cos(pi * p)) / 2

Weight decay applies to matrices only (parameters with >= 2 dims); biases and norm gains are not
decayed, the usual practice for transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from creditgym.errors import ConfigError

Schedule = Literal["constant", "cosine", "linear"]


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = 1e-6
    """Peak learning rate (reached at the end of warm-up)."""
    weight_decay: float = 0.0
    """Decoupled weight decay of AdamW, applied to weight matrices only."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW moment decay rates."""
    eps: float = 1e-8
    """AdamW denominator epsilon."""
    warmup_steps: int = 0
    """Optimiser steps of linear warm-up from lr/warmup_steps to lr (0: no warm-up)."""
    total_steps: int = 0
    """Optimiser steps of the whole run; needed by the ``cosine`` and ``linear`` schedules."""
    schedule: Schedule = "constant"
    """Learning-rate shape after warm-up: ``constant``, ``cosine`` or ``linear`` decay."""
    min_lr_ratio: float = 0.0
    """Floor of the decaying schedules, as a fraction of ``lr``."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"OptimConfig.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"OptimConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"OptimConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if self.warmup_steps < 0:
            raise ConfigError(f"OptimConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.schedule not in ("constant", "cosine", "linear"):
            raise ConfigError(
                f"OptimConfig.schedule {self.schedule!r} is not one of constant, cosine, linear")
        if self.schedule != "constant" and self.total_steps <= self.warmup_steps:
            raise ConfigError(
                f"OptimConfig.schedule {self.schedule!r} decays until total_steps, so total_steps "
                f"({self.total_steps}) must exceed warmup_steps ({self.warmup_steps}); set it to "
                f"the run's number of optimiser steps or use schedule: constant")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(
                f"OptimConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


def lr_factor(step: int, cfg: OptimConfig) -> float:
    """The schedule's multiplier of ``cfg.lr`` at optimiser step ``step`` (module docstring)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    p = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
    m = cfg.min_lr_ratio
    if cfg.schedule == "linear":
        return m + (1.0 - m) * (1.0 - p)
    return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * p))


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig
                   ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters and a ``LambdaLR`` following :func:`lr_factor`."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters (all have requires_grad=False)")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    return optimizer, scheduler


def clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LRScheduler | None,
                  max_grad_norm: float | None) -> tuple[float, float]:
    """Clip the accumulated gradient, step optimiser and scheduler, zero the gradient.

    Returns (gradient norm before clipping, learning rate used for this step). A non-finite
    norm skips the parameter update (the gradients are dropped) rather than poisoning the
    weights; the scheduler still advances so the schedule stays aligned with the loop's steps.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    limit = float("inf") if not max_grad_norm else float(max_grad_norm)
    norm = float(torch.nn.utils.clip_grad_norm_(params, limit)) if params else 0.0
    lr = float(optimizer.param_groups[0]["lr"])
    if math.isfinite(norm):
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm, lr
