"""Data-parallel scale-out: per-rank memory and update throughput, 1 vs 2 ranks, full vs LoRA.

Run: ``python benchmarks/distributed.py`` (CPU, gloo: a Qwen2.5-0.5B-shaped Llama built from a
config, random weights, no download; about 5 minutes on 2 cores) or ``--shape tiny`` (seconds).
Each configuration runs in fresh processes (``torch.distributed.run`` for 2 ranks) so that peak
memory is its own:

* the policy (tied embeddings, as Qwen2.5-0.5B) is built on the meta device, sharded with
  ``creditgym``'s ``shard_model`` (FSDP2, per decoder layer then the root) when there are 2
  ranks, then materialised with random weights, so each rank only ever holds its shards: this
  measures the update's memory. (``creditgym train`` today loads the whole model on every rank
  before sharding it, and keeps an unsharded rollout copy: one more model's weights per rank.)
* ``--steps`` calls of ``creditgym.trainers.policy_update`` (AdamW, token-mean) on a fixed batch
  of ``--batch`` trajectories of ``--seq-len`` tokens, split by whole groups over the ranks; the
  first call warms up, the rest are timed;
* **peak memory** is the process's peak RSS minus its RSS after imports (the torch libraries),
  per rank; **live tensors** is the peak of the bytes held by live tensors
  (``torch.distributed._tools.mem_tracker.MemTracker``, FSDP2-aware), which leaves out what the
  CPU allocator keeps after the many short-lived buffers of FSDP's collectives are freed (a
  GPU's caching allocator reuses those); **AdamW state** counts the bytes of the optimiser's tensors on the rank (exact);
  **tokens/s** is the whole batch's tokens over the slowest rank's update time.

``--json OUT`` also writes the rows. CUDA ranks (NCCL) report ``torch.cuda.max_memory_allocated``
instead of RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args: argparse.Namespace) -> None:
    """One rank: build, (shard), update; rank 0 writes every rank's numbers."""
    import torch
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from creditgym.trainers.distributed import (
        gather_objects,
        init_distributed,
        is_main,
        shard_model,
        split_groups,
        world,
    )
    from creditgym.trainers.lora import LoraSettings, apply_lora
    from creditgym.trainers.optim import OptimConfig, make_optimizer
    from creditgym.trainers.policy_step import PolicyUpdateConfig, policy_update
    from trainer import SHAPES, build, trajectories

    info = init_distributed(timeout_s=1800)
    torch.set_num_threads(max(1, args.threads // world()))
    base_rss = _rss_mb()
    with torch.device("meta"):  # no rank ever holds the whole model
        model, cfg = build(args.shape, torch.device("meta"))
    model = apply_lora(model, LoraSettings(r=args.lora_r, alpha=2.0 * args.lora_r), seed=0) \
        if args.lora_r else model
    if world() > 1:
        shard_model(model, mixed_precision=True)
    model.to_empty(device=info.device)
    if world() == 1:
        model.tie_weights()  # to_empty() gave the tied head its own tensor (FSDP2 keeps the tie)
    gen = torch.Generator(device=info.device).manual_seed(info.rank)
    with torch.no_grad():  # random weights; norms at 1, LoRA's B at 0 as peft starts it
        for name, p in model.named_parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            if p.dim() == 1:
                local.fill_(1.0)
            elif "lora_B" in name:
                local.zero_()
            else:
                local.normal_(0.0, 0.02, generator=gen)
        fresh = LlamaRotaryEmbedding(cfg)  # its buffers were left empty by to_empty()
        for mod in model.modules():
            if isinstance(mod, LlamaRotaryEmbedding):
                mod.inv_freq.copy_(fresh.inv_freq)
                mod.original_inv_freq.copy_(fresh.original_inv_freq)
    params = sum(p.numel() for p in model.parameters())  # each tensor once (shared: once)
    opt, sched = make_optimizer(model, OptimConfig(lr=1e-5))
    vocab = SHAPES[args.shape][0]
    groups = [trajectories(args.group, args.seq_len, vocab, seed=g) for g in
              range(args.batch // args.group)]
    mine = [t for g in split_groups(groups) for t in g]
    for i, t in enumerate(mine):
        t.group = f"g{i // args.group}"
    pcfg = PolicyUpdateConfig(agg="token-mean", micro_batch_tokens=args.micro_batch_tokens,
                              bf16=True)

    times = []
    for step in range(args.steps):
        if info.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        policy_update(model, opt, sched, mine, pcfg, pad_id=0)
        if info.device.type == "cuda":
            torch.cuda.synchronize()
        if step > 0 or args.steps == 1:
            times.append(time.perf_counter() - t0)
    # One more update under MemTracker (FSDP2-aware; slow, so untimed): the peak of the bytes
    # live tensors hold, without what the CPU allocator keeps of freed buffers. It cannot hook
    # frozen parameters, so LoRA rows go without.
    peak_live = float("nan")
    if not args.lora_r:
        from torch.distributed._tools.mem_tracker import MemTracker

        tracker = MemTracker()
        tracker.track_external(model, opt)
        with tracker:
            policy_update(model, opt, sched, mine, pcfg, pad_id=0)
        peak_live = sum(d.get("Total", 0) for d in tracker.get_tracker_snapshot("peak").values())
    state_bytes = sum(v.numel() * v.element_size() for s in opt.state.values()
                      for v in (x.to_local() if hasattr(x, "to_local") else x for x in s.values())
                      if torch.is_tensor(v) and v.dim() > 0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if info.device.type == "cuda"
            else _peak_rss_mb() - base_rss)
    mine_row = {"rank": info.rank, "params": params, "peak_mb": peak,
                "live_peak_mb": peak_live / 2**20, "adam_state_mb": state_bytes / 2**20,
                "update_s": sum(times) / len(times), "tokens": sum(len(t.tokens()) for t in mine)}
    rows = gather_objects(mine_row)
    if is_main():
        Path(args.out).write_text(json.dumps(rows))
    if world() > 1:
        torch.distributed.destroy_process_group()


def run_config(ranks: int, lora_r: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        me = [str(Path(__file__).resolve()), "--worker", "--out", str(out),
              "--shape", args.shape, "--seq-len", str(args.seq_len), "--batch", str(args.batch),
              "--group", str(args.group), "--steps", str(args.steps), "--lora-r", str(lora_r),
              "--threads", str(args.threads),
              "--micro-batch-tokens", str(args.micro_batch_tokens)]
        cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone",
                                  f"--nproc-per-node={ranks}"] if ranks > 1 else []), *me]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // ranks))}
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        rows = json.loads(out.read_text())
    return {"ranks": ranks, "lora_r": lora_r,
            "peak_mb_per_rank": max(r["peak_mb"] for r in rows),
            "live_peak_mb_per_rank": max(r["live_peak_mb"] for r in rows),
            "adam_state_mb_per_rank": max(r["adam_state_mb"] for r in rows),
            "tokens_per_s": sum(r["tokens"] for r in rows) / max(r["update_s"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="0.5b", help="a shape of benchmarks/trainer.py")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4, help="trajectories per update (all ranks)")
    ap.add_argument("--group", type=int, default=2, help="trajectories per group")
    ap.add_argument("--steps", type=int, default=2, help="updates; the first one warms up")
    ap.add_argument("--lora-r", type=int, default=16, help="rank of the LoRA rows")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads shared by the ranks")
    ap.add_argument("--micro-batch-tokens", type=int, default=4096)
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    configs = [(1, 0), (2, 0), (1, args.lora_r), (2, args.lora_r)]
    rows = [run_config(n, r, args) for n, r in tqdm(configs, desc="configurations")]
    table = Table(title=f"policy update, {args.shape} shape, {args.batch} x {args.seq_len} "
                        f"tokens, AdamW ({'CUDA' if _cuda() else 'CPU, gloo'})")
    for col in ("ranks", "LoRA r", "RSS MB/rank", "vs 1", "live MB/rank", "vs 1",
                "AdamW MB/rank", "vs full", "tokens/s"):
        table.add_column(col, justify="right")
    for row in rows:
        same = next(r for r in rows if r["ranks"] == 1 and r["lora_r"] == row["lora_r"])
        full = next(r for r in rows if r["ranks"] == row["ranks"] and r["lora_r"] == 0)
        table.add_row(str(row["ranks"]), str(row["lora_r"] or "-"),
                      f"{row['peak_mb_per_rank']:,.0f}",
                      f"{row['peak_mb_per_rank'] / same['peak_mb_per_rank']:.2f}x",
                      f"{row['live_peak_mb_per_rank']:,.0f}",
                      f"{row['live_peak_mb_per_rank'] / same['live_peak_mb_per_rank']:.2f}x",
                      f"{row['adam_state_mb_per_rank']:,.1f}",
                      f"1/{full['adam_state_mb_per_rank'] / max(row['adam_state_mb_per_rank'], 1e-9):.0f}",
                      f"{row['tokens_per_s']:,.0f}")
    Console().print(table)
    if args.json:
        from creditgym.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=1) + "\n")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
