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
  never by merging the trained module in place). For a model without adapters it is
  ``state_dict()``. :func:`iter_plain_weights` yields the same pairs one at a time, gathering
  an FSDP2-sharded model weight by weight (for a rollout engine on every rank).
* :func:`plain_model` is an unwrapped copy with those weights (``save_pretrained`` then writes
  an ordinary Hugging Face folder that transformers and vLLM load without peft).

Works under FSDP2: sharding happens after wrapping (per decoder layer, then the root), and the
frozen base weights are all-gathered with the adapters but get no gradient or optimiser state.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
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
    return dict(iter_plain_weights(model))


def iter_plain_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(base name, tensor)`` pairs of :func:`plain_state_dict`, one at a time.

    An FSDP2-sharded model yields each weight all-gathered on its own (``full_tensor()``: a
    collective, so every rank must consume the whole iterator in step), so a rollout engine can
    take the policy layer by layer without any rank ever holding a full copy. An adapted
    linear's weight comes merged: ``W + scaling * B @ A`` (peft's LoRA for ``nn.Linear``).
    """
    state = model.state_dict()  # FSDP2: sharded tensors, nothing gathered yet
    lora = _lora_parts(model) if has_adapters(model) else {}
    prefix = "base_model.model."
    for key, value in state.items():
        if "lora_" in key:
            continue
        full = _full(value)
        if key in lora:
            a_key, b_key, scaling, transposed = lora[key]
            delta = (_full(state[b_key]).float() @ _full(state[a_key]).float()) * scaling
            full = full + (delta.T if transposed else delta).to(full.dtype)
        name = key[len(prefix):] if key.startswith(prefix) else key
        yield name.replace(".base_layer.", "."), full


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _lora_parts(model: torch.nn.Module) -> dict[str, tuple[str, str, float, bool]]:
    """Per adapted base weight key: (A key, B key, scaling, fan_in_fan_out) of its one active
    adapter."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        (adapter,) = module.active_adapters  # the trainer makes exactly one
        if module.use_dora.get(adapter, False):
            raise ConfigError("DoRA adapters cannot be merged weight by weight; use plain LoRA")
        out[f"{name}.base_layer.weight"] = (
            f"{name}.lora_A.{adapter}.weight", f"{name}.lora_B.{adapter}.weight",
            float(module.scaling[adapter]), bool(getattr(module, "fan_in_fan_out", False)))
    return out


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """An unwrapped module with the merged weights (a copy; ``model`` is left as it is)."""
    if not has_adapters(model):
        return model
    return copy.deepcopy(model).merge_and_unload()
