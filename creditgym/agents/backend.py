"""The policy-backend contract: token ids in, token ids and log-probs out.

Every backend (transformers in-process, an OpenAI-compatible HTTP server such as ``vllm serve``,
vLLM in-process) implements ``PolicyBackend``. Prompts are token-id lists, never text, so the
rollout controls tokenisation exactly (token-in/token-out): what the policy generated is what the
trainer trains on, id for id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one completion per prompt."""

    max_new_tokens: int = 256
    """Most tokens to generate per completion."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0: off)."""
    top_k: int = 0
    """Sample among the k most likely tokens (0: off)."""
    stop: tuple[str, ...] = ()
    """Stop after the first generated text that ends with one of these strings (the string is
    kept in the completion, as Search-R1 keeps ``</search>``)."""
    stop_token_ids: tuple[int, ...] = ()
    """Stop after generating one of these token ids (kept in the completion). The tokenizer's
    end-of-sequence / end-of-turn ids belong here."""
    seed: int | None = None
    """Seed for reproducible sampling (per call); None draws from the backend's generator."""


FinishReason = Literal["stop", "length", "error"]


@dataclass
class Completion:
    """One generated continuation of one prompt."""

    token_ids: list[int]
    """Generated token ids, exactly as sampled (including a stop token or stop string's tokens)."""
    logprobs: list[float]
    """Log-probability of each generated token under the sampling policy (same length)."""
    finish_reason: FinishReason
    """``stop`` (a stop string/token was generated), ``length`` (max_new_tokens reached) or
    ``error``."""
    text: str = ""
    """The decoded text of ``token_ids`` (for convenience; never re-tokenised)."""
    error: str | None = None
    """What went wrong when ``finish_reason == "error"``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific details (timings, server request id, ...)."""


@runtime_checkable
class PolicyBackend(Protocol):
    """What the rollout and trainers need from a policy."""

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Completion]:
        """One completion per prompt, in order."""
        ...

    def score(
        self, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """Per-token log-probs of each continuation given its prefix (teacher forcing)."""
        ...

    def close(self) -> None:
        """Release the model, connections or threads."""
        ...


@runtime_checkable
class TrainablePolicyBackend(PolicyBackend, Protocol):
    """An in-process backend whose weights the trainer can replace after an update."""

    def load_weights(self, state_dict: dict[str, Any]) -> None:
        """Replace the policy weights (names as in the trainer's model ``state_dict``)."""
        ...
