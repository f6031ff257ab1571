"""The typed configuration of ``creditgym train`` (YAML files in configs/ map onto it).

Every section is a dataclass with a docstring per field; ``creditgym.config.from_dict`` rejects
unknown keys with the valid ones listed, and ``--set section.key=value`` overrides any field.
:func:`check_train_config` checks the rest before a run creates anything: value ranges, the
credit estimator and its options, the environment (its id resolves and its options are
accepted: ``creditgym.envs.factory.resolve_env``/``check_env_kwargs``), the demonstration files,
the device, and that ``run_dir`` can be written; every problem found is listed in one
``ConfigError``. The trainer knows no particular environment: ``env.id`` names any registered
gymnasium id or ``"package.module:attr"``, and what is specific to it (stop strings, metrics,
demonstrations) comes from the environment class.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from creditgym.envs.registration import DEFAULT_ENV_ID
from creditgym.errors import ConfigError
from creditgym.trainers.lora import LoraSettings, lora_problems
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
    lora: LoraSettings = field(default_factory=LoraSettings)
    """Low-rank adapters through peft (``lora.r > 0``): only the adapters train and are
    checkpointed; rollout engines and exported folders get the merged weights."""
    cpu_offload: bool = False
    """With several ranks, keep the sharded parameters, gradients and optimiser state in CPU
    memory between uses (FSDP2's ``CPUOffloadPolicy``): less GPU memory, slower steps."""


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
    vllm_sleep: bool = False
    """Put the vLLM engine to sleep during every update (sleep mode level 2: its weights and KV
    cache freed for the trainer), then wake it with the new weights. Not with
    ``rl.off_policy_steps: 1``, whose rollouts run during the update."""
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
class EnvConfig:
    """Which environment to train on."""

    id: str = DEFAULT_ENV_ID
    """A registered gymnasium id (``creditgym/Calculator-v0``, a user's) or
    ``"package.module:attr"`` (a class or factory function, imported on demand)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """The environment's options (for the built-in world, e.g. ``world``, ``world_backend``,
    ``max_turns``, ``top_k``); checked by the environment before anything is created."""
    wrappers: list[Any] = field(default_factory=list)
    """Gymnasium wrappers applied to every environment, innermost first (``"module:Wrapper"``,
    or ``{id: "module:Wrapper", kwargs: {...}}``)."""


@dataclass
class SFTConfig:
    """The warm start: imitation of demonstrations (the environment's demonstrator, files)."""

    demonstrations: int = 1000
    """Episodes recorded from the environment's demonstrator on training tasks (0: none; the
    warm start then reads ``demonstration_files`` alone)."""
    demonstrator: dict[str, Any] = field(default_factory=dict)
    """Options of the environment's demonstrator, passed through unread (see the environment
    class's ``demonstrations``; configs/default.yaml shows the built-in world's)."""
    lm_demonstrator: dict[str, Any] | None = None
    """Options (over ``demonstrator``'s) of the demonstrations the language-modelling phase reads,
    e.g. a perfect expert while the action phase imitates an imperfect one. None: both phases read
    the same demonstrations."""
    demonstration_files: list[str] = field(default_factory=list)
    """Trajectory JSONL files (``creditgym eval`` output, a script's) imitated as well as, or
    instead of, the demonstrator; re-tokenised from their text, so any policy's records work."""
    lm_steps: int = 0
    """First phase: steps of language modelling on whole demonstration transcripts (every
    token a target), which teaches a small model to copy names from context much sooner."""
    steps: int = 150
    """Second phase: steps on the actions only (0 with lm_steps 0: no warm start). With
    ``lm_demonstrator`` it imitates ``min(demonstrations, steps * batch_size)`` episodes."""
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
    off_policy_steps: int = 0
    """0: every iteration's rollouts use the current policy. 1: the next iteration's rollouts
    are generated (by a frozen copy of the policy) while this iteration's update runs, one
    update stale; the PPO ratio to the sampled log-probs corrects and clips for it (see
    ``creditgym.trainers.prefetch``)."""


@dataclass
class EvalConfig:
    """Held-out evaluation before and after RL (and every ``every`` iterations)."""

    episodes: int = 128
    """Held-out tasks per evaluation."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Options over ``env.kwargs`` that make the held-out environment (e.g. ``{split: test}``).
    Empty: a deterministic ``heldout_fraction`` of the environment's tasks is held out instead."""
    heldout_fraction: float = 0.2
    """Share of the environment's tasks held out (chosen by task id, never trained on nor fitted
    to; the run's ``heldout.json`` lists them) when ``env_kwargs`` is empty."""
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
    """Seeds task sampling, demonstrations, rollouts and torch."""
    threads: int = 1
    """torch CPU threads (1 is fastest for tiny models on small machines)."""
    system_prompt: bool = True
    """Send the environment's instructions as a system message (a tiny model trained from
    scratch does not read them; leaving them out shortens every sequence)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment (id, options, wrappers)."""
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
    """Learning rate of OPRL's implicit PRM (with ``credit: oprl`` or ``logratio_sum`` recorded)."""
    record_inputs: list[str] = field(default_factory=list)
    """Model-derived credit inputs computed and recorded every iteration besides the
    estimator's own (e.g. ``[probe_logprob]`` in an OPRL run), so ``creditgym credit-bench``
    can score every estimator on the run's ``rollouts.jsonl``. Costs their computation."""
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
    need(not (cfg.rollout.vllm_sleep and rl.off_policy_steps),
         "rollout.vllm_sleep with rl.off_policy_steps=1: the engine cannot sleep during the "
         "update while it generates the next iteration's rollouts; choose one")
    need(not cfg.rollout.vllm_sleep or cfg.rollout.backend == "vllm",
         f"rollout.vllm_sleep is for rollout.backend: vllm (got {cfg.rollout.backend!r})")
    need(rl.off_policy_steps in (0, 1),
         f"rl.off_policy_steps={rl.off_policy_steps}: must be 0 (on-policy) or 1 (the next "
         "iteration's rollouts during this update)")
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
    for name in ("demonstrations", "steps", "lm_steps"):
        need(getattr(sft, name) >= 0, f"sft.{name}={getattr(sft, name)}: must be >= 0")
    need(sft.batch_size >= 1, f"sft.batch_size={sft.batch_size}: must be >= 1")
    need(sft.lr > 0, f"sft.lr={sft.lr}: must be > 0")
    need(sft.demonstrations >= 1 or bool(sft.demonstration_files) or sft.steps + sft.lm_steps <= 0,
         "sft.demonstrations=0 and no sft.demonstration_files with SFT steps: record at least one, "
         "give files, or set sft.steps=0 and sft.lm_steps=0 (no warm start)")
    for path in sft.demonstration_files:
        need(Path(path).is_file(), f"sft.demonstration_files: {path!r} is not a file (give "
             "trajectory JSONL files, e.g. `creditgym eval` output)")
    ev = cfg.eval
    need(ev.episodes >= 1, f"eval.episodes={ev.episodes}: must be >= 1")
    need(ev.every >= 0, f"eval.every={ev.every}: must be >= 0 (0: only before and after)")
    need(ev.temperature >= 0, f"eval.temperature={ev.temperature}: must be >= 0 (0: greedy)")
    need(0.0 < ev.heldout_fraction < 1.0 or bool(ev.env_kwargs),
         f"eval.heldout_fraction={ev.heldout_fraction}: must be in (0, 1) (or give eval.env_kwargs "
         "naming a held-out environment, e.g. {split: test})")
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
        if m.tiny_hidden < 4 or m.tiny_hidden % 4:
            out.append(f"model.tiny_hidden={m.tiny_hidden}: must be a positive multiple of 4 "
                       "(the tiny model has 4 attention heads)")
        else:
            from creditgym.trainers.model_setup import tiny_model_config

            try:
                tiny_model_config(cfg)
            except ConfigError as exc:  # names TinyModelConfig's field: say which option it is
                out.append(f"model (tiny_layers, tiny_hidden, tiny_vocab, tiny_init_std): {exc}")
    try:
        from creditgym.trainers.model_setup import training_device

        training_device(m.device)
    except ConfigError as exc:
        out.append(str(exc))
    except (RuntimeError, ValueError) as exc:  # torch.device("nonsense")
        out.append(f"model.device={m.device!r}: {exc}; use auto, cpu, cuda or cuda:N")
    out += lora_problems(m.lora)
    if not 0 < r.gpu_memory_utilization <= 1:
        out.append(f"rollout.gpu_memory_utilization={r.gpu_memory_utilization}: must be in (0, 1]")
    if r.max_model_len is not None and r.max_model_len < 1:
        out.append(f"rollout.max_model_len={r.max_model_len}: must be >= 1 or null")
    from creditgym.agents.backends import backend_problem

    if (problem := backend_problem(r.backend, training=True, label="rollout.backend")):
        out.append(problem)
    return out


def _component_problems(cfg: TrainConfig) -> list[str]:
    """The credit estimator and the environment (id and options), checked by their own code."""
    from creditgym.credit.registry import make_config
    from creditgym.envs.factory import check_env_kwargs, resolve_env

    out = []
    try:
        make_config(cfg.credit)
    except ConfigError as exc:
        out.append(str(exc))
    else:
        from creditgym.trainers.credit_inputs import input_problems

        out += input_problems(cfg.credit, cfg.record_inputs)
    try:
        resolve_env(cfg.env.id)
    except ConfigError as exc:
        return out + [f"env.id: {exc}"]
    checks = [("env.kwargs", cfg.env.kwargs)]
    if cfg.eval.env_kwargs:
        checks.append(("eval.env_kwargs", {**cfg.env.kwargs, **cfg.eval.env_kwargs}))
    for label, kwargs in checks:
        try:
            check_env_kwargs(cfg.env.id, kwargs)
        except ConfigError as exc:
            out.append(f"{label}: {exc}")
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
