"""Update cases run once on one process and once on 2 FSDP2 ranks (gloo) for test_distributed.

Every rank trains on its share of the groups (``split_groups``), and rank 0 saves each case's
full parameters and metrics to ``OUT.pt``; the test computes the same cases in its own process
(no process group) and compares. The test starts the ranks with :func:`launch` (forked from the
test process, which has torch and transformers imported already: a fresh interpreter spends
5-15 s importing them on a busy machine); the same cases run under torchrun with
``python -m torch.distributed.run --nproc-per-node 2 -m tests.trainers.dist_cases OUT.pt``.
"""

from __future__ import annotations

import os
import socket
import sys

import numpy as np
import torch

from creditgym.trainers.distributed import (
    all_reduce_sum,
    init_distributed,
    is_main,
    rank,
    shard_model,
    split_groups,
    world,
)
from creditgym.trainers.dpo import prm_update
from creditgym.trainers.lora import LoraSettings, apply_lora, iter_plain_weights
from creditgym.trainers.optim import OptimConfig, make_optimizer
from creditgym.trainers.policy_step import PolicyUpdateConfig, policy_update
from creditgym.trainers.sft import sft_step
from tests.trainers.helpers import PAD, make_traj, tiny_model

# SGD with no clipping: the parameter change is the gradient itself, so a gradient that was
# averaged instead of summed, or normalised by local counts, shows (Adam's first step would
# hide any scale error). Clipping is checked with SGD too, for the same reason.
CASES: dict[str, dict] = {
    "token-mean": {"agg": "token-mean", "max_grad_norm": None},
    "seq-mean-token-sum": {"agg": "seq-mean-token-sum", "max_grad_norm": None},
    "seq-mean-token-mean": {"agg": "seq-mean-token-mean", "max_grad_norm": None},
    # small micro-batches (the ranks run different numbers of them), a sharded reference
    # model, two epochs, and a clip that is active: the global norm decides the step
    "clip-kl-micro": {"agg": "seq-mean-token-mean", "max_grad_norm": 0.05, "kl_coef": 0.1,
                      "micro_batch_tokens": 24},
    "adamw": {"agg": "token-mean", "optim": "adamw", "ppo_epochs": 2},
    "sft": {"sft": True, "max_grad_norm": None, "micro_batch_tokens": 24},
    "sft-clip": {"sft": True, "max_grad_norm": 0.05},
    # the implicit PRM's DPO step: pairs stay inside groups, the loss divides by global pairs;
    # one process takes the one-pass path with a whole batch, the ranks always take two passes
    "prm": {"prm": True, "max_grad_norm": None, "micro_batch_tokens": 24},
    "prm-whole": {"prm": True, "max_grad_norm": None, "micro_batch_tokens": None},
    # LoRA adapters on every linear layer: frozen base weights sit in the same FSDP2 groups as
    # the adapters; the base must not move on any rank, the adapters as on one process
    "lora": {"lora": True, "agg": "token-mean", "max_grad_norm": 0.02, "micro_batch_tokens": 24},
    # FSDP2's CPUOffloadPolicy (on a CPU a copy per use, but the same code path as on a GPU)
    "cpu-offload": {"cpu_offload": True, "agg": "token-mean", "max_grad_norm": None},
}


def groups() -> list[list]:
    """Five groups of unequal sizes, so the ranks get unequal shares."""
    rng = np.random.default_rng(7)
    out, k = [], 0
    for g, size in enumerate((3, 2, 4, 1, 3)):
        grp = []
        for _ in range(size):
            grp.append(make_traj(rng, k, group=f"g{g}"))
            k += 1
        out.append(grp)
    return out


def lora_model() -> torch.nn.Module:
    """The tiny model with rank-4 adapters whose B is non-zero, so A gets a gradient too."""
    model = apply_lora(tiny_model(0), LoraSettings(r=4, alpha=8.0), seed=0)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def run_case(name: str, distributed: bool) -> dict:
    """One case on this process's share; returns full parameters and metrics (all ranks)."""
    opts = dict(CASES[name])
    is_sft, optim = opts.pop("sft", False), opts.pop("optim", "sgd")
    is_prm, lora = opts.pop("prm", False), opts.pop("lora", False)
    offload = opts.pop("cpu_offload", False)
    share = split_groups(groups()) if distributed else groups()
    trajs = [t for g in share for t in g]
    model = lora_model() if lora else tiny_model(0)
    ref = tiny_model(1).eval() if opts.get("kl_coef") else None
    if distributed:
        shard_model(model, mixed_precision=False, cpu_offload=offload)
        if ref is not None:
            shard_model(ref, mixed_precision=False)
    if optim == "adamw":
        opt, sched = make_optimizer(model, OptimConfig(lr=1e-3, weight_decay=0.1,
                                                       warmup_steps=2))
    else:
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt, sched = torch.optim.SGD(trainable, lr=0.5), None
    if is_sft:
        metrics = sft_step(model, opt, sched, trajs, pad_id=PAD, **opts)
    elif is_prm:
        metrics = prm_update(model, opt, sched, trajs, pad_id=PAD, beta=1.0, **opts).metrics
    else:
        metrics = policy_update(model, opt, sched, trajs, PolicyUpdateConfig(**opts),
                                ref_model=ref, pad_id=PAD)
    params = {}
    for n, p in model.named_parameters():
        # full_tensor() is a collective: every rank gathers, in the same order
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        params[n] = full.detach().cpu().clone()
    return {"params": params, "metrics": metrics, "shares": [len(g) for g in share]}


def bad_share_errors() -> str:
    """Rank 1 gets no trajectory: it raises its input error, rank 0 a DistributedError naming it
    (at once, not at the collective timeout). Returns this rank's error message."""
    model = shard_model(tiny_model(0), mixed_precision=False)
    trajs = [t for g in groups() for t in g] if rank() == 0 else []
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    try:
        policy_update(model, opt, None, trajs, PolicyUpdateConfig(), pad_id=PAD)
    except Exception as e:  # noqa: BLE001 - the test checks the type and text
        return f"{type(e).__name__}: {e}"
    return "no error"


def main(out: str) -> None:
    init_distributed(timeout_s=60)
    assert world() > 1, "run under torch.distributed.run with --nproc-per-node >= 2"
    results = {name: run_case(name, distributed=True) for name in CASES}
    results["errors"] = bad_share_errors()
    # a sharded model streamed weight by weight (what a rollout engine on each rank receives)
    results["plain_weights"] = dict(iter_plain_weights(
        shard_model(lora_model(), mixed_precision=False)))
    results["plain_weights_full"] = dict(iter_plain_weights(
        shard_model(tiny_model(0), mixed_precision=False)))
    if is_main():
        torch.save(results, out)
    torch.distributed.destroy_process_group()


def _rank_main(local_rank: int, world_size: int, port: int, out: str) -> None:
    # what torchrun would set for a single-node job
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank),
                      WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a forked child must not enter the parent's OpenMP thread pool (the DataLoader recipe)
    torch.set_num_threads(1)
    main(out)


def _dead_peer_main(local_rank: int, world_size: int, port: int, out: str) -> None:
    # rank 1 leaves right after joining; rank 0's next collective must fail, not wait
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank),
                      WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    init_distributed(timeout_s=5)
    if local_rank == 0:
        all_reduce_sum(1.0)


def launch(out: str, nprocs: int = 2, *, dead_peer: bool = False) -> None:
    """Run :func:`main` on ``nprocs`` forked ranks; a rank's exception is re-raised here."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fn = _dead_peer_main if dead_peer else _rank_main
    torch.multiprocessing.start_processes(fn, args=(nprocs, port, out), nprocs=nprocs,
                                          start_method="fork")


if __name__ == "__main__":
    main(sys.argv[1])
