"""Resumable, cancellable decoding for :class:`~creditgym.agents.hf_backend.TransformersBackend`.

A :class:`Decoding` is one ``generate`` call cut into pieces: ``advance(max_tokens,
should_stop)`` runs at most ``max_tokens`` decoding steps (one new token per unfinished row per
step) and returns; the next ``advance`` continues from where it stopped, with the same KV cache,
the same rows in the same batch and the same random generator. So a generation advanced in
slices of any size is *bit-identical* to one uninterrupted ``generate`` (same tokens, same
log-probs, same stop decisions): it is literally the same computation, paused between steps.

``should_stop`` is called between decoding steps (never before the first one of a call, so
every call makes progress); when it returns true, ``advance`` returns at once: that bounds how
long a caller waits to cancel or pre-empt a generation to one decoding step. ``drop(rows)``
removes rows whose result nobody wants any more (they leave the batch and the KV cache at the
next step); ``close()`` frees the KV cache. The policy server time-slices requests with this;
``TransformersBackend.generate`` runs one ``Decoding`` to the end.

Contract: ``advance``/``completions``/``close`` are called from one thread at a time (the
backend's lock serialises model use across decodings); weights must not change in the middle of
a decoding (``advance`` raises if ``load_weights`` ran since ``start``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from creditgym.agents.backend import Completion, SamplingParams
from creditgym.agents.sampling import StopStrings, check_sampling, row_generators, sample_tokens


class Decoding:
    """The paused state of one batched generation (see the module docstring)."""

    def __init__(
        self,
        backend: Any,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        seeds: Sequence[int | None] | None = None,
    ) -> None:
        backend._check_open()
        check_sampling(sampling)
        self.backend = backend
        self.sampling = sampling
        self.prompts = [backend._as_ids(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        self.limits = [
            min(sampling.max_new_tokens, backend.max_context - len(p)) for p in self.prompts
        ]
        self.generator = backend._generator
        if sampling.seed is not None:
            self.generator = torch.Generator(device=backend.device).manual_seed(sampling.seed)
        # Per-row seeds (``generate(..., seeds=)``): each row samples from its own stream.
        self.row_generators: list[torch.Generator] | None = None
        if seeds is not None:
            if len(seeds) != len(self.prompts):
                raise ValueError(f"{len(seeds)} seeds for {len(self.prompts)} prompts")
            self.row_generators = row_generators(seeds, backend.device, self.generator)
        self.stop_ids = set(sampling.stop_token_ids) | (
            set(backend.eos_token_ids) if backend.stop_at_eos else set()
        )
        self.version = backend.weights_version
        self.steps = 0
        """Decoding steps run so far (all chunks together)."""
        self._generated: list[list[int]] = [[] for _ in self.prompts]
        self._logprobs: list[list[float]] = [[] for _ in self.prompts]
        self._reasons = ["length"] * len(self.prompts)
        self._dropped: set[int] = set()
        # Similar lengths share a batch: less padding. Results go back to their prompt's slot.
        order = sorted(
            (i for i in range(len(self.prompts)) if self.limits[i] > 0),
            key=lambda i: len(self.prompts[i]),
        )
        # The chunks, and below the rows that leave a chunk as they finish, depend only on the
        # prompts (in call order), their limits and their own tokens: the same call always runs
        # the same batch shapes, hence the same floats (what ``rounds`` batching relies on).
        size = backend.max_batch_size
        self._chunks = [order[s : s + size] for s in range(0, len(order), size)]
        self._running: Iterator[None] | None = None
        self.done = not self._chunks

    def advance(
        self, max_tokens: int | None = None, should_stop: Callable[[], bool] | None = None
    ) -> bool:
        """Run up to ``max_tokens`` decoding steps (None: to the end); True once all rows ended.

        Returns early, after at least one step, as soon as ``should_stop()`` is true."""
        if self.done:
            return True
        backend = self.backend
        backend._check_open()
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens}: advance needs at least 1 step")
        steps = 0
        with backend._compute():
            if backend.weights_version != self.version:
                raise RuntimeError(
                    "load_weights ran in the middle of a paused generation; start it again"
                )
            while True:
                if self._running is None:
                    if not self._chunks:
                        self.done = True
                        return True
                    self._running = self._decode_chunk(self._chunks.pop(0))
                try:
                    next(self._running)  # exactly one forward pass and one sampled token per row
                except StopIteration:
                    self._running = None
                steps += 1
                self.steps += 1
                if self._running is None and not self._chunks:
                    self.done = True
                    return True
                if max_tokens is not None and steps >= max_tokens:
                    return False
                if should_stop is not None and should_stop():
                    return False

    def drop(self, rows: Sequence[int]) -> None:
        """Stop generating for these prompt indices (their completions become meaningless)."""
        self._dropped.update(int(r) for r in rows)

    def completions(self) -> list[Completion]:
        """One completion per prompt, in order; only once ``done``."""
        if not self.done:
            raise RuntimeError("the decoding is not finished: advance it until it returns True")
        return [
            Completion(
                token_ids=list(toks),
                logprobs=list(lps),
                finish_reason=reason,  # type: ignore[arg-type]
                text=self.backend._decode(toks),
                extra={"weights_version": self.version, "prompt_tokens": len(self.prompts[i])},
            )
            for i, (toks, lps, reason) in enumerate(
                zip(self._generated, self._logprobs, self._reasons)
            )
        ]

    def close(self) -> None:
        """Free the KV cache of the running chunk (later ``advance`` calls do nothing)."""
        self._running = None
        self._chunks = []
        self.done = True

    def _decode_chunk(self, chunk: list[int]) -> Iterator[None]:
        """Prefill ``chunk``'s prompts, then one yield per decoding step until all rows end."""
        from transformers import DynamicCache

        backend, sampling, model = self.backend, self.sampling, self.backend.model
        input_ids, mask = backend._left_pad([self.prompts[i] for i in chunk])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_pos = mask.sum(-1)
        cache = DynamicCache(config=model.config)
        out = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        stops = StopStrings(sampling.stop, backend._decode)
        active = list(chunk)  # batch slot -> prompt index
        while True:
            logits = out.logits[:, -1, :].float()
            gens = self.generator
            if self.row_generators is not None:
                gens = [self.row_generators[r] for r in active]
            tokens, token_lps = sample_tokens(logits, sampling, gens)
            keep = []
            for slot, (row, tok, lp) in enumerate(zip(active, tokens.tolist(), token_lps.tolist())):
                self._generated[row].append(tok)
                self._logprobs[row].append(lp)
                if tok in self.stop_ids or stops.hit(self._generated[row]):
                    self._reasons[row] = "stop"
                elif len(self._generated[row]) < self.limits[row] and row not in self._dropped:
                    keep.append(slot)
            if not keep:
                return
            if len(keep) < len(active):
                # Finished rows leave the batch (and the KV cache): no compute is spent on them.
                index = torch.tensor(keep, device=backend.device)
                cache.batch_select_indices(index)
                mask, next_pos, tokens = mask[index], next_pos[index], tokens[index]
                active = [active[k] for k in keep]
            yield  # a decoding step is done: the caller may pause here
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            out = model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            next_pos = next_pos + 1


__all__ = ["Decoding"]
