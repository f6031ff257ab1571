"""Loading the policy for a run, and the model-derived inputs some credit estimators need.

``load_policy`` opens ``model.path`` or, by default, builds a tiny model whose tokenizer is trained
on the built-in world's corpus, questions and the environment's instructions (so every name and
tag the agent reads or writes is a short token sequence). ``credit_inputs`` supplies IGPO's probe
log-probs (teacher-forced gold answers under the current policy, batched through the backend's
``score``) and OPRL's per-turn PRM log-ratios (after one DPO step of the implicit PRM).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence


from creditgym.trajectory import Trajectory


def demo_world_configs(cfg: Any) -> list[Any]:
    """The worlds the warm-start demonstrations come from (``sft.demo_worlds`` of them, seeds
    after the training world's), or none: then the training split itself is demonstrated."""
    import dataclasses

    return [dataclasses.replace(cfg.world, seed=cfg.world.seed + 1 + k)
            for k in range(cfg.sft.demo_worlds)]


def world_texts(env: Any, world_configs: Sequence[Any]) -> list[str]:
    """Texts the tiny tokenizer learns: the worlds' documents and training questions, and the
    agent's instructions (test questions stay out: nothing is fitted to the held-out split)."""
    from creditgym.envs.world import World

    texts: list[str] = []
    for config in world_configs:
        world = World.generate(config)
        texts += [doc["contents"] for doc in world.iter_documents()]
        texts += [t.question for t in world.questions("train")]
    _, info = env.reset(seed=0)
    return texts + [info["system_prompt"]] * 20


def load_policy(cfg: Any, run_dir: Path, env: Any, log: Callable[[str], None]):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cfg.model.path
    if path is None:
        from creditgym.agents.tiny import TinyModelConfig, build_tiny_model

        path = run_dir / "base-model"
        if not (path / "config.json").exists():
            m = cfg.model
            tiny = TinyModelConfig(
                vocab_size=m.tiny_vocab, hidden_size=m.tiny_hidden, num_layers=m.tiny_layers,
                intermediate_size=3 * m.tiny_hidden, num_heads=4, num_kv_heads=4, seed=cfg.seed,
                initializer_range=m.tiny_init_std)
            texts = world_texts(env, [cfg.world, *demo_world_configs(cfg)])
            build_tiny_model(path, texts, tiny, overwrite=True)
            log(f"built a tiny model in {path}")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path)).to(training_device(cfg.model.device))
    return model, tokenizer


def starting_model_dir(cfg: Any, run_dir: Path) -> Path:
    """The policy RL starts from: the run's warm start when there is one, else the loaded or
    built base model (what vLLM loads first and what the KL reference is)."""
    sft_dir = run_dir / "sft-model"
    if (sft_dir / "config.json").exists():
        return sft_dir
    return Path(cfg.model.path) if cfg.model.path else run_dir / "base-model"


def training_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from creditgym.errors import ConfigError

        raise ConfigError(f"model.device={name!r}: torch sees no CUDA GPU here; use 'auto' or 'cpu'")
    return device


def make_rollout_backend(cfg: Any, model: Any, tokenizer: Any, run_dir: Path):
    """The configured generation backend (``rollout.backend``, a name registered in
    ``creditgym.agents.backends``) over the current policy weights."""
    from creditgym.agents.backends import TrainingPolicy, make_training_backend

    r = cfg.rollout
    policy = TrainingPolicy(model, tokenizer, str(starting_model_dir(cfg, run_dir)), seed=cfg.seed,
                            options={"gpu_memory_utilization": r.gpu_memory_utilization,
                                     "max_model_len": r.max_model_len,
                                     "enforce_eager": r.enforce_eager})
    return make_training_backend(r.backend, policy)


def credit_inputs(trainer: Any, trajs: Sequence[Trajectory]) -> tuple[dict | None, dict]:
    """Model-derived inputs of the configured estimator (None when it needs none): forwards to
    ``creditgym.trainers.credit_inputs.credit_inputs(trainer, trainer.credit, trajs)``."""
    from creditgym.trainers.credit_inputs import credit_inputs as provide

    return provide(trainer, trainer.credit, trajs)
