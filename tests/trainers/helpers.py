"""Shared test fixtures for the trainers: a tiny seeded Llama, made-up trajectories, and the
options of the end-to-end runs (``SMALL``, ``start_from``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from creditgym.trajectory import Trajectory

VOCAB = 64
PAD = 0

SMALL = [
    "--set", "env.kwargs.world.num_documents=600", "--set", "env.kwargs.world.num_train_questions=100",
    "--set", "env.kwargs.world.num_test_questions=20", "--set", "env.kwargs.world_backend=bm25s",
    "--set", "model.tiny_vocab=800", "--set", "model.tiny_hidden=64", "--set", "model.tiny_layers=2",
    "--set", "sft.demonstrations=16", "--set", "sft.demonstrator.worlds=2", "--set", "sft.steps=2", "--set", "sft.lm_steps=2",
    "--set", "sft.batch_size=8", "--set", "threads=1",
    "--set", "rl.tasks_per_iteration=2", "--set", "rl.group_size=3", "--set", "rl.max_new_tokens=12",
    "--set", "eval.episodes=4", "--set", "policy.micro_batch_tokens=4096",
]
"""``creditgym train`` options over configs/default.yaml for a tiny end-to-end run (seconds)."""


def start_from(model_dir: Path) -> list[str]:
    """Options that start a ``SMALL`` run from ``model_dir`` (the session's shared warm start,
    the ``warm_model`` fixture) without a warm start of its own: for tests of what comes after."""
    return ["--set", f"model.path={model_dir}", "--set", "sft.steps=0", "--set", "sft.lm_steps=0"]


def rows(run: Path) -> list[dict]:
    """A run's ``metrics.jsonl`` rows."""
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama with a 64-token vocabulary, initialised from ``seed``."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg)


def make_traj(rng: np.random.Generator, idx: int, *, group: str = "g0", n_turns: int | None = None,
              success: float | None = None, with_advantages: bool = True) -> Trajectory:
    """A trajectory of random ids (1..VOCAB-1), random log-probs and per-token advantages."""
    n_turns = int(rng.integers(1, 4)) if n_turns is None else n_turns
    prompt = rng.integers(1, VOCAB, size=int(rng.integers(2, 6))).tolist()
    actions = [rng.integers(1, VOCAB, size=int(rng.integers(1, 6))).tolist()
               for _ in range(n_turns)]
    obs = [rng.integers(1, VOCAB, size=int(rng.integers(0, 5))).tolist() for _ in range(n_turns)]
    logprobs = [(-rng.uniform(2.0, 6.0, size=len(a))).tolist() for a in actions]
    t = Trajectory(
        id=f"t{idx}", group=group, task={"question": "q"}, prompt_ids=prompt, action_ids=actions,
        action_logprobs=logprobs, observation_ids=obs, rewards=[0.0] * n_turns,
        anchors=[None] * n_turns, valid=[True] * n_turns,
        metrics={"success": float(rng.integers(0, 2)) if success is None else success},
    )
    if with_advantages:
        t.advantages = (rng.normal(size=len(t.tokens())) * t.loss_mask()).tolist()
    return t


def make_trajs(n: int, seed: int = 0, **kwargs) -> list[Trajectory]:
    rng = np.random.default_rng(seed)
    return [make_traj(rng, i, **kwargs) for i in range(n)]
