"""Throughput of the policy-gradient step: tokens/s, peak memory and share of the chip's peak.

Run: ``python benchmarks/trainer.py`` (CPU: the default tiny model, about a minute) or, on an
NVIDIA GPU, ``python benchmarks/trainer.py --model 0.5b`` (a Qwen2.5-0.5B-shaped Llama built
from a config, random weights, no download; bf16 autocast, fp32 master weights, AdamW).

Each step is ``creditgym.trainers.policy_update`` on ``--batch`` trajectories of ``--seq-len``
tokens (half prompt/observations, half actions, every action token trained): forward, backward,
clipping and the optimiser step, exactly as ``creditgym train`` runs them. The model-FLOPs share
counts ``6 * params * tokens`` plus attention ``12 * layers * hidden * seq_len * tokens`` (causal,
halved) against the chip's dense bf16 peak (``--peak-tflops``; default looked up by device name).
Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU, the process's peak RSS on a CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from creditgym.trainers.optim import OptimConfig, make_optimizer
from creditgym.trainers.policy_step import PolicyUpdateConfig, policy_update
from creditgym.trajectory import Trajectory

SHAPES = {
    # name: (vocab, hidden, intermediate, layers, heads, kv_heads)
    "tiny": (1500, 128, 384, 4, 4, 4),  # configs/default.yaml's policy
    "0.5b": (151_936, 896, 4864, 24, 14, 2),  # Qwen2.5-0.5B's shape
    "1.5b": (151_936, 1536, 8960, 28, 12, 2),  # Qwen2.5-1.5B's shape
}
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def build(shape: str, device: torch.device):
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab, hidden, inter, layers, heads, kv = SHAPES[shape]
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, max_position_embeddings=8192,
                      tie_word_embeddings=True, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).to(device), cfg


def trajectories(n: int, seq_len: int, vocab: int, seed: int) -> list[Trajectory]:
    rng = np.random.default_rng(seed)
    half = seq_len // 2
    out = []
    for i in range(n):
        action = rng.integers(1, vocab, half).tolist()
        t = Trajectory(id=f"t{i}", group=f"g{i // 8}", task={"question": "q"},
                       prompt_ids=rng.integers(1, vocab, seq_len - half).tolist(),
                       action_ids=[action], action_logprobs=[(-rng.uniform(1, 5, half)).tolist()],
                       observation_ids=[[]], rewards=[0.0], anchors=[None], valid=[True])
        t.advantages = (rng.normal(size=seq_len) * np.asarray(t.loss_mask())).tolist()
        out.append(t)
    return out


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seq-len", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--batch", type=int, default=16, help="trajectories per update")
    ap.add_argument("--micro-batch-tokens", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=4, help="timed updates (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--lora-r", type=int, default=0, help="train LoRA adapters of this rank")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, cfg = build(args.model, device)
    params = sum(p.numel() for p in model.parameters())  # FLOPs count every weight either way
    if args.lora_r:
        from creditgym.trainers.lora import LoraSettings, apply_lora

        model = apply_lora(model, LoraSettings(r=args.lora_r, alpha=2.0 * args.lora_r), seed=0)
    peak = peak_tflops(device, args.peak_tflops)
    optimizer, scheduler = make_optimizer(model, OptimConfig(lr=1e-6, total_steps=1000))
    policy = PolicyUpdateConfig(micro_batch_tokens=args.micro_batch_tokens,
                                gradient_checkpointing=args.gradient_checkpointing)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"model {args.model}{f' + LoRA r={args.lora_r}' if args.lora_r else ''}: "
          f"{params / 1e6:.1f}M parameters on {name} "
          f"({'bf16 autocast' if device.type == 'cuda' else 'float32'}), batch {args.batch}, "
          f"micro-batch {args.micro_batch_tokens} tokens")
    print(f"{'seq len':>8} {'tokens/s':>10} {'trained tok/s':>14} {'s/update':>9} "
          f"{'peak mem GiB':>13} {'TFLOP/s':>8} {'% bf16 peak':>12}")
    rows = []
    for seq_len in args.seq_len:
        batch = trajectories(args.batch, seq_len, cfg.vocab_size, seed=seq_len)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        policy_update(model, optimizer, scheduler, batch, policy, pad_id=0)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            policy_update(model, optimizer, scheduler, batch, policy, pad_id=0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = (time.perf_counter() - t0) / args.steps
        tokens = args.batch * seq_len
        flops = 6 * params * tokens + 6 * cfg.num_hidden_layers * cfg.hidden_size * seq_len * tokens
        if device.type == "cuda":
            mem = torch.cuda.max_memory_allocated(device) / 2**30
        else:  # the process's peak resident set (Linux reports KiB)
            mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        share = f"{100 * flops / dt / 1e12 / peak:.1f}" if peak else "-"
        print(f"{seq_len:>8} {tokens / dt:>10,.0f} {tokens / 2 / dt:>14,.0f} {dt:>9.3f} "
              f"{mem:>13.2f} {flops / dt / 1e12:>8.2f} {share:>12}")
        rows.append({"model": args.model, "lora_r": args.lora_r, "device": name,
                     "seq_len": seq_len, "batch": args.batch, "tokens_per_s": tokens / dt,
                     "s_per_update": dt, "peak_mem_gib": mem, "tflops": flops / dt / 1e12,
                     "share_of_bf16_peak": flops / dt / 1e12 / peak if peak else None})
    if args.json:
        from creditgym.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
