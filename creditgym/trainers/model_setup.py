"""Loading the policy for a run, and the model-derived inputs some credit estimators need.

``load_policy`` opens ``model.path`` or, by default, the tiny model ``build_base_model`` builds
(rank 0 alone), whose tokenizer is trained on the environment's training-task texts, its
instructions and the warm start's demonstrations (``tokenizer_texts``: so every name and tag the
agent reads or writes is a short token sequence).
``make_rollout_backend`` opens the registered backend ``rollout.backend`` over the policy;
``credit_inputs`` forwards to ``creditgym.trainers.credit_inputs``, which provides each
estimator's declared inputs by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from creditgym.trajectory import Trajectory


def tokenizer_texts(env: Any, train_tasks: Sequence[Any], demos: Sequence[Trajectory], *,
                    corpus: Sequence[str] | None = None) -> list[str]:
    """Texts a tiny model's tokenizer learns: the environment's ``corpus`` (its
    ``corpus_texts``) or else the training tasks' questions, the agent's instructions (weighted,
    so every tag and instruction word is a short token sequence) and the ``demos``' prompts,
    actions and observations. Held-out tasks stay out: nothing is fitted to them."""
    from creditgym.trainers.demos import demonstration_texts

    texts = list(corpus) if corpus is not None else [t.question for t in train_tasks]
    if train_tasks:
        obs, info = env.reset(seed=0, options={"task": train_tasks[0]})
        texts += [str(info.get("system_prompt") or obs)] * 20
    return texts + demonstration_texts(demos)


def build_base_model(cfg: Any, run_dir: Path, texts: Callable[[], list[str]],
                     log: Callable[[str], None]) -> None:
    """With ``model.path: null``, build the tiny model in ``run_dir/base-model`` (kept for
    resuming) with a tokenizer trained on ``texts()``, unless it is there already. Rank 0's job
    (``parallel.main_first``); the others then load it."""
    path = base_model_dir(cfg, run_dir)
    if cfg.model.path is None and not (path / "config.json").exists():
        from creditgym.agents.tiny import build_tiny_model

        build_tiny_model(path, texts(), tiny_model_config(cfg), overwrite=True)
        log(f"built a tiny model in {path}")


def load_policy(cfg: Any, run_dir: Path):
    """The run's starting policy and tokenizer: ``model.path``, or the tiny model that
    :func:`build_base_model` made. Every rank loads it at once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = base_model_dir(cfg, run_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path)).to(training_device(cfg.model.device))
    return model, tokenizer


def tiny_model_config(cfg: Any):
    """The tiny model ``model.path: null`` builds (raises ConfigError for sizes out of range)."""
    from creditgym.agents.tiny import TinyModelConfig

    m = cfg.model
    return TinyModelConfig(
        vocab_size=m.tiny_vocab, hidden_size=m.tiny_hidden, num_layers=m.tiny_layers,
        intermediate_size=3 * m.tiny_hidden, num_heads=4, num_kv_heads=4, seed=cfg.seed,
        initializer_range=m.tiny_init_std)


def base_model_dir(cfg: Any, run_dir: Path) -> Path:
    """The model a run starts from before any training: ``model.path``, or the tiny model the
    run builds in ``run_dir/base-model``."""
    return Path(cfg.model.path) if cfg.model.path else run_dir / "base-model"


def starting_model_dir(cfg: Any, run_dir: Path) -> Path:
    """The policy RL starts from: the run's warm start when there is one, else the loaded or
    built base model (what vLLM loads first and what the KL reference is)."""
    sft_dir = run_dir / "sft-model"
    if (sft_dir / "config.json").exists():
        return sft_dir
    return base_model_dir(cfg, run_dir)


def training_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from creditgym.errors import ConfigError

        raise ConfigError(f"model.device={name!r}: torch sees no CUDA GPU here; use 'auto' or 'cpu'")
    return device


def rollout_engine_options(r: Any) -> dict[str, Any]:
    """The engine options of ``rollout`` (a ``RolloutBackendConfig``) that a trainable backend
    gets; the vLLM one reads them, the transformers one has no use for them."""
    options = {"gpu_memory_utilization": r.gpu_memory_utilization,
               "max_model_len": r.max_model_len, "enforce_eager": r.enforce_eager}
    if r.vllm_sleep:
        options["enable_sleep_mode"] = True
    return options


def make_rollout_backend(cfg: Any, model: Any, tokenizer: Any, run_dir: Path):
    """The configured generation backend (``rollout.backend``, a name registered in
    ``creditgym.agents.backends``) over the current policy weights."""
    from creditgym.agents.backends import TrainingPolicy, make_training_backend

    from creditgym.trainers.lora import iter_plain_weights

    policy = TrainingPolicy(model, tokenizer, str(starting_model_dir(cfg, run_dir)), seed=cfg.seed,
                            options=rollout_engine_options(cfg.rollout),
                            weights=lambda: iter_plain_weights(model))
    return make_training_backend(cfg.rollout.backend, policy)


def credit_inputs(trainer: Any, trajs: Sequence[Trajectory]) -> tuple[dict | None, dict]:
    """Model-derived inputs of the configured estimator (None when it needs none): forwards to
    ``creditgym.trainers.credit_inputs.credit_inputs(trainer, trainer.credit, trajs)``."""
    from creditgym.trainers.credit_inputs import credit_inputs as provide

    return provide(trainer, trainer.credit, trajs)
