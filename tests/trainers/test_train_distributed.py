"""`creditgym train --nproc 2` on a CPU (gloo, FSDP2): one run that moves from one process to
two ranks and back, each resuming the other's DCP checkpoint, with one run folder throughout, and
a killed rank that ends the two-rank job with a clear message. It trains with IGPO, whose probe
log-probs each rank computes for its own trajectories: rank 0's credit diagnostics need every
rank's. (LoRA under FSDP2: the parity and weight-stream cases of test_distributed.py; its
checkpoints: test_lora.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from creditgym.bench.credit_bench import inputs_from_records
from creditgym.cli import main
from creditgym.credit.registry import estimate, make_config
from creditgym.replay import read_trajectories
from creditgym.replay.rescore import group_trajectories
from tests.trainers.helpers import SMALL, rows, start_from

# one torchrun job of two interpreters that each import torch: the slowest test of the suite
pytestmark = pytest.mark.slow

BASE = ["train", "--config", "configs/default.yaml", *SMALL, "--set", "eval.before=false",
        "--set", "credit=igpo"]


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


def test_a_run_moves_between_world_sizes_and_survives_a_killed_rank(tmp_path, warm_model):
    """1 process -> 2 ranks (rank 1 killed by SIGKILL mid-run) -> 1 process."""
    run = tmp_path / "run"
    argv = [*BASE, *start_from(warm_model), "--set", f"run_dir={run}", "--set", "keep_checkpoints=9"]
    assert main([*argv, "--set", "rl.iterations=1"]) == 0
    first = [t.to_dict() for t in read_trajectories(run / "rollouts.jsonl")]
    assert len(first) == 6

    # two ranks resume the one-process checkpoint; rank 1 dies once they committed an iteration
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CREDITGYM_DIST_TIMEOUT_S": "60"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditgym.cli", *argv, "--set", "rl.iterations=4", "--resume",
         "--nproc", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if len(rows(run)) >= 2:
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
    done = rows(run)
    assert 2 <= len(done) < 4 and [r["iteration"] for r in done] == list(range(len(done)))
    assert done[1]["rollout/trajectories"] == 6  # rank 0's row covers both ranks' groups
    assert done[1]["credit/groups"] == 2
    assert not list(run.glob("*rank*"))  # no per-rank files in the run folder
    names = {p.name for p in (run / "checkpoints" / "step-000002").iterdir()}
    assert {".metadata", "rng-rank0.pt", "rng-rank1.pt", "scheduler.pt", "extra.json"} <= names
    assert len([n for n in names if n.endswith(".distcp")]) == 2  # one shard file per rank
    trajs = read_trajectories(run / "rollouts.jsonl")
    committed = [t.to_dict() for t in trajs if t.iteration < len(done)]
    assert committed[:6] == first  # the one-process records stay as they were
    # rank 0's credit diagnostics cover both ranks' trajectories with both ranks' probes: equal
    # to a fresh estimate over the committed records and the probe log-probs they carry
    two_rank = [t for t in trajs if t.iteration == 1]
    fresh = estimate(group_trajectories(two_rank), make_config("igpo"),
                     inputs_from_records(two_rank, ["probe_logprob"]))
    want = {f"credit/{k}": v for k, v in fresh.diagnostics.items()}
    assert {k: v for k, v in done[1].items() if k.startswith("credit/")}.keys() == want.keys()
    for key, value in want.items():
        assert done[1][key] == (pytest.approx(value, rel=1e-9, abs=1e-12)
                                if isinstance(value, float) else value), key
    assert fresh.diagnostics["mean_abs_adv_token"] > 0

    # one process resumes the two-rank checkpoint and finishes the run
    assert main([*argv, "--set", "rl.iterations=4", "--resume", "--nproc", "1"]) == 0
    assert [r["iteration"] for r in rows(run)] == [0, 1, 2, 3]
    after = read_trajectories(run / "rollouts.jsonl")
    assert [t.to_dict() for t in after[: len(committed)]] == committed
    assert len(after) == len({t.id for t in after}) == 4 * 6  # every trajectory, once
    assert [t.iteration for t in after] == [i for i in range(4) for _ in range(6)]
    assert all(t.advantages is not None for t in after if t.error is None and t.n_turns > 0)
    assert {p.name for p in (run / "checkpoints" / "step-000004").iterdir()} >= {"rng-rank0.pt"}
