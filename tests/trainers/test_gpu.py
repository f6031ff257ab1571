"""The trainer on a CUDA GPU: bf16 autocast updates, and `creditgym train` with the model on the
GPU and with vLLM rollouts. Skipped cleanly where torch sees no GPU (or vLLM is missing)."""

from __future__ import annotations

import json

import pytest
import torch

from creditgym.cli import main
from creditgym.trainers.policy_step import PolicyUpdateConfig, policy_update
from creditgym.trainers.optim import OptimConfig, make_optimizer
from tests.trainers.helpers import PAD, make_trajs, tiny_model
from tests.trainers.helpers import SMALL

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                   reason="needs a CUDA GPU")]


def test_bf16_update_on_the_gpu_matches_fp32_loss_closely():
    trajs = make_trajs(8, seed=3)
    losses = {}
    for bf16 in (False, True):
        model = tiny_model(seed=0).cuda()
        opt, sched = make_optimizer(model, OptimConfig(lr=1e-3, total_steps=10))
        out = policy_update(model, opt, sched, trajs, PolicyUpdateConfig(bf16=bf16), pad_id=PAD)
        losses[bf16] = out["loss"]
        assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    assert losses[True] == pytest.approx(losses[False], abs=5e-2)


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_train_runs_on_the_gpu(tmp_path, backend):
    if backend == "vllm":
        pytest.importorskip("vllm")
    run = tmp_path / backend
    assert main(["train", "--config", "configs/default.yaml", "--set", f"run_dir={run}",
                 "--set", "rl.iterations=2", *SMALL, "--set", "model.device=cuda",
                 "--set", f"rollout.backend={backend}",
                 "--set", "rollout.gpu_memory_utilization=0.2",
                 "--set", "rollout.enforce_eager=true"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1] and all("update/loss" in r for r in rows)
