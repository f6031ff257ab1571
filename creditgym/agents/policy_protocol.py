"""The request and answer formats of ``creditgym serve-policy`` (vLLM's ``/v1/completions``).

``parse_request`` validates a request body into a :class:`CompletionJob` or raises
:class:`BadRequest` naming the field and the problem; ``format_choice`` renders one completion as
a ``choices[i]`` item of vLLM's answer. The server itself (queueing, batching, HTTP) lives in
:mod:`creditgym.agents.policy_server`.

Numeric sampling fields: ``temperature`` (>= 0) and ``top_p`` (in (0, 1]) must be finite JSON
numbers; ``NaN``, ``Infinity``, integers too large for a float and out-of-range values are a 400
naming the field. Every finite ``temperature > 0`` is served: a tiny one (``1e-300``) samples the
most likely token, exactly as greedy decoding would, and reports the log-prob of the definition
``log_softmax(logits / T)`` (0 for that token in the limit; greedy ``temperature: 0`` reports
``T = 1`` log-probs). ``max_tokens``, ``top_k``, ``seed``, ``logprobs`` and ``prompt_logprobs``
must be JSON integers in range (``max_tokens`` also within the context).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from creditgym.agents.backend import Completion, SamplingParams
from creditgym.errors import BadRequest  # the one bad-request type of both servers
from creditgym.json_values import json_kind  # the one value-kind wording of both servers

DEFAULT_MAX_TOKENS = 16
"""``max_tokens`` when a request leaves it out (OpenAI's and vLLM's default)."""

UNSUPPORTED = {
    "n": (1,),
    "best_of": (1,),
    "stream": (False,),
    "echo": (False,),
    "suffix": ("",),
    "use_beam_search": (False,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "repetition_penalty": (1, 1.0),
    "min_p": (0, 0.0),
    "min_tokens": (0,),
    "logit_bias": ({},),
    "allowed_token_ids": (),
    "bad_words": ([],),
    "prompt_embeds": (),
    "response_format": (),
    "structured_outputs": (),
    "ignore_eos": (False,),
}
"""Fields this server does not implement, with the values that mean "off" (null is always off)."""


@dataclass
class CompletionJob:
    """A validated ``/v1/completions`` request."""

    prompts: list[list[int]]
    """Token ids of each prompt (text prompts already tokenised)."""
    sampling: SamplingParams
    """How to generate (the end-of-sequence ids merged into ``stop_token_ids``)."""
    logprobs: bool
    """Whether to answer ``choices[i].logprobs``."""
    prompt_logprobs: bool
    """Whether to answer ``choices[i].prompt_logprobs``."""
    tokens_as_ids: bool
    """Spell tokens ``token_id:N`` (vLLM's ``return_tokens_as_token_ids``)."""
    return_token_ids: bool
    """Add ``token_ids`` and ``prompt_token_ids`` to each choice."""
    skip_special_tokens: bool
    """Leave special tokens out of ``text``."""
    include_stop_str: bool
    """Keep the matched stop string at the end of ``text``."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(
    payload: dict,
    name: str,
    default: float,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
) -> float:
    value = payload.get(name)
    if value is None:
        return default
    if not isinstance(value, bool) and isinstance(value, int):
        value = float(value) if abs(value) < 2**1023 else math.inf  # JSON ints are unbounded
    if not isinstance(value, float) or not math.isfinite(value):  # NaN/Infinity parse as floats
        raise BadRequest(
            f"'{name}' must be a finite number, got {json_kind(payload.get(name))}", param=name
        )
    if value < low or (low_open and value == low) or value > high:
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise BadRequest(f"'{name}' must be in {bounds}, got {value}", param=name)
    return float(value)


def _integer(
    payload: dict, name: str, default: int | None, low: int, high: int | None = None
) -> int | None:
    value = payload.get(name)
    if value is None:
        return default
    if not _is_int(value):
        raise BadRequest(f"'{name}' must be an integer, got {json_kind(value)}", param=name)
    if value < low or (high is not None and value > high) or abs(value) >= 2**63:
        limit = f"between {low} and {high}" if high is not None else f">= {low}"
        limit += "" if high is not None else " and fit in 64 bits"
        raise BadRequest(f"'{name}' must be {limit}, got {json_kind(value)}", param=name)
    return value


def _flag(payload: dict, name: str, default: bool) -> bool:
    value = payload.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false, got {json_kind(value)}", param=name)
    return value


def _ids(value: list, where: str, vocab_size: int | None) -> list[int]:
    for i, t in enumerate(value):
        if not _is_int(t):
            raise BadRequest(
                f"{where}[{i}] must be a token id (integer), got {json_kind(t)}", param="prompt"
            )
        if t < 0 or (vocab_size is not None and t >= vocab_size):
            raise BadRequest(
                f"{where}[{i}] = {t} is not a token id of this model (0 to "
                f"{(vocab_size or 0) - 1})",
                param="prompt",
            )
    return list(value)


def _prompts(
    payload: dict, tokenizer: Any, vocab_size: int | None, max_prompts: int
) -> list[list[int]]:
    prompt = payload.get("prompt")
    if prompt is None:
        raise BadRequest(
            "missing 'prompt': send token ids ([1, 2, 3]), a string, or a list of either",
            param="prompt",
        )
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and _is_int(prompt[0])):
        items = [prompt]
    elif isinstance(prompt, list) and prompt:
        items = prompt
    else:
        raise BadRequest(
            f"'prompt' must be token ids, a string or a non-empty list of either, got "
            f"{json_kind(prompt)}",
            param="prompt",
        )
    if len(items) > max_prompts:
        raise BadRequest(
            f"too many prompts: {len(items)} in one request, the limit is {max_prompts}",
            status=413,
            param="prompt",
        )
    add_special = _flag(payload, "add_special_tokens", True)
    out = []
    for i, item in enumerate(items):
        where = "'prompt'" if len(items) == 1 and item is prompt else f"'prompt'[{i}]"
        if isinstance(item, str):
            if tokenizer is None:
                raise BadRequest("this server has no tokenizer; send token ids", param="prompt")
            ids = list(tokenizer(item, add_special_tokens=add_special)["input_ids"])
        elif isinstance(item, list):
            ids = _ids(item, where, vocab_size)
        else:
            raise BadRequest(
                f"{where} must be token ids or a string, got {json_kind(item)}", param="prompt"
            )
        if not ids:
            raise BadRequest(f"{where} is empty; send at least one token", param="prompt")
        out.append(ids)
    return out


def parse_request(
    payload: Any,
    *,
    tokenizer: Any = None,
    vocab_size: int | None = None,
    max_context: int | None = None,
    eos_token_ids: Sequence[int] = (),
    max_prompts: int = 64,
) -> CompletionJob:
    """Validate a ``/v1/completions`` body, or raise :class:`BadRequest` saying what is wrong."""
    if not isinstance(payload, dict):
        raise BadRequest(
            f'request body must be a JSON object like {{"prompt": [1, 2, 3], '
            f'"max_tokens": 16}}, got {json_kind(payload)}'
        )
    for name, off in UNSUPPORTED.items():
        value = payload.get(name)
        if value is not None and value not in off:
            raise BadRequest(
                f"'{name}' = {value!r:.40} is not supported by this server (vLLM "
                "supports it; serve the model with `vllm serve` to use it)",
                param=name,
            )
    prompts = _prompts(payload, tokenizer, vocab_size, max_prompts)
    max_tokens = _integer(payload, "max_tokens", DEFAULT_MAX_TOKENS, 1)
    temperature = _number(payload, "temperature", 1.0, 0.0)
    top_p = _number(payload, "top_p", 1.0, 0.0, 1.0, low_open=True)
    top_k = _integer(payload, "top_k", 0, -1)
    seed = _integer(payload, "seed", None, -(2**63), 2**63 - 1)
    logprobs = _integer(payload, "logprobs", None, 0, 1)
    prompt_logprobs = _integer(payload, "prompt_logprobs", None, 0, 1)
    stop = payload.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest(
            f"'stop' must be a non-empty string or a list of them, got {json_kind(stop)}",
            param="stop",
        )
    stop_ids = payload.get("stop_token_ids")
    stop_ids = [] if stop_ids is None else stop_ids
    if not isinstance(stop_ids, list):
        raise BadRequest(
            f"'stop_token_ids' must be a list of token ids, got {json_kind(stop_ids)}",
            param="stop_token_ids",
        )
    stop_ids = _ids(stop_ids, "'stop_token_ids'", vocab_size)
    stop_ids += [t for t in eos_token_ids if t not in stop_ids]  # vLLM stops at end-of-sequence
    if max_context:
        for i, ids in enumerate(prompts):
            if len(ids) + max_tokens > max_context:
                raise BadRequest(
                    f"This model's maximum context length is {max_context} tokens. However, you "
                    f"requested {len(ids) + max_tokens} tokens ({len(ids)} in prompt {i}, "
                    f"{max_tokens} for the completion). Shorten the prompt or lower max_tokens.",
                    param="max_tokens",
                )
    sampling = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=max(top_k, 0),
        stop=tuple(stop),
        stop_token_ids=tuple(stop_ids),
        seed=seed,
    )
    return CompletionJob(
        prompts=prompts,
        sampling=sampling,
        logprobs=logprobs is not None,
        prompt_logprobs=prompt_logprobs is not None,
        tokens_as_ids=_flag(payload, "return_tokens_as_token_ids", False),
        return_token_ids=_flag(payload, "return_token_ids", False),
        skip_special_tokens=_flag(payload, "skip_special_tokens", True),
        include_stop_str=_flag(payload, "include_stop_str_in_output", False),
    )


def _text(completion: Completion, job: CompletionJob, tokenizer: Any) -> str:
    """The completion's text as vLLM renders it (special tokens and stop string as asked)."""
    if tokenizer is None:
        return completion.text
    text = tokenizer.decode(completion.token_ids, skip_special_tokens=job.skip_special_tokens)
    if completion.finish_reason == "stop" and job.sampling.stop:
        hits = [(text.find(s), s) for s in job.sampling.stop if s in text]
        if hits:
            at, s = min(hits)
            text = text[: at + len(s)] if job.include_stop_str else text[:at]
    return text


def _pieces(ids: Sequence[int], tokenizer: Any) -> list[str]:
    """Each token decoded on its own (what ``text_offset`` counts)."""
    if tokenizer is None:
        return [f"token_id:{t}" for t in ids]
    return tokenizer.batch_decode([[t] for t in ids], skip_special_tokens=False)


def _token_strings(ids: Sequence[int], job: CompletionJob, tokenizer: Any) -> list[str]:
    if job.tokens_as_ids or tokenizer is None:
        return [f"token_id:{t}" for t in ids]
    return _pieces(ids, tokenizer)


def format_choice(
    index: int,
    job: CompletionJob,
    prompt: list[int],
    completion: Completion,
    prompt_logprobs: list[float] | None,
    tokenizer: Any,
) -> dict[str, Any]:
    """``choices[index]`` of vLLM's completions answer for one prompt."""
    choice: dict[str, Any] = {
        "index": index,
        "text": _text(completion, job, tokenizer),
        "logprobs": None,
        "finish_reason": completion.finish_reason,
        "stop_reason": None,
        "prompt_logprobs": None,
    }
    if job.logprobs:
        pieces = _pieces(completion.token_ids, tokenizer)
        tokens = [f"token_id:{t}" for t in completion.token_ids] if job.tokens_as_ids else pieces
        offsets, at = [], 0
        for piece in pieces:
            offsets.append(at)
            at += len(piece)
        choice["logprobs"] = {
            "text_offset": offsets,
            "token_logprobs": list(completion.logprobs),
            "tokens": tokens,
            "top_logprobs": [{t: lp} for t, lp in zip(tokens, completion.logprobs)],
        }
    if job.prompt_logprobs:
        names = _token_strings(prompt[1:], job, tokenizer)
        values = prompt_logprobs or []
        choice["prompt_logprobs"] = [None] + [
            {str(t): {"logprob": lp, "rank": None, "decoded_token": name}}
            for t, lp, name in zip(prompt[1:], values, names)
        ]
    if job.return_token_ids:
        choice["token_ids"] = list(completion.token_ids)
        choice["prompt_token_ids"] = list(prompt)
    return choice


def format_answer(
    model_name: str,
    job: CompletionJob,
    results: Sequence[tuple[Completion, list[float] | None]],
    tokenizer: Any,
) -> dict[str, Any]:
    """vLLM's whole completions answer: one choice per prompt of ``job``, and ``usage``."""
    choices = [
        format_choice(i, job, prompt, completion, prompt_lps, tokenizer)
        for i, (prompt, (completion, prompt_lps)) in enumerate(zip(job.prompts, results))
    ]
    prompt_tokens = sum(len(p) for p in job.prompts)
    completion_tokens = sum(len(c.token_ids) for c, _ in results)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def backend_limits(backend: Any, *, max_prompts: int) -> dict[str, Any]:
    """The keyword arguments of :func:`parse_request` that describe ``backend``."""
    size = getattr(backend, "vocab_size", None)  # the model's embedding rows, else ...
    config = getattr(getattr(backend, "model", None), "config", None)
    if size is None and config is not None:
        size = getattr(config, "vocab_size", None)
    tokenizer = getattr(backend, "tokenizer", None)
    if size is None and tokenizer is not None:  # ... the tokenizer's size
        size = len(tokenizer)
    return {
        "tokenizer": tokenizer,
        "vocab_size": int(size) if size else None,
        "max_context": getattr(backend, "max_context", None),
        "eos_token_ids": tuple(getattr(backend, "eos_token_ids", ()) or ()),
        "max_prompts": max_prompts,
    }


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "BadRequest",
    "CompletionJob",
    "backend_limits",
    "format_answer",
    "format_choice",
    "parse_request",
]
