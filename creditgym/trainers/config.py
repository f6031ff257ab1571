"""The typed configuration of ``creditgym train`` (YAML files in configs/ map onto it).

Every section is a dataclass with a docstring per field; ``creditgym.config.from_dict`` rejects
unknown keys with the valid ones listed, and ``--set section.key=value`` overrides any field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from creditgym.envs.world import WorldConfig
from creditgym.trainers.optim import OptimConfig
from creditgym.trainers.policy_step import PolicyUpdateConfig


@dataclass
class ModelConfig:
    """Which policy to train."""

    path: str | None = None
    """A local Hugging Face model folder. None: build a tiny model (below) in the run folder."""
    tiny_layers: int = 2
    """Layers of the tiny model built when ``path`` is None."""
    tiny_hidden: int = 128
    """Hidden size of the tiny model."""
    tiny_vocab: int = 3000
    """Vocabulary of the tiny model's locally trained tokenizer."""
    tiny_init_std: float = 0.1
    """Std of the tiny model's weight initialisation (see ``TinyModelConfig.initializer_range``)."""
    device: str = "auto"
    """Where the trained model lives: ``auto`` (CUDA when available, else CPU), ``cpu``,
    ``cuda``, ``cuda:1``... Weights stay float32; on CUDA the forward passes run under bf16
    autocast."""


@dataclass
class RolloutBackendConfig:
    """What generates the rollouts."""

    backend: Literal["transformers", "vllm"] = "transformers"
    """``transformers``: generation with the trained module itself (weights always in sync).
    ``vllm``: an in-process vLLM engine (GPU only; ``pip install 'creditgym[vllm]'``) that gets
    the new weights through ``load_weights`` after every update. An HTTP policy server
    (``creditgym serve-policy`` / ``vllm serve``) cannot be trained: it has no weight-update path."""
    gpu_memory_utilization: float = 0.35
    """vLLM's share of the GPU memory (the rest is left to the trainer's model and optimiser)."""
    max_model_len: int | None = None
    """vLLM's context length (None: the model's; lower it to save KV-cache memory)."""
    enforce_eager: bool = False
    """Run vLLM without CUDA graphs (slower, starts sooner, less memory)."""


@dataclass
class SFTConfig:
    """The warm start on scripted-expert demonstrations."""

    demonstrations: int = 1000
    """Expert episodes recorded on the training split."""
    early_answer_prob: float = 0.5
    """Imperfection of the expert: after each non-final hop, the chance it answers too early."""
    skip_search_prob: float = 0.0
    """Imperfection of the expert: the chance it gives up at the first turn, answering
    "unknown" without searching (a policy imitating it searches only part of the time)."""
    demo_worlds: int = 0
    """Record the demonstrations in this many other worlds (seeds ``world.seed + 1`` onwards,
    same shape, indexed with ``demo_backend``) instead of the training world. Their names never
    recur in the training or test questions, so a small model must learn to copy names from
    context rather than memorise answers (0: demonstrate on the training split)."""
    demo_backend: str = "bm25s"
    """Retrieval backend of the demonstration worlds (bm25s indexes a small world in a second)."""
    lm_steps: int = 0
    """First phase: steps of language modelling on whole demonstration transcripts (every
    token a target), which teaches a small model to copy names from context much sooner."""
    lm_perfect_expert: bool = True
    """The language-modelling phase reads a perfect expert's transcripts (the expert's
    imperfection would only thin out the searches and passages it learns to read); the
    action phase then imitates the imperfect expert on ``steps * batch_size`` episodes."""
    steps: int = 150
    """Second phase: steps on the actions only (0 with lm_steps 0: no warm start)."""
    batch_size: int = 32
    """Demonstrations per step."""
    lr: float = 3e-3
    """Peak learning rate (cosine decay after a short warm-up)."""


@dataclass
class RLConfig:
    """Reinforcement learning on the environment."""

    iterations: int = 20
    """Rollout-credit-update iterations."""
    tasks_per_iteration: int = 16
    """Training tasks per iteration."""
    group_size: int = 8
    """Trajectories per task (the credit-assignment group)."""
    max_new_tokens: int = 24
    """Most tokens per action."""
    temperature: float = 1.0
    """Sampling temperature of rollouts (and of the log-probs the loss uses)."""
    max_context_tokens: int = 2048
    """Context budget of one trajectory; longer episodes are truncated."""
    lr: float = 3e-4
    """Learning rate of the policy updates."""


@dataclass
class EvalConfig:
    """Held-out evaluation before and after RL (and every ``every`` iterations)."""

    episodes: int = 128
    """Test-split questions per evaluation."""
    temperature: float = 1.0
    """Sampling temperature (1.0 measures the policy as it samples; 0 is greedy)."""
    every: int = 0
    """Evaluate every N iterations as well (0: only before and after)."""
    before: bool = True
    """Evaluate before RL (runs that start from an already evaluated model may skip it)."""


@dataclass
class TrainConfig:
    """Everything ``creditgym train`` needs."""

    run_dir: str = "runs/default"
    """Where checkpoints, metrics, trajectories and the plot go."""
    seed: int = 0
    """Seeds the world's task sampling, demonstrations, rollouts and torch."""
    threads: int = 1
    """torch CPU threads (1 is fastest for tiny models on small machines)."""
    system_prompt: bool = True
    """Send the environment's instructions as a system message (a tiny model trained from
    scratch does not read them; leaving them out shortens every sequence)."""
    world: WorldConfig = field(default_factory=WorldConfig)
    """The built-in world (tasks and corpus)."""
    env: dict[str, Any] = field(default_factory=lambda: {
        "world_backend": "lucene", "max_turns": 6, "top_k": 3, "max_passage_chars": 300})
    """Extra ``SearchEnv`` options (the split is set by the trainer)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy."""
    rollout: RolloutBackendConfig = field(default_factory=RolloutBackendConfig)
    """The generation backend of rollouts and evaluations."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """The warm start."""
    rl: RLConfig = field(default_factory=RLConfig)
    """Reinforcement learning."""
    credit: Any = "gigpo"
    """Credit estimator: a name or ``{name: ..., options}`` (see creditgym.credit.registry)."""
    policy: PolicyUpdateConfig = field(default_factory=lambda: PolicyUpdateConfig(
        clip_low=0.2, clip_high=0.28, micro_batch_tokens=16384))
    """The policy-gradient step (clipping, KL, aggregation, micro-batching)."""
    prm_lr: float = 1e-4
    """Learning rate of OPRL's implicit PRM (only with ``credit: oprl``)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out evaluation."""
    checkpoint_every: int = 1
    """Checkpoint every N RL iterations (and after SFT)."""
    keep_checkpoints: int = 2
    """Checkpoints kept (the newest are kept)."""

    def optim(self, lr: float, total_steps: int) -> OptimConfig:
        return OptimConfig(lr=lr, warmup_steps=min(10, total_steps // 10),
                           total_steps=max(total_steps, 1), schedule="cosine", min_lr_ratio=0.1)
