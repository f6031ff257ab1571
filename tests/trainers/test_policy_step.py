"""Policy update: micro-batch gradient accumulation equals the full-batch gradient; it learns."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from creditgym.errors import ConfigError
from creditgym.trainers.logprobs import (
    TrainerInputError,
    pack_trajectories,
    sequence_logprobs,
)
from creditgym.trainers.loss import policy_loss
from creditgym.trainers.optim import OptimConfig, make_optimizer
from creditgym.trainers.policy_step import (
    PolicyUpdateConfig,
    accumulate_policy_gradients,
    policy_update,
    prepare_model,
)
from creditgym.trajectory import Trajectory
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


@pytest.mark.parametrize("frozen_embeddings", [False, True])
def test_gradient_checkpointing_gives_the_same_gradient(frozen_embeddings):
    # frozen embeddings: with non-reentrant checkpointing the layers' inputs need not require
    # grad (reentrant checkpointing would leave every checkpointed layer without a gradient)
    trajs = _off_policy(tiny_model(0), make_trajs(4, seed=6), noise=0.2)
    batch = pack_trajectories(trajs, PAD, require_advantages=True)
    grads = []
    for ckpt in (False, True):
        model = tiny_model(0)
        model.model.embed_tokens.weight.requires_grad_(not frozen_embeddings)
        prepare_model(model, gradient_checkpointing=ckpt)
        assert model.training and model.is_gradient_checkpointing == ckpt
        accumulate_policy_gradients(model, batch, PolicyUpdateConfig(gradient_checkpointing=ckpt))
        layer = model.model.layers[0].mlp.up_proj.weight
        assert layer.grad is not None and float(layer.grad.abs().sum()) > 0
        grads.append([p.grad for p in model.model.layers.parameters()] if frozen_embeddings
                     else _grads(model))
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


# --- mutation-testing round 3 (docs/mutation-report.md, "Third run") ---


def _on_policy(model, trajs, temperature: float = 1.0):
    """Rollout log-probs = the model's own at ``temperature`` (every ratio is 1)."""
    b = pack_trajectories(trajs, PAD)
    with torch.no_grad():
        lp = sequence_logprobs(model, b.input_ids, b.attention_mask, temperature=temperature)
    for i, t in enumerate(trajs):
        act = lp[i][b.loss_mask[i].bool()].tolist()
        out, k = [], 0
        for a in t.action_ids:
            out.append(act[k:k + len(a)])
            k += len(a)
        t.action_logprobs = out
    return trajs


@pytest.mark.parametrize("kwargs,ok", [
    ({"clip_low": 0.0, "clip_high": 0.0}, True), ({"clip_low": 1.0}, False),
    ({"clip_low": 1.5}, False), ({"clip_high": -0.1}, False), ({"clip_low": -0.1}, False),
    ({"dual_clip": 1.0}, False), ({"dual_clip": 1.5}, True), ({"temperature": 0.0}, False),
    ({"micro_batch_tokens": 0}, False), ({"micro_batch_tokens": 1}, True),
    ({"ppo_epochs": 0}, False), ({"mini_batches": 0}, False),
])
def test_update_config_bounds(kwargs, ok):
    if ok:
        PolicyUpdateConfig(**kwargs)
        return
    # the message names the offending field with its value
    field, value = next(iter(kwargs.items()))
    with pytest.raises(ConfigError, match=rf"{field}.*{value}|{field}={value}"):
        PolicyUpdateConfig(**kwargs)


def test_update_config_messages_list_the_choices():
    with pytest.raises(ConfigError, match=r"is not one of k1, k2, k3$"):
        PolicyUpdateConfig(kl_estimator="k4")
    with pytest.raises(ConfigError,
                       match=r"is not one of token-mean, seq-mean-token-sum, seq-mean-token-mean$"):
        PolicyUpdateConfig(agg="mean")
    model = tiny_model(0)
    with pytest.raises(ConfigError, match=r"^kl_coef is non-zero but no ref_model was given; pass "
                                          r"the frozen reference model or set kl_coef: 0$"):
        accumulate_policy_gradients(model, pack_trajectories(make_trajs(1), PAD),
                                    PolicyUpdateConfig(kl_coef=0.1))


class _Checkpointed(torch.nn.Linear):
    """A module that already recomputes its activations (and has no way to switch it on)."""

    is_gradient_checkpointing = True


def test_prepare_model_with_modules_that_cannot_enable_checkpointing():
    done = _Checkpointed(2, 2).eval()
    prepare_model(done, gradient_checkpointing=True)  # already on: nothing to enable
    assert done.training
    plain = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"^gradient_checkpointing is on but Linear has no "
                                          r"gradient_checkpointing_enable\(\)"):
        prepare_model(plain, gradient_checkpointing=True)
    prepare_model(plain, gradient_checkpointing=False)
    assert plain.training


def test_on_policy_statistics_by_hand_at_temperature_07():
    # rollout log-probs from the model itself at T = 0.7 and ref = a copy: every ratio is 1, so
    # pg_loss = loss = -(token-mean of A), kl_ref = approx_kl_old = clip fractions = 0, and
    # entropy is the token mean of the T = 0.7 entropies
    model = tiny_model(0)
    trajs = _on_policy(model, make_trajs(5, seed=11), temperature=0.7)
    batch = pack_trajectories(trajs, PAD, require_advantages=True)
    n = batch.num_tokens
    with torch.no_grad():
        _, ent = sequence_logprobs(model, batch.input_ids, batch.attention_mask, temperature=0.7,
                                   return_entropy=True)
    want_pg = -float((batch.advantages * batch.loss_mask).sum()) / n
    want_ent = float((ent * batch.loss_mask).sum()) / n
    ref = copy.deepcopy(model)
    shapes = []  # input shape of each forward pass of the policy model
    hook = model.register_forward_pre_hook(
        lambda mod, args, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    cfg = PolicyUpdateConfig(temperature=0.7, micro_batch_tokens=24, kl_coef=0.1)
    stats = accumulate_policy_gradients(model, batch, cfg, ref_model=ref)
    hook.remove()
    # one forward per micro-batch, each within the token budget
    want_shapes = [tuple(m.input_ids.shape) for m in batch.micro_batches(24)]
    assert len(want_shapes) >= 2 and shapes == want_shapes
    assert stats["pg_loss"] == pytest.approx(want_pg, abs=1e-5)
    assert stats["loss"] == pytest.approx(want_pg, abs=1e-5)
    assert stats["entropy"] == pytest.approx(want_ent, rel=1e-5)
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert stats["approx_kl_old"] == pytest.approx(0.0, abs=1e-6)
    assert stats["kl_ref"] == pytest.approx(0.0, abs=1e-6)
    assert stats["clip_frac"] == 0.0 and stats["dual_clip_frac"] == 0.0
    assert stats["tokens"] == float(n)
    assert set(stats) == {"loss", "pg_loss", "entropy", "clip_frac", "dual_clip_frac",
                          "ratio_mean", "approx_kl_old", "kl_ref", "tokens"}


def test_one_trained_token_gets_full_weight():
    # a batch with a single generated token: the token-weighted means are that token's values
    model = tiny_model(0)
    t = Trajectory(id="one", group="g", task={}, prompt_ids=[5, 9, 11], action_ids=[[13]],
                   action_logprobs=[[0.0]], observation_ids=[[]], rewards=[0.0],
                   anchors=[None], valid=[True], advantages=[0.0, 0.0, 0.0, 2.0])
    _on_policy(model, [t])
    batch = pack_trajectories([t], PAD, require_advantages=True)
    with torch.no_grad():
        _, ent = sequence_logprobs(model, batch.input_ids, batch.attention_mask,
                                   return_entropy=True)
    stats = accumulate_policy_gradients(model, batch, PolicyUpdateConfig())
    assert stats["tokens"] == 1.0
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert stats["entropy"] == pytest.approx(float(ent[0, 3]), rel=1e-5)
    assert stats["pg_loss"] == pytest.approx(-2.0, abs=1e-5)


def test_every_loss_option_reaches_the_loss():
    # non-default clip_low / clip_high / dual_clip / kl_estimator / kl_coef / agg: the
    # accumulated loss is policy_loss of the whole batch with those same options
    model, ref = tiny_model(0), tiny_model(1).eval()
    trajs = _off_policy(model, make_trajs(8, seed=12), noise=1.0)
    batch = pack_trajectories(trajs, PAD, require_advantages=True)
    opts = {"clip_low": 0.1, "clip_high": 0.3, "dual_clip": 1.5, "kl_estimator": "k1",
            "kl_coef": 0.1, "agg": "seq-mean-token-mean"}
    stats = accumulate_policy_gradients(model, batch, PolicyUpdateConfig(**opts), ref_model=ref)
    assert stats["dual_clip_frac"] > 0 and stats["clip_frac"] > 0
    with torch.no_grad():
        lp = sequence_logprobs(model, batch.input_ids, batch.attention_mask)
        ref_lp = sequence_logprobs(ref, batch.input_ids, batch.attention_mask)
        want, want_stats = policy_loss(lp, batch.old_logprobs, batch.advantages, batch.loss_mask,
                                       ref_logprobs=ref_lp, **opts)
    assert stats["loss"] == pytest.approx(float(want), rel=1e-5)
    for key in ("pg_loss", "clip_frac", "dual_clip_frac", "kl_ref"):
        assert stats[key] == pytest.approx(want_stats[key], rel=1e-5, abs=1e-7), key


def test_policy_update_checks_its_batch():
    model = tiny_model(0)
    opt, sched = make_optimizer(model, OptimConfig())
    with pytest.raises(TrainerInputError, match="no advantages"):
        policy_update(model, opt, sched, make_trajs(2, with_advantages=False),
                      PolicyUpdateConfig(), pad_id=PAD)
    with pytest.raises(TrainerInputError,
                       match=r"^mini_batches=3 exceeds the 2 trajectories of the batch"):
        policy_update(model, opt, sched, make_trajs(2), PolicyUpdateConfig(mini_batches=3),
                      pad_id=PAD)
    # one trajectory per mini-batch is allowed; gradient checkpointing is switched on
    m = policy_update(model, opt, sched, make_trajs(2), PolicyUpdateConfig(
        mini_batches=2, gradient_checkpointing=True), pad_id=PAD)
    assert m["optimizer_steps"] == 2.0 and model.is_gradient_checkpointing


def test_policy_update_clips_the_gradient_to_max_grad_norm():
    # plain SGD with lr 1: the parameter change is minus the (clipped) gradient, so its norm is
    # max_grad_norm whenever the gradient is longer
    model = tiny_model(0)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    m = policy_update(model, opt, None, make_trajs(4, seed=13),
                      PolicyUpdateConfig(max_grad_norm=0.01), pad_id=PAD)
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(),
                                                                      before)))
    assert m["grad_norm"] > 0.1
    assert float(step) == pytest.approx(0.01, rel=1e-3)


def test_policy_update_drops_stale_gradients_before_it_steps():
    # a parameter the loss never reaches, holding a stale gradient from earlier work: the update
    # drops that gradient (None), so SGD with weight decay leaves the parameter alone
    model = tiny_model(0)
    model.register_parameter("unused", torch.nn.Parameter(torch.ones(3)))
    model.unused.grad = torch.full((3,), 5.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5)
    policy_update(model, opt, None, make_trajs(2, seed=14), PolicyUpdateConfig(), pad_id=PAD)
    assert torch.equal(model.unused.detach(), torch.ones(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_micro_batches_are_moved_to_the_model_device():
    # the packed batch lives on the CPU; the update moves each micro-batch to the model
    model = tiny_model(0).cuda()
    batch = pack_trajectories(make_trajs(3, seed=15), PAD, require_advantages=True)
    stats = accumulate_policy_gradients(model, batch, PolicyUpdateConfig(micro_batch_tokens=16))
    assert stats["tokens"] == float(batch.num_tokens) and np.isfinite(stats["loss"])
    assert all(p.grad is not None and p.grad.is_cuda for p in model.parameters())
