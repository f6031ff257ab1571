"""AdamW parameter groups and the warm-up learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch

from creditgym.config import from_dict
from creditgym.errors import ConfigError
from creditgym.trainers.optim import OptimConfig, clip_and_step, lr_factor, make_optimizer
from tests.trainers.helpers import tiny_model


def _lrs(cfg, steps):
    model = torch.nn.Linear(2, 2)
    opt, sched = make_optimizer(model, cfg)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_and_linear():
    cos = OptimConfig(lr=1.0, warmup_steps=4, total_steps=12, schedule="cosine", min_lr_ratio=0.1)
    lrs = _lrs(cos, 14)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)  # decay starts after warm-up
    assert lrs[8] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[12] == pytest.approx(0.1) and lrs[13] == pytest.approx(0.1)  # floor holds
    lin = OptimConfig(lr=2.0, warmup_steps=0, total_steps=4, schedule="linear")
    assert _lrs(lin, 5) == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])
    assert _lrs(OptimConfig(lr=0.3), 3) == pytest.approx([0.3] * 3)
    assert lr_factor(0, OptimConfig(warmup_steps=10)) == pytest.approx(0.1)


def test_weight_decay_only_on_matrices_and_config_errors():
    model = tiny_model()
    opt, _ = make_optimizer(model, OptimConfig(weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() < 2 for p in plain["params"])
    assert len(plain["params"]) > 0  # RMSNorm gains
    with pytest.raises(ConfigError, match="total_steps"):
        OptimConfig(schedule="cosine")
    with pytest.raises(ConfigError, match="schedule"):
        OptimConfig(schedule="step")
    cfg = from_dict(OptimConfig, {"lr": 1e-5, "betas": [0.9, 0.95]})
    assert cfg.betas == (0.9, 0.95)


def test_clip_and_step_clips_and_skips_non_finite():
    model = torch.nn.Linear(3, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = model.weight.detach().clone()
    model.weight.grad = torch.tensor([[3.0, 4.0, 0.0]])
    norm, lr = clip_and_step(model, opt, None, max_grad_norm=1.0)
    assert norm == pytest.approx(5.0) and lr == 1.0
    assert torch.allclose(model.weight, before - torch.tensor([[0.6, 0.8, 0.0]]))
    model.weight.grad = torch.tensor([[float("nan"), 0.0, 0.0]])
    after = model.weight.detach().clone()
    norm, _ = clip_and_step(model, opt, None, max_grad_norm=1.0)
    assert math.isnan(norm) and torch.equal(model.weight, after) and model.weight.grad is None
