"""Sampling helpers of the in-process transformers backend (``TransformersBackend``).

- :func:`sample_tokens`: the next token of every row from its logits with temperature, top-k and
  top-p, and the sampled token's log-prob ``log_softmax(logits / T)`` taken *before* truncation
  (``T = 1`` when greedy): the log-prob definition trainers must share. With one generator per
  row (:func:`row_generators`, seeded from each request's seed) a row's draws are its own.
- :class:`StopStrings`: finds a stop string in the decoded tail of a growing sequence without
  decoding the whole sequence at every step.
- :func:`check_sampling`: rejects ``SamplingParams`` this backend cannot honour, saying why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from creditgym.agents.backend import SamplingParams
from creditgym.errors import ConfigError


def sample_tokens(
    logits: torch.Tensor,
    sampling: SamplingParams,
    generator: torch.Generator | Sequence[torch.Generator],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens and their log-probs ``log_softmax(logits / T)`` (T=1 when greedy).

    ``generator``: one for the whole batch, or one per row (see :func:`row_generators`): then
    each row draws from its own stream only, so its tokens do not depend on its batch-mates."""
    if sampling.temperature == 0:
        tokens = logits.argmax(dim=-1)
        return tokens, torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    scaled = temper(logits, sampling.temperature)
    logprobs = torch.log_softmax(scaled, dim=-1)
    candidates = scaled
    if 0 < sampling.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, sampling.top_k, dim=-1).values[:, -1:]
        candidates = candidates.masked_fill(candidates < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(candidates, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the mass before it already reaches top_p (the top token always stays).
        drop = (probs.cumsum(dim=-1) - probs) >= sampling.top_p
        drop[:, 0] = False
        candidates = candidates.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = torch.softmax(candidates, dim=-1)
    if isinstance(generator, torch.Generator):
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    else:
        if len(generator) != probs.shape[0]:
            raise ValueError(f"{len(generator)} generators for {probs.shape[0]} rows")
        tokens = torch.cat(
            [torch.multinomial(probs[r : r + 1], 1, generator=g)[0] for r, g in enumerate(generator)]
        )
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def row_generators(
    seeds: Sequence[int | None], device: torch.device, fallback: torch.Generator
) -> list[torch.Generator]:
    """One generator per row: seeded from the row's own seed, or ``fallback`` (shared) for None."""
    return [
        fallback if s is None else torch.Generator(device=device).manual_seed(int(s) % 2**64)
        for s in seeds
    ]


def temper(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature`` that stays finite for any finite ``temperature > 0``.

    Shifting by the row maximum first changes no log-prob (softmax is shift-invariant) but keeps a
    tiny temperature from overflowing to ``inf - inf = nan``: the top logit maps to 0 and the rest
    to large negative values (or ``-inf``), so e.g. ``temperature=1e-300`` samples the argmax (ties
    split evenly) and its log-prob is 0, the limit of the definition. Temperatures below float32's
    smallest normal number act as that number (a float32 tensor cannot hold a smaller divisor).
    """
    divisor = max(float(temperature), torch.finfo(torch.float32).tiny)
    return (logits - logits.amax(dim=-1, keepdim=True)) / divisor


class StopStrings:
    """Finds a stop string in the decoded tail of a growing sequence."""

    def __init__(self, stops: Sequence[str], decode: Callable[[Sequence[int]], str]) -> None:
        self.stops = [s for s in stops if s]
        self.decode = decode
        # An occurrence not seen before overlaps the newest token and spans at most one token
        # per byte, so the last (bytes + 1) tokens cover it (+1: a partial leading character).
        self.window = max((len(s.encode("utf-8")) for s in self.stops), default=0) + 1

    def hit(self, ids: list[int]) -> bool:
        """Whether a stop string occurs in the decoded tail of ``ids``."""
        if not self.stops:
            return False
        tail = self.decode(ids[-self.window :])
        return any(s in tail for s in self.stops)


def check_sampling(sampling: SamplingParams) -> None:
    """Raise :class:`ConfigError` naming every field of ``sampling`` that is out of range."""
    problems = []
    if sampling.max_new_tokens < 0:
        problems.append(f"max_new_tokens={sampling.max_new_tokens} must be >= 0")
    if not sampling.temperature >= 0 or math.isinf(sampling.temperature):  # nan fails >= too
        problems.append(f"temperature={sampling.temperature} must be finite and >= 0 (0: greedy)")
    if not 0 < sampling.top_p <= 1:
        problems.append(f"top_p={sampling.top_p} must be in (0, 1]")
    if sampling.top_k < 0:
        problems.append(f"top_k={sampling.top_k} must be >= 0 (0: off)")
    if problems:
        raise ConfigError("SamplingParams: " + "; ".join(problems))


__all__ = ["StopStrings", "check_sampling", "row_generators", "sample_tokens", "temper"]
