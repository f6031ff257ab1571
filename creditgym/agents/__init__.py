"""Agents: policy backends (transformers, OpenAI-compatible HTTP, vLLM), multi-turn rollout, prompts.

The public names below (``__all__``) are imported lazily, on first use, so ``import
creditgym.agents`` stays light: torch, transformers and vLLM load only with the backend that
needs them. The synchronous ``rollout`` function is not among them: its name is its module's
(``creditgym.agents.rollout``), so use ``from creditgym.agents.rollout import rollout`` or
``await creditgym.agents.arollout(...)``.
"""

from __future__ import annotations

from creditgym.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "creditgym.agents.backend": (
        "Completion", "PolicyBackend", "SamplingParams", "TrainablePolicyBackend",
    ),
    "creditgym.agents.backends": ("BACKENDS", "make_backend", "register_backend"),
    "creditgym.agents.chat": ("ChatRenderer", "ChatTemplateError"),
    "creditgym.agents.generation_batcher": ("BatchingMode", "GenerationBatcher"),
    "creditgym.agents.hf_backend": ("TransformersBackend",),
    "creditgym.agents.openai_backend": ("BackendError", "OpenAICompatibleBackend"),
    "creditgym.agents.vllm_backend": ("VLLMBackend",),
    "creditgym.agents.policy_server": ("BackgroundPolicyServer",),
    "creditgym.agents.request_batcher": ("RequestBatcher",),
    "creditgym.agents.rollout": (
        "EnvPool", "RolloutConfig", "arollout", "rollout_one", "stream_seed",
    ),
    "creditgym.agents.tiny": ("TinyModelConfig", "build_tiny_model"),
})
