"""The training loop hands ``policy_update`` exactly what the credit estimator computes.

A spy wraps the real ``policy_update`` (the real tiny model still takes the real step) and
records, at call time, the trajectories it is given and their advantages. A fresh
``estimate()`` over the same trajectories grouped by task must reproduce them: this fails when
the loop negates, rescales or drops the advantages, or groups trajectories any other way. The
same run checks what the update step sees (the sampling temperature: the first PPO step's
ratio is 1) and what the iteration writes (its metrics row and records). One member is cut to its
first turn, as a turn limit of one would have left it: one-turn episodes are trained on too.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

import creditgym.trainers.loop as loop
from creditgym.cli import main
from creditgym.credit.registry import estimate, make_config
from creditgym.trajectory import _PER_TURN, _PER_TURN_OPTIONAL
from tests.trainers.helpers import SMALL, rows, start_from

# IGPO: its turn rewards come from the model's probe log-probs, so advantages are non-zero and
# differ between trajectories even when a barely warm-started policy earns no reward at all
# (outcome-only estimators would give all zeros here, and then any sign or grouping passes).
# gamma away from its default, so a loop that ignored the configured options would differ.
CREDIT = {"name": "igpo", "gamma": 0.5, "norm": "separate"}


def _by_task(trajectories):
    groups: dict[str, list] = {}
    for t in trajectories:
        groups.setdefault(t.task["id"], []).append(t)
    return list(groups.values())


def _first_turn_only(t):
    """``t`` as if its episode had been cut after the first turn (turn limit 1)."""
    cut = {k: getattr(t, k)[:1] for k in (*_PER_TURN, *_PER_TURN_OPTIONAL)}
    metrics = {**t.metrics, **t.turn_metrics[0]} if t.turn_metrics else dict(t.metrics)
    return dataclasses.replace(t, **cut, metrics=metrics, terminated=False, truncated=True)


def test_policy_update_gets_the_estimators_advantages_grouped_by_task(tmp_path, monkeypatch,
                                                                     warm_model, capsys):
    calls, inputs = [], []
    real_update, real_inputs = loop.policy_update, loop.credit_inputs

    def spy(model, optimizer, scheduler, trajectories, *args, **kwargs):
        calls.append([(t, np.asarray(t.advantages, dtype=np.float64)) for t in trajectories])
        return real_update(model, optimizer, scheduler, trajectories, *args, **kwargs)

    def inputs_spy(*args):
        out = real_inputs(*args)
        inputs.append(out[0])
        return out

    real_collect = loop.Trainer.collect

    def collect_one_turn_member(self, it):
        tasks, trajs, seconds = real_collect(self, it)
        return tasks, [_first_turn_only(trajs[0]), *trajs[1:]], seconds

    monkeypatch.setattr(loop, "policy_update", spy)
    monkeypatch.setattr(loop.Trainer, "collect", collect_one_turn_member)
    monkeypatch.setattr(loop, "credit_inputs", inputs_spy)
    credit = [a for k, v in CREDIT.items() for a in ("--set", f"credit.{k}={v}")]
    run = tmp_path / "run"
    started = time.perf_counter()
    # a sampling temperature away from 1: the update must compute log-probs at it too
    assert main(["train", "--config", "configs/default.yaml", "--set", f"run_dir={run}",
                 "--set", "rl.iterations=1", *SMALL, "--set", "eval.before=false",
                 "--set", "eval.episodes=1", *start_from(warm_model), *credit,
                 "--set", "rl.temperature=0.7"]) == 0
    wall = time.perf_counter() - started
    (call,) = calls
    trajs = [t for t, _ in call]
    # 2 tasks x 3 members, none errored in this small world; the cut member is among them
    assert len(trajs) == 6 and all(t.error is None and t.n_turns > 0 for t in trajs)
    assert trajs[0].n_turns == 1 < max(t.n_turns for t in trajs)
    groups = _by_task(trajs)
    assert len(groups) == 2 and all(len(g) == 3 for g in groups)
    (model_inputs,) = inputs
    fresh = estimate(groups, make_config(CREDIT), model_inputs)
    want = {t.id: a for t, a in zip(fresh.trajectories, fresh.advantages)}
    for t, got in call:
        assert got.shape == t.tokens().shape
        np.testing.assert_allclose(got, want[t.id], rtol=1e-12, atol=1e-12)
    # the comparison means something: credit is non-zero, and pooling both tasks into one
    # group (or negating) gives different advantages
    assert any(np.abs(a).max() > 0 for _, a in call)
    pooled = estimate([trajs], make_config(CREDIT), model_inputs)
    assert not all(np.allclose(a, want[t.id]) for t, a in zip(pooled.trajectories,
                                                                 pooled.advantages))
    (row,) = rows(run)
    assert row["credit/groups"] == 2.0 and row["credit/estimator"] == "igpo"
    # one PPO step on fresh rollouts: the new log-probs are the sampled ones (same weights, same
    # temperature), so every ratio is 1; log-probs at another temperature would move it
    assert abs(row["update/ratio_mean"] - 1.0) < 1e-4 and row["update/approx_kl_old"] < 1e-6
    assert row["update/clip_frac"] == 0.0
    # the row's timing and staleness fields (on-policy: no lag, the wait is the rollout itself)
    assert row["rollout/policy_lag"] == 0.0
    assert "rollout/searches" in row  # the environment's own aggregate_metrics made the row
    times = [row[k] for k in ("time/rollout_s", "time/rollout_wait_s", "time/update_s")]
    assert all(0.0 <= t <= wall for t in times)
    assert row["time/rollout_s"] <= row["time/rollout_wait_s"]
    # the console line a user watches says the same as the row
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("iteration 0:")]
    loss_and_adv = (f"loss {row['update/loss']:.4f}, "
                    f"|A| {row['credit/mean_abs_adv_token']:.3f}, ")
    assert loss_and_adv in line and row["credit/mean_abs_adv_token"] > 0.0005
    assert 0.0 <= float(line.rsplit(", ", 1)[1].rstrip("s")) <= wall + 0.05
    # the records keep the inputs the credit used, per turn, for `creditgym credit-bench`
    from creditgym.replay import read_trajectories

    recorded = {t.id: t for t in read_trajectories(run / "rollouts.jsonl")}
    assert {t.iteration for t in recorded.values()} == {0}
    for t in trajs:
        got = [m["input/probe_logprob"] for m in recorded[t.id].turn_metrics]
        assert got == model_inputs["probe_logprob"][t.id] and len(got) == t.n_turns
