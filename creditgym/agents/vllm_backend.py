"""The in-process vLLM policy backend: fast batched generation on NVIDIA GPUs, with weight updates.

``VLLMBackend(model, **engine_kwargs)`` builds a ``vllm.LLM`` (vLLM >= 0.32; ``pip install
'creditgym[vllm]'``) and implements ``PolicyBackend`` and ``TrainablePolicyBackend`` on it:

- ``generate``: token prompts (``{"prompt_token_ids": [...]}``, vLLM's ``TokensPrompt``) with
  ``vllm.SamplingParams(n=1, logprobs=0, max_tokens, temperature, top_p, top_k, stop,
  stop_token_ids, seed, include_stop_str_in_output=True, skip_special_tokens=False)``; the ids
  are ``outputs[0].token_ids`` as sampled and the log-probs are the sampled tokens' entries of
  ``outputs[0].logprobs`` (``logprobs=0`` returns just the sampled token). vLLM stops at the
  model's end-of-sequence ids by itself.
- Log-prob definition: unless ``logprobs_mode`` is passed, the engine is built with
  ``logprobs_mode="processed_logprobs"``: ``log_softmax(logits / T)`` of the sampled token, which
  is :class:`~creditgym.agents.hf_backend.TransformersBackend`'s definition when top-k/top-p
  are off (vLLM's processed log-probs are taken after top-k/top-p truncation; its default
  ``raw_logprobs`` ignores the temperature).
- ``score``: prompt = prefix + continuation with ``SamplingParams(max_tokens=1,
  prompt_logprobs=0)``; ``RequestOutput.prompt_logprobs`` is aligned with the prompt (first entry
  None) and the continuation's positions are read out (temperature 1).
- ``load_weights(weights)``: a state dict or a stream of ``(name, tensor)`` pairs (a sharded
  trainer's weights gathered one at a time), sent in chunks of about ``chunk_mb``. The engine
  is built with a worker extension (``worker_extension_cls``, vLLM's documented hook for adding
  methods that ``LLM.collective_rpc`` can call on every worker); its ``creditgym_load_weights``
  passes each chunk to the vLLM model's own ``load_weights(weights=...)``, which maps Hugging
  Face parameter names onto vLLM's fused layers (qkv, gate_up). The prefix cache is then reset
  so no KV block computed with the old weights is reused. Tensors travel to the worker process
  by value (moved to CPU first); for large models vLLM's weight-transfer engines
  (``LLM.init_weight_transfer_engine`` / ``update_weights``, NCCL or CUDA IPC) would be faster.
- ``sleep()`` / ``wake_up(tags)``: vLLM's sleep mode (engine built with
  ``enable_sleep_mode=True``): level 2 frees weights and KV cache for a training step;
  ``load_weights`` wakes the weights, streams the new ones in, then wakes the KV cache.

vllm is imported inside ``__init__``, so importing this module never needs it. Without vllm, or
without a CUDA GPU, ``VLLMBackend(...)`` raises :class:`BackendError` saying what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Sequence

from creditgym.agents.backend import Completion, SamplingParams
from creditgym.agents.openai_backend import BackendError

WORKER_EXTENSION = "creditgym.agents.vllm_backend.WeightLoadingExtension"
"""Qualified name of the worker extension that ``load_weights`` relies on."""


def engine_options(**engine_kwargs: Any) -> dict[str, Any]:
    """What ``vllm.LLM`` gets besides the model: the caller's options plus the backend's
    log-prob definition and weight-loading hook, unless the caller set them."""
    return {"logprobs_mode": "processed_logprobs", "worker_extension_cls": WORKER_EXTENSION,
            **engine_kwargs}


def sampling_params(vllm: Any, sampling: SamplingParams, **overrides: Any) -> Any:
    """The ``vllm.SamplingParams`` of one generation request (``overrides``: e.g. its seed)."""
    fields = dict(
        n=1,
        logprobs=0,
        max_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        stop=list(sampling.stop),
        stop_token_ids=list(sampling.stop_token_ids),
        seed=sampling.seed,
        include_stop_str_in_output=True,
        skip_special_tokens=False,
    )
    fields.update(overrides)
    return vllm.SamplingParams(**fields)


def scoring_params(vllm: Any) -> Any:
    """The ``vllm.SamplingParams`` of teacher-forced scoring: the prompt's own log-probs
    (temperature 1) and one throw-away generated token."""
    return vllm.SamplingParams(n=1, max_tokens=1, temperature=1.0, prompt_logprobs=0)


class WeightLoadingExtension:
    """Mixed into every vLLM worker (``worker_extension_cls``): lets the trainer push weights."""

    def creditgym_load_weights(self, weights: list[tuple[str, Any]]) -> int:
        """Load ``(name, tensor)`` pairs into this worker's model; returns how many were given."""
        get_model = getattr(self, "get_model", None)  # vLLM's Worker; older ones lack it
        model = get_model() if callable(get_model) else self.model_runner.model  # type: ignore
        model.load_weights(weights=weights)
        return len(weights)


class VLLMBackend:
    """vLLM in this process behind ``PolicyBackend``; see the module docstring."""

    def __init__(self, model: str, **engine_kwargs: Any) -> None:
        """``model``: a Hugging Face folder or hub id. ``engine_kwargs`` go to ``vllm.LLM``
        (``gpu_memory_utilization``, ``max_model_len``, ``dtype``, ``enforce_eager``, ...)."""
        try:
            import vllm
        except ImportError as exc:
            raise BackendError(
                f"VLLMBackend needs vLLM, which is not installed ({exc}). Install it with "
                "pip install 'creditgym[vllm]' on a machine with an NVIDIA GPU, or use "
                "TransformersBackend (CPU or GPU) or OpenAICompatibleBackend against a running "
                "`vllm serve`."
            ) from exc
        import torch

        if not torch.cuda.is_available():
            raise BackendError(
                "VLLMBackend needs a CUDA GPU and torch sees none (torch.cuda.is_available() is "
                "False). Run it on a machine with an NVIDIA GPU, or use TransformersBackend."
            )
        self._vllm = vllm
        try:
            self.llm = vllm.LLM(model=str(model), **engine_options(**engine_kwargs))
        except Exception as exc:
            raise BackendError(
                f"vLLM could not load {model!r}: {type(exc).__name__}: {exc}"
            ) from exc
        self.tokenizer = self.llm.get_tokenizer()
        engine = self.llm.llm_engine
        model_config = getattr(engine, "model_config", None) or engine.vllm_config.model_config
        self.max_context = int(model_config.max_model_len)
        self.weights_version = 0
        """Incremented by every ``load_weights``."""
        self._closed = False
        self._asleep = False

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The tokenizer's end-of-sequence id(s) (vLLM stops there by itself)."""
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return () if eos is None else (int(eos),)

    # -- PolicyBackend ----------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Completion]:
        """One completion per prompt, in order. ``seeds``: one per prompt, each prompt's own
        ``SamplingParams(seed=...)`` (vLLM seeds every request's sampler separately, so a
        prompt's draws then depend on its seed only, not on its batch-mates)."""
        self._check_open()
        if not prompts:
            return []
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        params = (
            sampling_params(self._vllm, sampling)
            if seeds is None
            else [sampling_params(self._vllm, sampling, seed=s) for s in seeds]
        )
        outputs = self.llm.generate(
            [{"prompt_token_ids": [int(t) for t in p]} for p in prompts],
            params,
            use_tqdm=False,
        )
        completions = []
        for out in outputs:
            sample = out.outputs[0]
            ids = [int(t) for t in sample.token_ids]
            if sample.logprobs is None or len(sample.logprobs) != len(ids):
                raise BackendError("vLLM returned no log-prob for some generated tokens")
            logprobs = [float(step[t].logprob) for t, step in zip(ids, sample.logprobs)]
            reason = sample.finish_reason if sample.finish_reason in ("stop", "length") else "error"
            completions.append(
                Completion(
                    token_ids=ids,
                    logprobs=logprobs,
                    finish_reason=reason,
                    text=sample.text,
                    error=None
                    if reason != "error"
                    else f"vLLM finish_reason={sample.finish_reason!r}",
                    extra={
                        "weights_version": self.weights_version,
                        "stop_reason": sample.stop_reason,
                    },
                )
            )
        return completions

    def score(
        self, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """Teacher-forced log-probs of each continuation given its prefix (temperature 1)."""
        self._check_open()
        if len(prefixes) != len(continuations):
            raise ValueError(
                f"score() got {len(prefixes)} prefixes but {len(continuations)} continuations"
            )
        rows = [(list(map(int, p)), list(map(int, c))) for p, c in zip(prefixes, continuations)]
        for i, (p, c) in enumerate(rows):
            if c and not p:
                raise ValueError(f"prefix {i} is empty: the first token has no log-prob")
        todo = [i for i, (_, c) in enumerate(rows) if c]
        results: list[list[float]] = [[] for _ in rows]
        if not todo:
            return results
        params = scoring_params(self._vllm)
        outputs = self.llm.generate(
            [{"prompt_token_ids": rows[i][0] + rows[i][1]} for i in todo], params, use_tqdm=False
        )
        for i, out in zip(todo, outputs):
            prefix, cont = rows[i]
            prompt = prefix + cont
            entries = out.prompt_logprobs
            results[i] = [
                float(entries[pos][prompt[pos]].logprob) for pos in range(len(prefix), len(prompt))
            ]
        return results

    def load_weights(self, weights: Mapping[str, Any] | Iterable[tuple[str, Any]], *,
                     chunk_mb: float = 512.0) -> int:
        """Replace the policy weights: a state dict or ``(name, tensor)`` pairs with Hugging Face
        names, sent to the engine in chunks of about ``chunk_mb`` (so a stream of a sharded
        model's weights, gathered one at a time, never becomes a full copy on the CPU).
        Returns how many tensors were loaded. An engine put to :meth:`sleep` gets its weight
        memory back first and its KV cache after the load."""
        self._check_open()
        if self._asleep:
            self.wake_up(["weights"])
        pairs = weights.items() if isinstance(weights, Mapping) else weights
        limit, chunk, size, count = chunk_mb * 2**20, [], 0, 0
        for name, tensor in pairs:
            cpu = tensor.detach().to("cpu").contiguous()
            chunk.append((name, cpu))
            size += cpu.numel() * cpu.element_size()
            if size >= limit:
                count += self._send(chunk)
                chunk, size = [], 0
        if chunk:
            count += self._send(chunk)
        if self._asleep:
            self.wake_up(["kv_cache"])
        self.llm.reset_prefix_cache()
        self.weights_version += 1
        return count

    def _send(self, weights: list[tuple[str, Any]]) -> int:
        try:
            self.llm.collective_rpc("creditgym_load_weights", args=(weights,))
        except Exception as exc:
            raise BackendError(
                f"vLLM could not load the new weights: {type(exc).__name__}: {exc}. The engine "
                f"needs worker_extension_cls={WORKER_EXTENSION!r} (the default; a custom one must "
                "subclass WeightLoadingExtension) and Hugging Face parameter names."
            ) from exc
        return len(weights)

    def sleep(self) -> None:
        """Free the engine's GPU memory for a training step (vLLM's sleep mode, level 2: weights
        and KV cache discarded, as new weights come next). Needs ``enable_sleep_mode=True``."""
        self._check_open()
        self.llm.sleep(level=2)
        self._asleep = True

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Re-allocate what :meth:`sleep` freed (``tags``: ``["weights"]`` before loading new
        weights, then ``["kv_cache"]``; None: both)."""
        self._check_open()
        self.llm.wake_up(tags=list(tags) if tags is not None else None)
        if tags is None or "kv_cache" in tags:
            self._asleep = False

    @property
    def asleep(self) -> bool:
        """True between :meth:`sleep` and the wake-up of the KV cache."""
        return self._asleep

    def close(self) -> None:
        """Shut the engine down and free the GPU memory it held."""
        if self._closed:
            return
        self._closed = True
        llm = self.__dict__.pop("llm", None)
        # vLLM's LLM and LLMEngine have no shutdown of their own (0.32); the engine-core client
        # that owns the worker processes does
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if callable(getattr(core, "shutdown", None)):
            core.shutdown()
        del core, llm
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("VLLMBackend is closed; build a new one to keep generating")


__all__ = [
    "VLLMBackend", "WeightLoadingExtension", "WORKER_EXTENSION", "engine_options", "sampling_params",
    "scoring_params",
]
