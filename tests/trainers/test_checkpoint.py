"""Checkpoints: exact resume, RNG restore, atomic writes that a crash cannot corrupt, pruning."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from creditgym.trainers import checkpoint as ckpt_mod
from creditgym.trainers.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from creditgym.trainers.optim import OptimConfig, make_optimizer
from creditgym.trainers.policy_step import PolicyUpdateConfig, policy_update
from tests.trainers.helpers import PAD, make_trajs, tiny_model

POOL = make_trajs(12, seed=50)
CFG = PolicyUpdateConfig(micro_batch_tokens=48, clip_high=0.28)
OPT = OptimConfig(lr=1e-3, warmup_steps=2, total_steps=10, schedule="cosine", weight_decay=0.01)


def _train(model, opt, sched, steps: int, position: int) -> int:
    """A miniature loop that draws from every RNG the way a real one does."""
    for _ in range(steps):
        rows = torch.randperm(len(POOL))[:4].tolist()  # torch RNG picks the batch
        random.shuffle(rows)  # python RNG
        batch = [POOL[(r + position) % len(POOL)] for r in rows]
        for t in batch:  # numpy RNG perturbs the advantages
            t.advantages = (np.asarray(t.advantages) * (1 + 0.1 * np.random.rand())).tolist()
        policy_update(model, opt, sched, batch, CFG, pad_id=PAD)
        position += 1
    return position


def _seed_all(s):
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def _snapshot_pool():
    return [list(t.advantages) for t in POOL]


def _restore_pool(snap):
    for t, a in zip(POOL, snap):
        t.advantages = list(a)


def test_resume_is_exact(tmp_path):
    snap = _snapshot_pool()
    model = tiny_model(0)
    opt, sched = make_optimizer(model, OPT)
    _seed_all(123)
    pos = _train(model, opt, sched, 2, 0)
    save_checkpoint(tmp_path, 2, model=model, optimizer=opt, scheduler=sched,
                    extra={"data_position": pos, "metrics": {"loss": np.float32(0.5)}})
    pool_at_save = _snapshot_pool()
    _train(model, opt, sched, 2, pos)
    uninterrupted = [p.detach().clone() for p in model.parameters()]

    _restore_pool(pool_at_save)
    _seed_all(999)  # a fresh process: other seeds, other init
    resumed = tiny_model(7)
    opt2, sched2 = make_optimizer(resumed, OPT)
    extra = load_checkpoint(tmp_path, model=resumed, optimizer=opt2, scheduler=sched2)
    assert extra["step"] == 2 and extra["data_position"] == pos
    assert extra["metrics"]["loss"] == 0.5
    assert sched2.last_epoch == sched.last_epoch - 2
    _train(resumed, opt2, sched2, 2, extra["data_position"])
    for a, b in zip(uninterrupted, resumed.parameters()):
        assert torch.equal(a, b)
    _restore_pool(snap)


def test_rng_states_round_trip(tmp_path):
    model = tiny_model(0)
    _seed_all(5)
    torch.rand(3), np.random.rand(), random.random(), random.gauss(0, 1)
    save_checkpoint(tmp_path, 1, model=model)
    want = (torch.rand(3), np.random.rand(), np.random.randn(), random.random(), random.gauss(0, 1))
    _seed_all(6)
    load_checkpoint(tmp_path, model=model)
    got = (torch.rand(3), np.random.rand(), np.random.randn(), random.random(), random.gauss(0, 1))
    assert torch.equal(want[0], got[0]) and want[1:] == got[1:]


def test_files_load_with_weights_only(tmp_path):
    model = tiny_model(0)
    opt, sched = make_optimizer(model, OPT)
    path = save_checkpoint(tmp_path, 3, model=model, optimizer=opt, scheduler=sched)
    assert path.name == "step-000003"
    for name in ("model.pt", "optimizer.pt", "scheduler.pt", "rng.pt"):
        torch.load(path / name, weights_only=True)
    assert json.loads((path / "extra.json").read_text())["step"] == 3


def test_crash_mid_save_leaves_latest_intact(tmp_path, monkeypatch):
    model = tiny_model(0)
    opt, sched = make_optimizer(model, OPT)
    good = save_checkpoint(tmp_path, 1, model=model, optimizer=opt, scheduler=sched)
    real_save, calls = torch.save, []

    def failing_save(obj, f, *a, **k):  # the disk fills up while writing the third file
        calls.append(1)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", failing_save)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, model=model, optimizer=opt, scheduler=sched)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == good
    assert (tmp_path / "latest").read_text().strip() == "step-000001"
    assert not (tmp_path / "step-000002").exists()
    assert load_checkpoint(tmp_path, model=model)["step"] == 1

    # a SIGKILL leaves its temp directory behind, even a higher-numbered half-written one
    killed = tmp_path / ".tmp-step-000009-abc"
    killed.mkdir()
    (killed / "model.pt").write_bytes(b"torn")
    half = tmp_path / "step-000008"  # not produced by save_checkpoint: no extra.json
    half.mkdir()
    assert latest_checkpoint(tmp_path) == good
    (tmp_path / "latest").unlink()  # even without the pointer, only complete dirs count
    assert latest_checkpoint(tmp_path) == good
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(half, model=model)
    save_checkpoint(tmp_path, 3, model=model)
    assert not killed.exists()
    assert latest_checkpoint(tmp_path).name == "step-000003"


def test_keep_last_prunes_oldest_and_never_the_newest(tmp_path):
    model = tiny_model(0)
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model=model, keep_last=2)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step-"))
    assert names == ["step-000003", "step-000004"]
    assert latest_checkpoint(tmp_path).name == "step-000004"
    # saving an older step number (e.g. after a manual rollback) keeps the one just written
    save_checkpoint(tmp_path, 1, model=model, keep_last=1)
    assert latest_checkpoint(tmp_path).name == "step-000001"
    assert (tmp_path / "step-000001").is_dir()
    # re-saving an existing step replaces it
    save_checkpoint(tmp_path, 1, model=model, extra={"note": "again"}, keep_last=1)
    assert load_checkpoint(tmp_path, model=model)["note"] == "again"


def test_errors(tmp_path):
    model = tiny_model(0)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path, model=model)
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path, 1, model=model, extra={"bad": object()})
    assert latest_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, 1, model=model)
    opt, _ = make_optimizer(model, OPT)
    with pytest.raises(CheckpointError, match="no optimizer"):
        load_checkpoint(tmp_path, model=model, optimizer=opt)


def test_a_checkpoint_before_the_first_update_leaves_the_optimiser_fresh(tmp_path):
    """DCP's get_state_dict initialises an empty optimiser with a zero-lr step(), which counted
    as Adam's first step and changed the bias correction of the real one (seen as a 7.7e-5
    drift of an OPRL run against the single-file checkpoints)."""
    from creditgym.trainers.dist_checkpoint import load_sharded, save_sharded

    snap = _snapshot_pool()
    batch = POOL[:4]
    twins = []
    for save_first in (False, True):
        model = tiny_model(0)
        opt, sched = make_optimizer(model, OPT)
        if save_first:
            save_sharded(tmp_path / "ckpt", 0, model=model, optimizer=opt, scheduler=sched)
            assert not opt.state  # still fresh
        policy_update(model, opt, sched, batch, CFG, pad_id=PAD)
        twins.append((model, opt))
    (plain, plain_opt), (saved, saved_opt) = twins
    for a, b in zip(plain.parameters(), saved.parameters()):
        assert torch.equal(a, b)
    assert all(float(s["step"]) == 1.0 for s in saved_opt.state.values())
    # and resuming from it gives a fresh optimiser too
    resumed = tiny_model(7)
    opt3, sched3 = make_optimizer(resumed, OPT)
    extra = load_sharded(tmp_path / "ckpt", model=resumed, optimizer=opt3, scheduler=sched3)
    assert extra["step"] == 0 and extra["optimizer_state"] is False and not opt3.state
    policy_update(resumed, opt3, sched3, batch, CFG, pad_id=PAD)
    for a, b in zip(plain.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    _restore_pool(snap)
