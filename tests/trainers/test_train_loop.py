"""`creditgym train` end to end on a CPU: a two-iteration run, and kill -9 then --resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

from creditgym.cli import main
from creditgym.credit.registry import estimate
from creditgym.replay import read_trajectories
from creditgym.replay.verify import verify_trajectories
from tests.trainers.helpers import SMALL, rows, start_from

pytestmark = pytest.mark.slow  # end-to-end runs or subprocesses: scheduled first


def test_two_iteration_run_writes_everything(small_run):
    run = small_run
    history = rows(run)
    assert [r["iteration"] for r in history] == [0, 1]
    for r in history:
        assert r["rollout/trajectories"] == 6 and "update/loss" in r and "credit/groups" in r
    evals = json.loads((run / "evals.json").read_text())
    assert {"before", "after", "warm_start"} <= set(evals)
    assert (run / "learning_curves.png").stat().st_size > 10_000
    # the held-out evaluations after RL still reach the index (closing one evaluation's
    # environments once closed the shared retriever, and every later search failed)
    for name in ("eval-before.jsonl", "eval-after.jsonl"):
        assert not any("is closed" in o for t in read_trajectories(run / name) for o in t.observations)
    assert (run / "checkpoints" / "latest").is_file()
    trajs = read_trajectories(run / "rollouts.jsonl")
    assert len(trajs) == 12
    for t in trajs:  # written after the update, with the advantages it trained on
        if t.error is None and t.n_turns > 0:
            assert len(t.advantages) == len(t.tokens())
            assert all(a == 0 for a, m in zip(t.advantages, t.loss_mask()) if m == 0)
        else:  # never trained on
            assert t.advantages is None
    assert [d for d in verify_trajectories(trajs[:3]) if d.kind == "diverged"] == []
    # the same run_dir again without --resume is refused, and the run there is left untouched
    before = (run / "rollouts.jsonl").read_bytes()
    assert main(["train", "--config", "configs/default.yaml", "--set", f"run_dir={run}",
                 "--set", "rl.iterations=2", *SMALL]) == 2
    assert (run / "rollouts.jsonl").read_bytes() == before


def test_unknown_config_key_lists_the_valid_ones(capsys):
    assert main(["train", "--config", "configs/default.yaml", "--set", "rl.iteratons=3"]) == 2
    err = capsys.readouterr().err
    assert "iteratons" in err and "iterations" in err


def test_kill_9_then_resume_continues_from_the_last_checkpoint(tmp_path, warm_model):
    run = tmp_path / "run"
    args = ["train", "--config", "configs/default.yaml", "--set", f"run_dir={run}",
            "--set", "rl.iterations=3", *SMALL, *start_from(warm_model),
            "--set", "eval.before=false"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "creditgym.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if (run / "metrics.jsonl").is_file() and len(rows(run)) >= 1:
                break
            time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail("training finished or died before it could be killed")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = len(rows(run))
    assert 1 <= done_before < 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn last line is allowed after kill -9
        before = read_trajectories(run / "rollouts.jsonl")
    assert main([*args, "--resume"]) == 0
    history = rows(run)
    assert [r["iteration"] for r in history] == [0, 1, 2]
    after = read_trajectories(run / "rollouts.jsonl")
    # records of committed iterations were kept as they were; those of an iteration the
    # checkpoint did not include were dropped and redone: every trajectory appears once
    committed = [t.to_dict() for t in before if t.iteration < done_before]
    assert [t.to_dict() for t in after[: len(committed)]] == committed
    assert len({t.id for t in after}) == len(after) == 3 * 6
    assert [t.iteration for t in after] == sorted(t.iteration for t in after)
    assert {t.group.split("/")[0] for t in after} == {"it0000", "it0001", "it0002"}


@pytest.mark.parametrize("credit", ["grpo", "igpo", "tempo", "oprl"])
def test_every_estimator_trains_through_the_loop(tmp_path, credit, request):
    run = tmp_path / credit
    # OPRL's run makes its own warm start: its PRM must start as the warm-started policy
    start = [] if credit == "oprl" else start_from(request.getfixturevalue("warm_model"))
    assert main(["train", "--config", "configs/default.yaml", "--set", f"run_dir={run}",
                 "--set", "rl.iterations=1", "--set", f"credit={credit}", *SMALL, *start]) == 0
    (row,) = rows(run)
    assert row["credit/estimator"] == credit and math.isfinite(row["update/loss"])
    trained = [t for t in read_trajectories(run / "rollouts.jsonl") if t.advantages is not None]
    assert row["credit/trajectories"] == len(trained) > 0
    assert row["update/tokens"] == sum(int(t.loss_mask().sum()) for t in trained)
    if credit in ("grpo", "tempo"):  # no model-derived inputs: recomputable from the file alone
        groups: dict[str, list] = {}
        for t in trained:
            groups.setdefault(t.task["id"], []).append(t)
        fresh = estimate(list(groups.values()), credit)
        for t, a in zip(fresh.trajectories, fresh.advantages):
            assert t.advantages == a.tolist()
    if credit == "oprl":  # the implicit PRM took its DPO step and was checkpointed
        assert "prm/dpo_loss" in row and (run / "checkpoints" / "prm" / "latest").is_file()
        # and it started as the warm-started policy (not the untrained base model)
        import torch
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
        from transformers import AutoModelForCausalLM

        dcp_to_torch_save(run / "checkpoints" / "prm" / "step-000000", tmp_path / "prm0.pt")
        prm0 = torch.load(tmp_path / "prm0.pt", weights_only=False)["model"]
        for name in ("sft-model", "base-model"):
            ref = AutoModelForCausalLM.from_pretrained(run / name).state_dict()
            same = all(torch.equal(prm0[k], v) for k, v in ref.items() if k in prm0)
            assert same == (name == "sft-model"), name


def test_demonstration_worlds_imperfect_expert_and_kl_reference(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", "configs/default.yaml", "--set", f"run_dir={run}",
                 "--set", "rl.iterations=1", *SMALL, "--set", "sft.demonstrator.worlds=2",
                 "--set", "sft.demonstrator.skip_search_prob=0.5", "--set", "policy.kl_coef=0.1"]) == 0
    demos = read_trajectories(run / "demonstrations.jsonl")
    lm = [t for t in demos if t.id.startswith("demo/lm")]
    act = [t for t in demos if t.id.startswith("demo/act")]
    assert len(lm) == 16 and len(act) == 16  # act: sft.steps x sft.batch_size episodes
    # demonstrations come from the two worlds after the training world, never from it
    assert {t.task["metadata"]["world_seed"] for t in demos} == {1, 2}
    gave_up = [t for t in act if t.actions[0] == "<answer> unknown </answer>"]
    assert 0 < len(gave_up) < len(act)
    # the language-modelling phase reads the perfect expert: it always searches first
    assert all(t.actions[0].startswith("<search>") for t in lm)
    (row,) = rows(run)
    assert row["update/kl_ref"] >= 0.0  # the KL term ran against the frozen warm start


def test_cuda_device_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["train", "--config", "configs/default.yaml", "--set", f"run_dir={tmp_path}",
                 *SMALL, "--set", "model.device=cuda"]) == 2
    assert "model.device='cuda'" in capsys.readouterr().err


def test_recorded_extra_inputs_let_the_bench_score_every_estimator(tmp_path, capsys, warm_model):
    """An OPRL run that also records IGPO's probes: both inputs on every trained turn."""
    run = tmp_path / "run"
    assert main(["train", "--config", "configs/default.yaml", "--set", f"run_dir={run}",
                 "--set", "rl.iterations=1", "--set", "credit=oprl", "--set",
                 'record_inputs=["probe_logprob"]', "--set", "eval.before=false", *SMALL,
                 *start_from(warm_model)]) == 0
    trained = [t for t in read_trajectories(run / "rollouts.jsonl") if t.advantages is not None]
    assert trained and all({"input/probe_logprob", "input/logratio_sum"} <= set(m)
                           for t in trained for m in t.turn_metrics)
    bad = tmp_path / "bad"
    assert main(["train", "--config", "configs/default.yaml", "--set", f"run_dir={bad}",
                 "--set", 'record_inputs=["no_such_input"]', *SMALL]) == 2
    assert "record_inputs: no provider of input 'no_such_input'" in capsys.readouterr().err
    assert not bad.exists()
