"""LoRA adapters through ``peft`` (``model.lora``), and the policy's weights as plain model weights.

Contract:

* :func:`apply_lora` wraps the loaded policy with ``peft.get_peft_model`` when ``model.lora.r``
  is positive: the base weights are frozen, only the adapters train, so the optimiser
  (``make_optimizer`` takes parameters with ``requires_grad``) and the checkpoints
  (``dist_checkpoint`` saves trainable parameters only) hold the adapters alone. The adapters'
  initial values are drawn from a generator seeded with ``seed`` (peft's B = 0 makes the
  wrapped model equal to the base model at the start), so a resumed run rebuilds the same
  module before its checkpoint overwrites the adapters.
* :func:`plain_state_dict` gives what a rollout engine or a model folder needs: the policy's
  weights under the base model's own names with each adapter merged in (``W + scale * B @ A``,
  computed by peft's ``get_delta_weight``, never by merging the trained module in place). For a
  model without adapters it is ``state_dict()``.
* :func:`plain_model` is an unwrapped copy with those weights (``save_pretrained`` then writes
  an ordinary Hugging Face folder that transformers and vLLM load without peft).

Works under FSDP2: sharding happens after wrapping (per decoder layer, then the root), and the
frozen base weights are all-gathered with the adapters but get no gradient or optimiser state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from creditgym.errors import ConfigError


@dataclass
class LoraSettings:
    """Low-rank adapters (``peft``) instead of training every weight."""

    r: int = 0
    """Adapter rank; 0 trains the whole model (no adapters)."""
    alpha: float = 16.0
    """Scale numerator: the adapter's update is multiplied by ``alpha / r``."""
    dropout: float = 0.0
    """Dropout on the adapter's input. Keep 0 for RL: a stochastic forward makes the recomputed
    log-probs differ from the sampled ones even before any update."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names (or name suffixes) that get adapters; ``["all-linear"]``: every linear
    layer of the decoder (attention and MLP), not the output head."""


def lora_problems(s: LoraSettings) -> list[str]:
    """Every problem with ``model.lora`` (empty when it is off or valid)."""
    out = []
    if s.r < 0:
        out.append(f"model.lora.r={s.r}: must be >= 0 (0 turns LoRA off)")
    if s.r > 0:
        if s.alpha <= 0:
            out.append(f"model.lora.alpha={s.alpha}: must be > 0")
        if not 0.0 <= s.dropout < 1.0:
            out.append(f"model.lora.dropout={s.dropout}: must be in [0, 1)")
        if not s.target_modules:
            out.append("model.lora.target_modules is empty: name the modules that get adapters, "
                       "or use [all-linear]")
        try:
            import peft  # noqa: F401
        except ImportError:
            out.append("model.lora.r > 0 needs peft: pip install 'creditgym[lora]'")
    return out


def apply_lora(model: torch.nn.Module, s: LoraSettings, *, seed: int) -> torch.nn.Module:
    """``model`` wrapped with adapters (``peft.get_peft_model``) when ``s.r > 0``, else itself."""
    if s.r <= 0:
        return model
    from peft import LoraConfig, get_peft_model

    targets: Any = "all-linear" if list(s.target_modules) == ["all-linear"] \
        else list(s.target_modules)
    config = LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):  # the adapters' init never moves the run's stream
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, config)
        except ValueError as exc:  # peft: "Target modules ... not found in the base model"
            raise ConfigError(f"model.lora.target_modules={s.target_modules}: {exc}") from None


def has_adapters(model: torch.nn.Module) -> bool:
    """True when ``model`` is a peft model (its weights need merging to be plain weights)."""
    return hasattr(model, "get_base_model") and hasattr(model, "peft_config")


def plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights under the base model's names, adapters merged in (module docstring)."""
    if not has_adapters(model):
        return model.state_dict()
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            with torch.no_grad():
                delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            deltas[f"{name}.weight"] = delta
    for key, value in base.state_dict().items():
        if "lora_" in key:
            continue
        plain = key.replace(".base_layer.", ".")
        merged[plain] = value + deltas[plain].to(value.dtype) if plain in deltas else value
    return merged


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """An unwrapped module with the merged weights (a copy; ``model`` is left as it is)."""
    if not has_adapters(model):
        return model
    return copy.deepcopy(model).merge_and_unload()
