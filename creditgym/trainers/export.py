"""``creditgym export-model RUN_DIR --out DIR``: a run's trained policy as a plain Hugging Face
folder (safetensors, tokenizer) for ``creditgym eval``, ``serve-policy`` and vLLM.

The run's own ``config.yaml`` says how its policy was built: the base model (``model.path``, or
the tiny model the run built in ``RUN_DIR/base-model``) and its LoRA adapters, if any. The base
is loaded, wrapped as in training, and the checkpoint's trained weights (a DCP checkpoint of any
world size: ``dist_checkpoint.load_model_weights``) are loaded into it in this one process;
LoRA adapters are then merged (``lora.plain_model``), so the folder needs neither peft nor
creditgym. ``creditgym-export.json`` beside the weights names the run and checkpoint step.

The folder is written atomically (``files.atomic_dir``): a crash leaves no half folder, an
existing ``--out`` is replaced only with ``--force`` and only once the new one is complete, and
``--out`` may not be, or lie inside, the run folder or the base model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from creditgym.errors import ConfigError


def export_model(run_dir: str | Path, out: str | Path, *, checkpoint: str | Path | None = None,
                 force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Write the policy of ``run_dir``'s ``checkpoint`` (default: its latest) to ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from creditgym.config import from_dict, read_yaml
    from creditgym.files import atomic_dir, check_output_dir
    from creditgym.trainers.checkpoint import CheckpointError, latest_checkpoint
    from creditgym.trainers.config import TrainConfig
    from creditgym.trainers.dist_checkpoint import load_model_weights
    from creditgym.trainers.lora import apply_lora, plain_model
    from creditgym.trainers.model_setup import base_model_dir

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run} is not a `creditgym train` run folder (no config.yaml)")
    cfg = from_dict(TrainConfig, read_yaml(run / "config.yaml"), where=str(run / "config.yaml"))
    base = base_model_dir(cfg, run)
    if not (base / "config.json").is_file():
        raise ConfigError(f"the run's base model {base} is missing (no config.json); the "
                          "export needs the folder the run started from")
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run / "checkpoints")
    if ckpt is None:
        raise CheckpointError(f"{run / 'checkpoints'} holds no checkpoint to export")
    target = check_output_dir(out, [run, base], force=force)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    model = apply_lora(model, cfg.model.lora, seed=cfg.seed)
    extra = load_model_weights(ckpt, model)
    plain = plain_model(model)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    with atomic_dir(target) as staging:
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "creditgym-export.json").write_text(json.dumps({
            "run_dir": str(run.resolve()), "checkpoint": extra["path"],
            "step": extra.get("step"), "lora": cfg.model.lora.r > 0}, indent=1) + "\n")
    log(f"exported step {extra.get('step')} of {run} to {target}"
        + (" (LoRA adapters merged)" if cfg.model.lora.r > 0 else ""))
    return target
