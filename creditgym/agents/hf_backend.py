"""The in-process transformers policy backend: batched sampling with a KV cache, and scoring.

``TransformersBackend`` runs any ``AutoModelForCausalLM`` (a tiny local model on a CPU, a real
one on a GPU) behind the ``PolicyBackend`` protocol, and takes new weights from a trainer
(``load_weights``). Its own decoding loop gives exact control of what the trainer needs:

- Prompts are left-padded with attention masks and explicit position ids, so a prompt's
  completion and log-probs do not depend on what it was batched with, up to float rounding
  (CPU matmul kernels block by batch size: the last bits of a log-prob move). Per-prompt seeds
  (``generate(..., seeds=)``: each row samples from its own generator) make the tokens
  independent of the batch; the same call (same prompts in the same order) gives bit-identical
  log-probs too, which is how a rollout's ``rounds`` batching makes whole runs reproducible.
- Log-prob definition (trainers must use the same): the log-prob of a sampled token is
  ``log_softmax(logits / T)[token]`` with ``T = sampling.temperature`` (``T = 1`` when greedy),
  computed in float32 *before* top-k/top-p truncation. ``score`` returns the same quantity at
  ``T = 1``, so ``generate(..., temperature=1)`` log-probs equal ``score(prompt, generated)``.
- Each sequence stops on its own: at a stop token id, at the end-of-sequence ids
  (``eos_token_ids``, as vLLM does; ``stop_at_eos=False`` turns that off), at a stop string in
  its decoded tail, or at ``max_new_tokens``. Stop tokens and the tokens of a stop string are
  kept; the returned ids are exactly the ids sampled, never re-tokenised text.
- A prompt that leaves no room under ``max_context`` gets an empty ``length`` completion; the
  prompt plus completion never exceeds ``max_context``.
- ``Completion.text`` is decoded with special tokens skipped (like vLLM), and stop strings are
  matched against that text.
- Interruptible: ``generate(..., should_stop=f)`` polls ``f`` between decoding steps and raises
  ``GenerationCancelled`` within one step; ``start_generation`` returns a
  :class:`~creditgym.agents.hf_decoding.Decoding` that advances a few tokens at a time
  (bit-identical to one call), which is how the policy server time-slices long requests.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from typing_extensions import Self  # typing.Self needs Python 3.11

from creditgym.agents.backend import Completion, SamplingParams
from creditgym.agents.hf_decoding import Decoding
from creditgym.errors import ConfigError, GenerationCancelled


class TransformersBackend:
    """A causal LM from transformers, in this process, behind the ``PolicyBackend`` protocol."""

    def __init__(
        self,
        model: str | Path | Any,
        *,
        tokenizer: Any = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_batch_size: int = 32,
        max_context: int | None = None,
        stop_at_eos: bool = True,
        seed: int | None = None,
    ) -> None:
        """``model`` is a folder or hub id (loaded with ``AutoModelForCausalLM``) or a loaded
        ``PreTrainedModel`` (used as is: shared with its owner, moved only if ``device`` or
        ``dtype`` is given). ``tokenizer`` defaults to the model's folder. ``dtype`` defaults to
        float32 on CPU and bfloat16 on CUDA; ``max_context`` to the model's
        ``max_position_embeddings``. ``seed`` seeds the generator used when a request has none."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if max_batch_size < 1:
            raise ConfigError(f"max_batch_size={max_batch_size}: must be at least 1")
        if isinstance(model, (str, Path)):
            dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            try:
                self.model = AutoModelForCausalLM.from_pretrained(
                    str(model), dtype=_resolve_dtype(dtype, dev)
                ).to(dev)
            except OSError as e:
                raise ConfigError(
                    f"could not load a causal LM from {str(model)!r}: {e}. Pass a local model "
                    "folder (creditgym.agents.tiny.build_tiny_model makes one) or allow hub "
                    "downloads (HF_HUB_OFFLINE=0)."
                ) from e
            tokenizer = model if tokenizer is None else tokenizer
        else:
            self.model = model
            if device is not None or dtype is not None:
                dev = torch.device(device) if device is not None else model.device
                self.model.to(dev)
                if dtype is not None:
                    self.model.to(_resolve_dtype(dtype, dev))
            if tokenizer is None:
                tokenizer = getattr(model, "name_or_path", None)
                if not tokenizer:
                    raise ConfigError(
                        "TransformersBackend got a model object without a tokenizer: pass "
                        "tokenizer= (an object or a folder)"
                    )
        self.tokenizer = (
            AutoTokenizer.from_pretrained(str(tokenizer))
            if isinstance(tokenizer, (str, Path))
            else tokenizer
        )
        self.device = next(self.model.parameters()).device
        self.max_batch_size = max_batch_size
        max_context = max_context or getattr(self.model.config, "max_position_embeddings", None)
        if not max_context:
            raise ConfigError("the model config has no max_position_embeddings: pass max_context=")
        self.max_context = int(max_context)
        self.stop_at_eos = stop_at_eos
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.weights_version = 0
        """Incremented by every ``load_weights``; each completion records the version it used."""
        self._pad_id = _first_id(self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0)
        self._generator = torch.Generator(device=self.device)
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self._lock = threading.RLock()
        self._closed = False

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """End-of-sequence ids: the generation config's ``eos_token_id`` and the tokenizer's."""
        ids: set[int] = set()
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (gen_eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value is not None:
                ids.update(int(v) for v in value)
        return tuple(sorted(ids))

    # ----------------------------------------------------------------------------- generate
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        should_stop: Callable[[], bool] | None = None,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Completion]:
        """One completion per prompt, in order (see the module docstring for the semantics).

        ``should_stop`` is polled between decoding steps; when it returns true the generation
        is abandoned within one step and :class:`GenerationCancelled` is raised. ``seeds``: one
        per prompt (None entries: the shared generator); each row then samples from its own
        generator, so its draws do not depend on its batch-mates (``sampling.seed`` is unused)."""
        decoding = self.start_generation(prompts, sampling, seeds=seeds)
        try:
            if not decoding.advance(should_stop=should_stop):
                raise GenerationCancelled(
                    f"generation cancelled by should_stop after {decoding.steps} decoding steps"
                )
            return decoding.completions()
        finally:
            decoding.close()

    def start_generation(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        seeds: Sequence[int | None] | None = None,
    ) -> Decoding:
        """A paused ``generate``: advance it in slices (``Decoding.advance``), cancel it between
        any two decoding steps; slices give exactly what one ``generate`` call gives."""
        return Decoding(self, prompts, sampling, seeds=seeds)

    @contextmanager
    def _compute(self):
        """Exclusive use of the model for one slice of work: lock, eval mode, no autograd."""
        with self._lock, _eval_mode(self.model), torch.inference_mode():
            yield

    # -------------------------------------------------------------------------------- score
    def score(
        self, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """Teacher-forced ``log p(continuation[t] | prefix + continuation[:t])`` at temperature 1.

        Rows are left-padded so that only the continuation positions' logits are materialised
        (batch x longest continuation x vocab, not x whole sequence)."""
        self._check_open()
        if len(prefixes) != len(continuations):
            raise ValueError(
                f"score got {len(prefixes)} prefixes and {len(continuations)} continuations; "
                "pass one continuation per prefix"
            )
        pres = [self._as_ids(p, f"prefixes[{i}]") for i, p in enumerate(prefixes)]
        conts = [
            self._as_ids(c, f"continuations[{i}]", allow_empty=True)
            for i, c in enumerate(continuations)
        ]
        for i, (p, c) in enumerate(zip(pres, conts)):
            if len(p) + len(c) > self.max_context:
                raise ValueError(
                    f"score row {i}: prefix + continuation is {len(p) + len(c)} tokens, over "
                    f"max_context={self.max_context}; truncate the prefix or raise max_context"
                )
        results: list[list[float]] = [[] for _ in pres]
        order = sorted(
            (i for i in range(len(pres)) if conts[i]), key=lambda i: len(pres[i]) + len(conts[i])
        )
        with self._lock, _eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(order), self.max_batch_size):
                chunk = order[start : start + self.max_batch_size]
                longest = max(len(conts[i]) for i in chunk)
                input_ids, mask = self._left_pad([pres[i] + conts[i] for i in chunk])
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=False,
                    logits_to_keep=longest + 1,
                )
                lps = out.logits[:, -(longest + 1) : -1, :].float().log_softmax(dim=-1)
                lps = lps.gather(-1, input_ids[:, -longest:, None]).squeeze(-1)
                for row, i in enumerate(chunk):
                    results[i] = lps[row, longest - len(conts[i]) :].tolist()
        return results

    # -------------------------------------------------------------------------- weights etc.
    def load_weights(self, state_dict: dict[str, Any]) -> None:
        """Copy a trainer's weights in (``load_state_dict`` semantics: every name must match)."""
        self._check_open()
        expected = self.model.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        shapes = [
            f"{k}: {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
        ]
        if missing or unexpected or shapes:
            raise ValueError(
                "load_weights: the state_dict does not fit this model "
                f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, shape mismatches "
                f"{shapes[:5]}). Pass model.state_dict() of the same architecture, without "
                "wrapper prefixes such as 'module.' or '_orig_mod.'"
            )
        with self._lock, torch.no_grad():
            self.model.load_state_dict(state_dict, strict=True)
            self.weights_version += 1

    async def agenerate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams
    ) -> list[Completion]:
        """``generate`` in a worker thread, so the event loop keeps stepping environments.
        Concurrent calls run one after another (batching many trajectories' requests is the
        rollout's ``GenerationBatcher``'s job)."""
        return await asyncio.to_thread(self.generate, prompts, sampling)

    def close(self) -> None:
        """Drop the model (frees its memory once no one else holds it); later calls fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            del self.model
            if self.device.type == "cuda":
                # a full collection (~0.4 s in a process holding torch and transformers) is
                # worth it only where the caching allocator can then hand the memory back
                gc.collect()
                torch.cuda.empty_cache()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("TransformersBackend is closed; build a new one to keep generating")

    def _as_ids(self, seq: Sequence[int], where: str, *, allow_empty: bool = False) -> list[int]:
        ids = [int(t) for t in seq]
        if not ids and not allow_empty:
            raise ValueError(f"{where} is empty: a prompt needs at least one token id")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(
                f"{where} has token ids outside the model's vocabulary [0, {self.vocab_size}): "
                f"{bad[:5]}; was it tokenised with another model's tokenizer?"
            )
        return ids

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            input_ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[row, width - len(s) :] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )


@contextmanager
def _eval_mode(model):
    """Eval mode (no dropout) for one call, then back: the model may be a trainer's live one."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ConfigError(f"dtype={dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
    return resolved


def _first_id(*candidates: int | None) -> int:
    return next(int(c) for c in candidates if c is not None)
