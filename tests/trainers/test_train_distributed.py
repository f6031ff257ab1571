"""`creditgym train --nproc 2` on a CPU (gloo, FSDP2): one run folder, DCP checkpoints that
resume at another world size (1 -> 2 -> 1), and a killed rank that ends the job with a clear
message, after which the run (LoRA adapters under FSDP2) resumes in one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed.checkpoint as dcp

from creditgym.cli import main
from creditgym.replay import read_trajectories
from tests.trainers.test_train_loop import SMALL, rows

# the loop's tiny run, shortened: a process start costs more than a step here
pytestmark = pytest.mark.slow  # three interpreters each import torch: ~50 s per test on 2 cores

BASE = ["train", "--config", "configs/default.yaml", *SMALL, "--set", "sft.steps=1",
        "--set", "sft.lm_steps=1", "--set", "eval.before=false"]


def test_runs_resume_across_world_sizes(tmp_path, monkeypatch):
    """1 process -> 2 ranks -> 1 process, each resuming the other's checkpoint."""
    monkeypatch.setenv("CREDITGYM_DIST_TIMEOUT_S", "120")
    run = tmp_path / "run"
    assert main([*BASE, "--set", f"run_dir={run}", "--set", "rl.iterations=1"]) == 0
    first = [t.to_dict() for t in read_trajectories(run / "rollouts.jsonl")]
    assert main([*BASE, "--set", f"run_dir={run}", "--set", "rl.iterations=2",
                 "--resume", "--nproc", "2"]) == 0
    assert [r["iteration"] for r in rows(run)] == [0, 1]
    assert rows(run)[1]["rollout/trajectories"] == 6  # rank 0's row covers both ranks' groups
    assert rows(run)[1]["credit/groups"] == 2
    trajs = read_trajectories(run / "rollouts.jsonl")
    assert len(trajs) == len({t.id for t in trajs}) == 12  # every trajectory, once
    assert [t.to_dict() for t in trajs[:6]] == first  # committed records stay as they were
    assert [t.iteration for t in trajs] == [0] * 6 + [1] * 6
    assert all(t.advantages is not None for t in trajs if t.error is None and t.n_turns > 0)
    assert not list(run.glob("*rank*"))  # no per-rank files in the run folder
    ckpt = run / "checkpoints" / "step-000002"
    names = {p.name for p in ckpt.iterdir()}
    assert {".metadata", "rng-rank0.pt", "rng-rank1.pt", "scheduler.pt", "extra.json"} <= names
    assert len([n for n in names if n.endswith(".distcp")]) == 2  # one shard file per rank
    # the 2-rank checkpoint resumes in one process
    before = [t.to_dict() for t in trajs]
    assert main([*BASE, "--set", f"run_dir={run}", "--set", "rl.iterations=3",
                 "--resume", "--nproc", "1"]) == 0
    assert [r["iteration"] for r in rows(run)] == [0, 1, 2]
    after = read_trajectories(run / "rollouts.jsonl")
    assert [t.to_dict() for t in after[:12]] == before and len(after) == 18
    assert {p.name for p in (run / "checkpoints" / "step-000003").iterdir()} >= {"rng-rank0.pt"}


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the child of ``launcher`` that torchrun started as ``rank``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == launcher and f"\0RANK={rank}\0".encode() in \
                    b"\0" + (stat.parent / "environ").read_bytes():
                return int(stat.parent.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def test_a_killed_lora_rank_ends_the_job_with_a_clear_message_then_resumes_on_one(tmp_path):
    """LoRA under FSDP2 too: the adapters train and are checkpointed alone, at any world size."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CREDITGYM_DIST_TIMEOUT_S": "15"}
    argv = [*BASE, "--set", f"run_dir={run}", "--set", "rl.iterations=4",
            "--set", "model.lora.r=4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditgym.cli", *argv, "--nproc", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if (run / "metrics.jsonl").is_file() and len(rows(run)) >= 1:
                break
            time.sleep(0.2)
        victim = _rank_pid(proc.pid, 1)
        if proc.poll() is not None or victim is None:
            pytest.fail(f"the run ended or rank 1 was not found before the kill: {proc.stderr}")
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=90)  # no hang: torchrun stops rank 0 at once
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2
    assert "creditgym train: error: rank 1 of 2 was killed by SIGKILL; the job was stopped" in err
    assert "continue with --resume" in err
    done = len(rows(run))
    assert 1 <= done < 4
    assert main([*argv, "--resume", "--nproc", "1"]) == 0
    assert [r["iteration"] for r in rows(run)] == [0, 1, 2, 3]
    assert len({t.id for t in read_trajectories(run / "rollouts.jsonl")}) == 4 * 6
    saved = dcp.FileSystemReader(str(run / "checkpoints" / "step-000004")).read_metadata()
    model_keys = [k for k in saved.state_dict_metadata if k.startswith("model.")]
    # adapters only (and the tiny model's head: an alias of its frozen, tied embedding)
    assert model_keys and all("lora_" in k or k.endswith("lm_head.weight") for k in model_keys)
    assert not (run / "sft-model" / "adapter_config.json").exists()  # a plain, merged folder
