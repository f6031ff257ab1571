"""Policy update: micro-batch gradient accumulation equals the full-batch gradient; it learns."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from creditgym.errors import ConfigError
from creditgym.trainers.logprobs import pack_trajectories, sequence_logprobs
from creditgym.trainers.loss import policy_loss
from creditgym.trainers.optim import OptimConfig, make_optimizer
from creditgym.trainers.policy_step import (
    PolicyUpdateConfig,
    accumulate_policy_gradients,
    policy_update,
    prepare_model,
)
from tests.trainers.helpers import PAD, make_trajs, tiny_model


def _off_policy(model, trajs, noise: float, seed: int = 0):
    """Set each trajectory's rollout log-probs to the model's own plus noise (ratios != 1)."""
    rng = np.random.default_rng(seed)
    b = pack_trajectories(trajs, PAD)
    with torch.no_grad():
        lp = sequence_logprobs(model, b.input_ids, b.attention_mask)
    for i, t in enumerate(trajs):
        act = lp[i][b.loss_mask[i].bool()].tolist()
        out, k = [], 0
        for a in t.action_ids:
            out.append([x + float(rng.normal(0, noise)) for x in act[k:k + len(a)]])
            k += len(a)
        t.action_logprobs = out
    return trajs


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_micro_batch_accumulation_equals_full_batch_gradient(agg):
    model, ref = tiny_model(0), tiny_model(1).eval()
    trajs = _off_policy(model, make_trajs(8, seed=5), noise=0.3)
    batch = pack_trajectories(trajs, PAD, require_advantages=True)
    assert len(batch.micro_batches(20)) >= 3
    results = []
    for budget in (None, 20):
        cfg = PolicyUpdateConfig(agg=agg, micro_batch_tokens=budget, kl_coef=0.05,
                                 clip_low=0.2, clip_high=0.28)
        model.zero_grad(set_to_none=True)
        stats = accumulate_policy_gradients(model, batch, cfg, ref_model=ref)
        results.append((stats, _grads(model)))
    (full_stats, full), (micro_stats, micro) = results
    assert full_stats["clip_frac"] > 0  # the noise made some tokens clip
    for key in ("loss", "pg_loss", "entropy", "clip_frac", "ratio_mean", "kl_ref"):
        assert micro_stats[key] == pytest.approx(full_stats[key], rel=1e-5, abs=1e-7), key
    for g_full, g_micro in zip(full, micro):
        assert torch.allclose(g_full, g_micro, rtol=1e-4, atol=1e-7)
    # and the full-batch loss is the policy_loss of the whole padded batch in one call
    with torch.no_grad():
        lp = sequence_logprobs(model, batch.input_ids, batch.attention_mask)
        ref_lp = sequence_logprobs(ref, batch.input_ids, batch.attention_mask)
        whole, _ = policy_loss(lp, batch.old_logprobs, batch.advantages, batch.loss_mask,
                               clip_high=0.28, ref_logprobs=ref_lp, kl_coef=0.05, agg=agg)
    assert full_stats["loss"] == pytest.approx(float(whole), rel=1e-5)


def test_gradient_checkpointing_gives_the_same_gradient():
    trajs = _off_policy(tiny_model(0), make_trajs(4, seed=6), noise=0.2)
    batch = pack_trajectories(trajs, PAD, require_advantages=True)
    grads = []
    for ckpt in (False, True):
        model = tiny_model(0)
        prepare_model(model, gradient_checkpointing=ckpt)
        assert model.training and model.is_gradient_checkpointing == ckpt
        accumulate_policy_gradients(model, batch, PolicyUpdateConfig(gradient_checkpointing=ckpt))
        grads.append(_grads(model))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-7)


def test_policy_update_raises_logprob_of_positive_advantage_tokens():
    model = tiny_model(0)
    trajs = _off_policy(model, make_trajs(6, seed=7), noise=0.0)
    for i, t in enumerate(trajs):  # even trajectories good, odd bad
        t.advantages = (t.loss_mask() * (1.0 if i % 2 == 0 else -1.0)).tolist()
    batch = pack_trajectories(trajs, PAD)
    good = torch.tensor([i % 2 == 0 for i in range(6)])

    def mean_lp():
        with torch.no_grad():
            lp = sequence_logprobs(model, batch.input_ids, batch.attention_mask)
        m = batch.loss_mask
        return (float((lp * m)[good].sum() / m[good].sum()),
                float((lp * m)[~good].sum() / m[~good].sum()))

    good0, bad0 = mean_lp()
    opt, sched = make_optimizer(model, OptimConfig(lr=1e-2, warmup_steps=2))
    cfg = PolicyUpdateConfig(micro_batch_tokens=32, ppo_epochs=2, mini_batches=2)
    m = policy_update(model, opt, sched, trajs, cfg, pad_id=PAD)
    assert m["optimizer_steps"] == 4 and sched.last_epoch == 4
    assert m["tokens"] == batch.num_tokens
    assert m["grad_norm"] > 0 and m["entropy"] > 0
    assert m["clip_frac"] > 0  # later steps are off-policy against the rollout log-probs
    good1, bad1 = mean_lp()
    assert good1 > good0 + 0.05 and bad1 < bad0 - 0.05


def test_first_on_policy_step_has_ratio_one_and_no_clipping():
    model = tiny_model(0)
    trajs = _off_policy(model, make_trajs(4, seed=8), noise=0.0)
    opt, sched = make_optimizer(model, OptimConfig(lr=1e-3))
    ref = copy.deepcopy(model)
    m = policy_update(model, opt, sched, trajs, PolicyUpdateConfig(kl_coef=0.1), ref_model=ref,
                      pad_id=PAD)
    assert m["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert m["clip_frac"] == 0.0 and m["kl_ref"] == pytest.approx(0.0, abs=1e-6)
    assert m["lr"] == pytest.approx(1e-3)


def test_update_config_errors():
    with pytest.raises(ConfigError, match="agg"):
        PolicyUpdateConfig(agg="mean")
    with pytest.raises(ConfigError, match="kl_estimator"):
        PolicyUpdateConfig(kl_estimator="k4")
    model = tiny_model(0)
    opt, sched = make_optimizer(model, OptimConfig())
    with pytest.raises(ConfigError, match="ref_model"):
        policy_update(model, opt, sched, make_trajs(2), PolicyUpdateConfig(kl_coef=0.1),
                      pad_id=PAD)
