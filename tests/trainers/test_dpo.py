"""Torch trajectory DPO loss equals the numpy one; turn log-ratio sums; the PRM step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from creditgym.credit import oprl
from creditgym.credit._arrays import CreditInputError
from creditgym.trainers.dpo import prm_update, trajectory_dpo_loss, turn_logratio_sums
from creditgym.trainers.logprobs import pack_trajectories, sequence_logprobs
from creditgym.trainers.optim import OptimConfig, make_optimizer
from tests.trainers.helpers import PAD, make_trajs, tiny_model


def _random_rows(rng):
    group, traj, succ_rows, succ_traj = [], [], [], []
    for g in range(int(rng.integers(1, 5))):
        for i in range(int(rng.integers(1, 6))):
            s = float(rng.integers(0, 2))
            succ_traj.append(s)
            for _ in range(int(rng.integers(1, 5))):
                group.append(f"g{g}")
                traj.append(f"t{i}")  # trajectory ids repeat across groups: keys are pairs
                succ_rows.append(s)
    q = rng.normal(0, 5, size=len(group))
    return group, traj, q, succ_rows, succ_traj


def test_worked_example_of_credit_md():
    q = torch.tensor([1.0, 0.5, -1.0], dtype=torch.float64)
    loss = trajectory_dpo_loss(["g", "g", "g"], ["A", "A", "B"], q, [1, 0], beta=0.05)
    assert float(loss) == pytest.approx(0.6504, abs=1e-4)


@pytest.mark.parametrize("seed", range(30))
def test_equals_numpy_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    group, traj, q, succ_rows, succ_traj = _random_rows(rng)
    beta = float(rng.uniform(0.01, 1.0))
    want = oprl.trajectory_dpo_loss(group, traj, q, succ_rows, beta=beta)
    q_t = torch.tensor(q, dtype=torch.float64, requires_grad=True)
    got = trajectory_dpo_loss(group, traj, q_t, succ_rows, beta=beta)
    assert float(got.detach()) == pytest.approx(want, rel=1e-12, abs=1e-12)
    got_per_traj = trajectory_dpo_loss(group, traj, q_t, succ_traj, beta=beta)
    assert float(got_per_traj.detach()) == pytest.approx(want, rel=1e-12, abs=1e-12)
    got32 = trajectory_dpo_loss(group, traj, q_t.float(), succ_rows, beta=beta)
    assert float(got32.detach()) == pytest.approx(want, rel=1e-5, abs=1e-6)
    got.backward()
    if want == 0.0:
        assert torch.equal(q_t.grad, torch.zeros_like(q_t))
    else:  # gradient agrees with central finite differences of the numpy loss
        eps = 1e-6
        fd = np.empty_like(q)
        for k in range(q.size):
            up, dn = q.copy(), q.copy()
            up[k] += eps
            dn[k] -= eps
            fd[k] = (oprl.trajectory_dpo_loss(group, traj, up, succ_rows, beta=beta)
                     - oprl.trajectory_dpo_loss(group, traj, dn, succ_rows, beta=beta)) / (2 * eps)
        assert np.allclose(q_t.grad.numpy(), fd, atol=1e-7)


def test_no_pair_gives_zero_loss_and_zero_gradient():
    q = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    # one group all successful, another a lone failure: no (success, failure) pair inside a group
    loss = trajectory_dpo_loss(["a", "a", "b"], ["x", "y", "z"], q, [1, 1, 0])
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert q.grad is not None and torch.equal(q.grad, torch.zeros(3))


def test_input_errors():
    with pytest.raises(CreditInputError, match="same length"):
        trajectory_dpo_loss(["a", "a"], ["x", "y"], torch.zeros(3), [1, 0])
    with pytest.raises(CreditInputError, match="NaN"):
        trajectory_dpo_loss(["a", "a"], ["x", "y"], torch.tensor([0.0, float("nan")]), [1, 0])
    with pytest.raises(CreditInputError, match="contiguous"):
        trajectory_dpo_loss(["a"] * 3, ["x", "y", "x"], torch.zeros(3), [1, 0, 1])


def test_turn_logratio_sums_match_a_loop():
    trajs = make_trajs(5, seed=20)
    b = pack_trajectories(trajs, PAD)
    prm = torch.randn(b.input_ids.shape, dtype=torch.float64)
    got = turn_logratio_sums(prm, b.old_logprobs.double(), b.turn_of_token, b.loss_mask,
                             n_turns=b.n_turns)
    want = []
    for i, t in enumerate(trajs):
        pos = len(t.prompt_ids)
        for a, o, lp in zip(t.action_ids, t.observation_ids, t.action_logprobs):
            want.append(float(prm[i, pos:pos + len(a)].sum()) - sum(lp))
            pos += len(a) + len(o)
    assert got.tolist() == pytest.approx(want, abs=1e-5)
    one = turn_logratio_sums(prm[0], b.old_logprobs[0].double(), b.turn_of_token[0], b.loss_mask[0])
    assert one.tolist() == pytest.approx(want[:trajs[0].n_turns], abs=1e-5)


def _groups_of_trajs(seed):
    trajs = []
    for g in range(3):
        for t in make_trajs(4, seed=seed + g, group=f"g{g}"):
            t.id = f"{t.group}-{t.id}"
            trajs.append(t)
    rng = np.random.default_rng(seed)
    for t in trajs:
        t.metrics["success"] = float(rng.integers(0, 2))
    trajs[0].metrics["success"], trajs[1].metrics["success"] = 1.0, 0.0  # at least one pair
    return trajs


def test_prm_update_two_pass_gradient_equals_single_pass():
    trajs = _groups_of_trajs(30)
    params = []
    for budget in (None, 20):
        prm = tiny_model(4)
        opt = torch.optim.SGD(prm.parameters(), lr=0.5)  # params move by -lr * grad exactly
        out = prm_update(prm, opt, None, trajs, pad_id=PAD, beta=0.5, micro_batch_tokens=budget,
                         max_grad_norm=None)
        params.append([p.detach().clone() for p in prm.parameters()])
        assert out.metrics["pairs"] > 0
    assert len(pack_trajectories(trajs, PAD).micro_batches(20)) > 2
    init = [p.detach() for p in tiny_model(4).parameters()]
    for a, b, p0 in zip(*params, init):
        assert torch.allclose(a - p0, b - p0, rtol=1e-4, atol=1e-8)
    assert any(not torch.equal(a, p0) for a, p0 in zip(params[0], init))


def test_prm_update_returns_rows_and_lowers_the_dpo_loss():
    trajs = _groups_of_trajs(40)
    prm = tiny_model(5)
    b = pack_trajectories(trajs, PAD)
    with torch.no_grad():
        lp = sequence_logprobs(prm, b.input_ids, b.attention_mask)
    q0 = turn_logratio_sums(lp, b.old_logprobs, b.turn_of_token, b.loss_mask, n_turns=b.n_turns)
    opt, sched = make_optimizer(prm, OptimConfig(lr=1e-2))
    first = prm_update(prm, opt, sched, trajs, pad_id=PAD, beta=0.5, micro_batch_tokens=40)
    assert first.group == [t.group for t in trajs for _ in range(t.n_turns)]
    assert first.traj == [t.id for t in trajs for _ in range(t.n_turns)]
    assert np.allclose(first.logratio_sum, q0.numpy(), atol=1e-4)
    want = oprl.trajectory_dpo_loss(first.group, first.traj, first.logratio_sum,
                                    [t.metrics["success"] for t in trajs], beta=0.5)
    assert first.loss == pytest.approx(want, rel=1e-5)
    oprl.step_rewards(first.logratio_sum, beta=0.5)  # the rows feed the numpy OPRL directly
    for _ in range(6):
        last = prm_update(prm, opt, sched, trajs, pad_id=PAD, beta=0.5, micro_batch_tokens=40)
    assert last.loss < first.loss - 0.05
