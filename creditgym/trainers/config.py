"""The typed configuration of ``creditgym train`` (YAML files in configs/ map onto it).

Every section is a dataclass with a docstring per field; ``creditgym.config.from_dict`` rejects
unknown keys with the valid ones listed, and ``--set section.key=value`` overrides any field.
:func:`check_train_config` checks the rest before a run creates anything: value ranges, the
credit estimator and its options, the environment options, the device, and that ``run_dir``
can be written; every problem found is listed in one ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from creditgym.envs.world import WorldConfig
from creditgym.errors import ConfigError
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

    backend: str = "transformers"
    """A trainable backend registered in ``creditgym.agents.backends``. ``transformers``:
    generation with the trained module itself (weights always in sync). ``vllm``: an in-process
    vLLM engine (GPU only; ``pip install 'creditgym[vllm]'``) that gets the new weights through
    ``load_weights`` after every update. An HTTP policy server (``openai``/``http``: ``creditgym
    serve-policy`` / ``vllm serve``) cannot be trained: it has no weight-update path."""
    gpu_memory_utilization: float = 0.35
    """vLLM's share of the GPU memory (the rest is left to the trainer's model and optimiser)."""
    max_model_len: int | None = None
    """vLLM's context length (None: the model's; lower it to save KV-cache memory)."""
    enforce_eager: bool = False
    """Run vLLM without CUDA graphs (slower, starts sooner, less memory)."""
    batching: Literal["rounds", "free", "alone"] = "rounds"
    """How the trajectories' generation requests form backend calls (see
    ``creditgym.agents.generation_batcher``). ``rounds``: lockstep; a call waits until every
    trajectory in flight has a request, sorted by (task, member), so the same config gives the
    same batches and identical and resumed runs write identical ``rollouts.jsonl`` (a round
    waits for the slowest environment step: cheap with the in-process retriever). ``free``: a
    call takes whatever is queued (best with slow remote tools; same tokens, log-probs may
    differ in the last bits between runs on a CPU). ``alone``: one prompt per call
    (bit-identical without coordination, several times slower)."""


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


def check_train_config(cfg: TrainConfig, *, resume: bool = False) -> None:
    """Raise one :class:`ConfigError` listing every problem of ``cfg``; creates nothing."""
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    need(cfg.seed >= 0, f"seed={cfg.seed}: must be >= 0")
    need(cfg.threads >= 1, f"threads={cfg.threads}: must be >= 1")
    need(cfg.checkpoint_every >= 1, f"checkpoint_every={cfg.checkpoint_every}: must be >= 1")
    need(cfg.keep_checkpoints >= 1, f"keep_checkpoints={cfg.keep_checkpoints}: must be >= 1")
    need(cfg.prm_lr > 0, f"prm_lr={cfg.prm_lr}: must be > 0")
    rl = cfg.rl
    need(rl.iterations >= 1, f"rl.iterations={rl.iterations}: must be >= 1 (rollout-credit-update "
         "iterations; set sft and eval options alone for a warm start without RL)")
    need(rl.tasks_per_iteration >= 1, f"rl.tasks_per_iteration={rl.tasks_per_iteration}: must be >= 1")
    need(rl.group_size >= 1, f"rl.group_size={rl.group_size}: must be >= 1")
    need(rl.max_new_tokens >= 1, f"rl.max_new_tokens={rl.max_new_tokens}: must be >= 1")
    need(rl.temperature > 0, f"rl.temperature={rl.temperature}: must be > 0 (the loss divides "
         "logits by it)")
    need(rl.max_context_tokens > rl.max_new_tokens, f"rl.max_context_tokens={rl.max_context_tokens}: "
         f"must exceed rl.max_new_tokens={rl.max_new_tokens}")
    need(rl.lr > 0, f"rl.lr={rl.lr}: must be > 0")
    sft = cfg.sft
    for name in ("demonstrations", "steps", "lm_steps", "demo_worlds"):
        need(getattr(sft, name) >= 0, f"sft.{name}={getattr(sft, name)}: must be >= 0")
    need(sft.batch_size >= 1, f"sft.batch_size={sft.batch_size}: must be >= 1")
    need(sft.lr > 0, f"sft.lr={sft.lr}: must be > 0")
    need(sft.demonstrations >= 1 or sft.steps + sft.lm_steps <= 0,
         "sft.demonstrations=0 with SFT steps: record at least one, or set sft.steps=0 and "
         "sft.lm_steps=0 (no warm start)")
    for name in ("early_answer_prob", "skip_search_prob"):
        need(0.0 <= getattr(sft, name) <= 1.0, f"sft.{name}={getattr(sft, name)}: must be in [0, 1]")
    ev = cfg.eval
    need(ev.episodes >= 1, f"eval.episodes={ev.episodes}: must be >= 1")
    need(ev.every >= 0, f"eval.every={ev.every}: must be >= 0 (0: only before and after)")
    need(ev.temperature >= 0, f"eval.temperature={ev.temperature}: must be >= 0 (0: greedy)")
    problems += _model_problems(cfg)
    problems += _component_problems(cfg)
    problem = run_dir_problem(cfg.run_dir, resume=resume)
    if problem:
        problems.append(problem)
    if problems:
        raise ConfigError("invalid training config:\n  - " + "\n  - ".join(problems))


def _model_problems(cfg: TrainConfig) -> list[str]:
    m, r, out = cfg.model, cfg.rollout, []
    if m.path is not None and not (Path(m.path) / "config.json").is_file():
        out.append(f"model.path={m.path!r}: no Hugging Face model folder there (no config.json); "
                   "give a local model folder, or null for a tiny model")
    if m.path is None:
        if m.tiny_layers < 1 or m.tiny_vocab < 100 or m.tiny_init_std <= 0:
            out.append(f"model: tiny_layers={m.tiny_layers} (>= 1), tiny_vocab={m.tiny_vocab} "
                       f"(>= 100) and tiny_init_std={m.tiny_init_std} (> 0) are out of range")
        if m.tiny_hidden < 4 or m.tiny_hidden % 4:
            out.append(f"model.tiny_hidden={m.tiny_hidden}: must be a positive multiple of 4 "
                       "(the tiny model has 4 attention heads)")
    try:
        from creditgym.trainers.model_setup import training_device

        training_device(m.device)
    except ConfigError as exc:
        out.append(str(exc))
    except (RuntimeError, ValueError) as exc:  # torch.device("nonsense")
        out.append(f"model.device={m.device!r}: {exc}; use auto, cpu, cuda or cuda:N")
    if not 0 < r.gpu_memory_utilization <= 1:
        out.append(f"rollout.gpu_memory_utilization={r.gpu_memory_utilization}: must be in (0, 1]")
    if r.max_model_len is not None and r.max_model_len < 1:
        out.append(f"rollout.max_model_len={r.max_model_len}: must be >= 1 or null")
    from creditgym.agents.backends import backend_problem

    if (problem := backend_problem(r.backend, training=True, label="rollout.backend")):
        out.append(problem)
    return out


def _component_problems(cfg: TrainConfig) -> list[str]:
    """The credit estimator and the environment options, checked by their own strict configs."""
    from creditgym.config import from_dict
    from creditgym.credit.registry import make_config
    from creditgym.envs.search_env import SearchEnvConfig

    out = []
    try:
        make_config(cfg.credit)
    except ConfigError as exc:
        out.append(str(exc))
    world = dataclasses.asdict(cfg.world)
    for label, options in (("env", {**cfg.env, "world": world, "split": "train"}),
                           ("sft.demo_backend", {**cfg.env, "world": world,
                                                 "world_backend": cfg.sft.demo_backend})):
        if label == "sft.demo_backend" and cfg.sft.demo_worlds == 0:
            continue
        try:
            from_dict(SearchEnvConfig, options, where=label)
        except ConfigError as exc:
            out.append(str(exc))
    return out


def run_dir_problem(run_dir: str, *, resume: bool = False) -> str | None:
    """Why ``run_dir`` cannot hold a new (or, with ``resume``, continued) run; None if it can.
    Looks only: nothing is created (a probe file is anonymous and gone at once)."""
    path = Path(run_dir)
    if path.exists():
        if not path.is_dir():
            return f"run_dir={run_dir!r} exists and is not a folder; choose another with --set run_dir=DIR"
        if not resume and (path / "checkpoints").exists():
            return (f"run_dir {run_dir} already holds a run (it has checkpoints/); pass --resume "
                    "to continue it, or start a new run elsewhere with --set run_dir=NEW_DIR "
                    "(nothing there was changed)")
        target = path
    else:
        target = path.absolute().parent
        while not target.exists() and target != target.parent:
            target = target.parent
        if not target.is_dir():
            return (f"run_dir={run_dir!r}: {target} is a file, so no folder can be made under it; "
                    "choose another with --set run_dir=DIR")
    try:
        if not os.access(target, os.W_OK | os.X_OK):
            raise PermissionError("permission denied")
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        return (f"run_dir={run_dir!r}: cannot write in {target} ({exc.strerror or exc}); choose "
                "a writable place with --set run_dir=DIR")
    return None
