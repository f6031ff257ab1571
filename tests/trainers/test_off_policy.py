"""One-step off-policy rollouts (`rl.off_policy_steps: 1`): the prefetched rollouts were sampled
by the policy one update old, exactly; runs stay reproducible; evaluations see fresh weights."""

from __future__ import annotations

import pytest
import torch

from creditgym.cli import main
from creditgym.replay import read_trajectories
from creditgym.trainers.prefetch import RolloutPrefetch
from tests.trainers.test_train_consistency import records
from tests.trainers.helpers import SMALL, rows, start_from

pytestmark = pytest.mark.slow  # end-to-end runs or subprocesses: scheduled first

BASE = ["train", "--config", "configs/default.yaml", *SMALL, "--set", "eval.before=false",
        "--set", "rl.off_policy_steps=1",
        "--set", "keep_checkpoints=10", "--set", "rl.lr=0.003",
        # IGPO: its probe input is computed with the weights that sampled, and its information
        # gain gives every update a gradient even when no rollout succeeds (tiny runs rarely do)
        "--set", "credit=igpo"]


@pytest.fixture(scope="module")
def base(warm_model) -> list[str]:
    """``BASE`` from the session's warm start."""
    return [*BASE, *start_from(warm_model)]


def _max_gap(start, run, trajs, step: int) -> float:
    """Largest gap between the records' sampled log-probs and the log-probs of the checkpoint
    ``step``'s policy (``run`` started from the model folder ``start``) on the same tokens."""
    from transformers import AutoModelForCausalLM

    from creditgym.trainers.dist_checkpoint import load_model_weights
    from creditgym.trainers.logprobs import pack_trajectories, sequence_logprobs

    model = AutoModelForCausalLM.from_pretrained(str(start)).eval()
    load_model_weights(run / "checkpoints" / f"step-{step:06d}", model)
    batch = pack_trajectories(trajs, pad_id=0)
    with torch.no_grad():
        lp = sequence_logprobs(model, batch.input_ids, batch.attention_mask)
    return float(((lp - batch.old_logprobs).abs() * batch.loss_mask).max())


@pytest.fixture(scope="module")
def off_policy_run(tmp_path_factory, base):
    run = tmp_path_factory.mktemp("offpolicy") / "run"
    assert main([*base, "--set", f"run_dir={run}", "--set", "rl.iterations=3"]) == 0
    return run


def test_prefetched_rollouts_were_sampled_by_the_policy_one_update_old(off_policy_run, warm_model):
    run = off_policy_run
    assert [r["rollout/policy_lag"] for r in rows(run)] == [0.0, 1.0, 1.0]
    trajs = read_trajectories(run / "rollouts.jsonl")
    by_it = {it: [t for t in trajs if t.iteration == it and t.n_turns > 0] for it in range(3)}
    # iteration 0 is on-policy (W_0); iterations 1 and 2 were sampled during the update before
    # them, by W_0 and W_1: their log-probs are those policies', not the one they trained
    assert _max_gap(warm_model, run, by_it[0], 0) < 1e-3
    assert _max_gap(warm_model, run, by_it[1], 0) < 1e-3 < _max_gap(warm_model, run, by_it[1], 1)
    assert _max_gap(warm_model, run, by_it[2], 1) < 1e-3 < _max_gap(warm_model, run, by_it[2], 2)
    assert all(t.advantages is not None for t in trajs if t.error is None and t.n_turns > 0)


def test_off_policy_runs_are_reproducible(off_policy_run, base, tmp_path):
    again = tmp_path / "again"
    assert main([*base, "--set", f"run_dir={again}", "--set", "rl.iterations=3"]) == 0
    assert records(again) == records(off_policy_run)  # equal but for their wall-clock time


def test_no_prefetch_across_an_evaluation(base, tmp_path):
    run = tmp_path / "run"
    assert main([*base, "--set", f"run_dir={run}", "--set", "rl.iterations=4",
                 "--set", "eval.every=2", "--set", "eval.episodes=2"]) == 0
    # iteration 2 follows the evaluation after iteration 1: generated on-policy
    assert [r["rollout/policy_lag"] for r in rows(run)] == [0.0, 1.0, 0.0, 1.0]


def test_bad_off_policy_steps_fail_before_the_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*BASE, "--set", f"run_dir={run}", "--set", "rl.off_policy_steps=2"]) == 2
    assert "rl.off_policy_steps=2" in capsys.readouterr().err and not run.exists()


def test_prefetch_raises_the_background_error_and_collects_unprefetched_iterations():
    calls = []

    def collect(it: int) -> int:
        calls.append(it)
        if it == 3:
            raise RuntimeError("rollout 3 failed")
        return it * 10

    p = RolloutPrefetch(collect)
    try:
        assert p.take(0) == (0, False)
        p.start(1)
        with pytest.raises(RuntimeError, match="still being prefetched"):
            p.start(2)
        assert p.take(1) == (10, True)
        p.start(3)
        with pytest.raises(RuntimeError, match="rollout 3 failed"):
            p.take(3)
        p.start(4)
        assert p.take(5) == (50, False)  # a prefetch of another iteration is dropped
        assert calls == [0, 1, 3, 4, 5]
    finally:
        p.close()


@pytest.mark.parametrize("settings, message", [
    (["rollout.vllm_sleep=true"], "rollout.vllm_sleep is for rollout.backend: vllm"),
    (["rollout.vllm_sleep=true", "rollout.backend=vllm"],
     "rollout.vllm_sleep with rl.off_policy_steps=1"),
])
def test_vllm_sleep_conflicts_fail_before_the_run_folder(tmp_path, capsys, settings, message):
    run = tmp_path / "run"
    extra = [x for s in settings for x in ("--set", s)]
    assert main([*BASE, "--set", f"run_dir={run}", *extra]) == 2
    assert message in capsys.readouterr().err and not run.exists()
