"""A policy backend that talks to an OpenAI-compatible completions server over HTTP.

``OpenAICompatibleBackend(base_url, model)`` drives ``vllm serve`` (vLLM >= 0.32), ``creditgym
serve-policy`` or any server that speaks vLLM's flavour of ``POST /v1/completions``. Prompts go
out as token ids (``"prompt": [ids...]``), never as text, and the answer is read back as token ids
and log-probs, so the rollout stays token-in/token-out across the network:

- ``generate``: one request per prompt with ``"logprobs": 1``, ``"return_tokens_as_token_ids":
  true`` (each token comes back as ``"token_id:123"``) and ``"return_token_ids": true`` (newer
  vLLM also lists ``choices[0].token_ids``; used when present), ``"skip_special_tokens": false``
  and ``"include_stop_str_in_output": true``. ``SamplingParams`` maps ``max_new_tokens`` to
  ``max_tokens``; ``temperature``, ``top_p``, ``top_k`` (sent only when > 0), ``stop``,
  ``stop_token_ids`` and ``seed`` (when set) keep their names. Log-probs are whatever the server
  reports for the sampled token (vLLM: the raw model distribution unless the server was started
  with ``--logprobs-mode processed_logprobs``).
- ``score``: vLLM's teacher-forcing path: the prompt is prefix + continuation, ``"max_tokens":
  1``, ``"prompt_logprobs": 0``; ``choices[0].prompt_logprobs`` is aligned with the prompt (the
  first entry is null, each other a ``{token_id: {"logprob": ...}}`` map) and the continuation's
  positions are read out.

Concurrency: every prompt is its own request; at most ``max_concurrency`` are in flight at once
(a semaphore) over one pooled aiohttp session on a private event-loop thread
(:class:`creditgym.aio_client.LoopThreadClient`, shared with the HTTP retriever). The synchronous
``generate``/``score`` therefore work from plain code and from inside another running event loop
(they block that caller, never deadlock); ``await agenerate(...)`` / ``await ascore(...)`` work
from any loop.

Failures: a connection error, a timeout (``timeout`` seconds per request) or a 5xx / 429 answer
is retried ``retries`` more times, waiting ``backoff`` seconds, then twice that, and so on. A 4xx
answer is the caller's mistake and raises :class:`BackendError` at once with the server's own
message. A server that stays unreachable raises :class:`BackendError` naming the URL.
``on_error="raise"`` (the default) makes ``generate`` raise for any failed prompt (the other
requests of that call are cancelled): a rollout that wants errors contained per trajectory calls
``agenerate`` once per trajectory. ``on_error="completion"`` instead returns a ``Completion``
with ``finish_reason="error"`` and the message in ``error`` for each failed prompt, and the
others as usual (what a batched rollout needs to mark just those trajectories as errored).
``score`` always raises.

No API key is read from the environment (a local policy server must not receive a key meant for
another service); pass ``api_key`` to send ``Authorization: Bearer ...`` (``vllm serve
--api-key``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

from creditgym.agents.backend import Completion, SamplingParams
from creditgym.aio_client import LoopThreadClient, ServerKind
from creditgym.errors import CreditGymError

TOKEN_ID_PREFIX = "token_id:"
"""How vLLM spells a token when ``return_tokens_as_token_ids`` is set: ``token_id:123``."""


class BackendError(CreditGymError, RuntimeError):
    """A policy backend could not be built, reached, or gave an answer that cannot be used."""


def completions_url(base_url: str) -> str:
    """The ``/v1/completions`` address of ``base_url`` (``http://h:p``, ``.../v1`` or in full)."""
    url = base_url.strip()
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    if url.endswith("/v1/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/completions"
    return url + "/v1/completions"


def parse_token_id(token: str) -> int:
    """The id in vLLM's ``"token_id:123"`` spelling of a token."""
    if not isinstance(token, str) or not token.startswith(TOKEN_ID_PREFIX):
        raise BackendError(
            f"expected a token spelled 'token_id:N' (return_tokens_as_token_ids), got "
            f"{token!r:.60}; "
            "the server does not support vLLM's return_tokens_as_token_ids"
        )
    try:
        return int(token[len(TOKEN_ID_PREFIX) :])
    except ValueError:
        raise BackendError(f"token {token!r:.60} does not end in an integer id") from None


def completion_request(model: str | None, prompt: Sequence[int], sampling: SamplingParams) -> dict:
    """The ``/v1/completions`` body that generates one completion of ``prompt``."""
    body: dict[str, Any] = {
        "prompt": [int(t) for t in prompt],
        "max_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "n": 1,
        "stream": False,
        "logprobs": 1,
        "return_tokens_as_token_ids": True,
        "return_token_ids": True,
        "skip_special_tokens": False,
        "include_stop_str_in_output": True,
    }
    if model is not None:
        body["model"] = model
    if sampling.top_k > 0:  # servers that are not vLLM may not know top_k at all
        body["top_k"] = sampling.top_k
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.stop_token_ids:
        body["stop_token_ids"] = [int(t) for t in sampling.stop_token_ids]
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    return body


def score_request(model: str | None, prefix: Sequence[int], continuation: Sequence[int]) -> dict:
    """The body whose ``prompt_logprobs`` score ``continuation`` after ``prefix``."""
    body: dict[str, Any] = {
        "prompt": [int(t) for t in prefix] + [int(t) for t in continuation],
        "max_tokens": 1,
        "temperature": 0.0,
        "n": 1,
        "stream": False,
        "prompt_logprobs": 0,
    }
    if model is not None:
        body["model"] = model
    return body


def parse_completion(data: Any, *, source: str = "server") -> Completion:
    """A :class:`Completion` from a ``/v1/completions`` answer with one choice."""
    choice = _first_choice(data, source)
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("token_logprobs"), list):
        raise BackendError(f"{source} answered without 'logprobs.token_logprobs'; send logprobs=1")
    values = logprobs["token_logprobs"]
    ids = choice.get("token_ids")
    if not isinstance(ids, list):
        tokens = logprobs.get("tokens")
        if not isinstance(tokens, list):
            raise BackendError(f"{source} answered without 'logprobs.tokens'")
        ids = [parse_token_id(t) for t in tokens]
    if len(ids) != len(values):
        raise BackendError(
            f"{source} answered {len(ids)} token ids but {len(values)} log-probs for one completion"
        )
    reason = choice.get("finish_reason")
    if reason not in ("stop", "length"):
        raise BackendError(f"{source} finished a completion with finish_reason={reason!r}")
    extra: dict[str, Any] = {}
    if isinstance(data, dict) and data.get("id") is not None:
        extra["request_id"] = data["id"]
    if choice.get("stop_reason") is not None:
        extra["stop_reason"] = choice["stop_reason"]
    return Completion(
        token_ids=[int(t) for t in ids],
        logprobs=[float(v) if v is not None else float("nan") for v in values],
        finish_reason=reason,
        text=str(choice.get("text") or ""),
        extra=extra,
    )


def parse_prompt_logprobs(
    data: Any, prompt: Sequence[int], start: int, *, source: str = "server"
) -> list[float]:
    """Log-probs of ``prompt[start:]`` from ``choices[0].prompt_logprobs``."""
    entries = _first_choice(data, source).get("prompt_logprobs")
    if not isinstance(entries, list) or len(entries) != len(prompt):
        got = f"{len(entries)} entries" if isinstance(entries, list) else "no 'prompt_logprobs'"
        raise BackendError(
            f"{source} answered {got} for a prompt of {len(prompt)} tokens; it must support "
            "vLLM's prompt_logprobs"
        )
    out = []
    for pos in range(start, len(prompt)):
        entry = entries[pos]
        item = entry.get(str(prompt[pos])) if isinstance(entry, dict) else None
        if item is None and isinstance(entry, dict):
            item = entry.get(prompt[pos])
        if isinstance(item, dict):
            item = item.get("logprob")
        if not isinstance(item, (int, float)):
            raise BackendError(
                f"{source} gave no log-prob for prompt token {prompt[pos]} at position {pos}"
            )
        out.append(float(item))
    return out


def _first_choice(data: Any, source: str) -> dict:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BackendError(f"{source} answered without a 'choices' list: {str(data)[:200]}")
    return choices[0]


class OpenAICompatibleBackend(LoopThreadClient):
    """Generate and score through an OpenAI-compatible completions server; see the module docstring.

    ``model``: the served model name sent with each request (``None`` leaves it out; vLLM then
    uses its only model). ``extra_body``: more fields merged into every generate request (e.g.
    ``{"repetition_penalty": 1.1}``).
    """

    server_kind = ServerKind(
        name="policy server",
        error=BackendError,
        start_hint="Start one with `vllm serve MODEL` or `creditgym serve-policy --model PATH`",
        blocking_on_own_loop=(
            "generate()/score() called on the backend's own loop; await agenerate()/ascore()"
        ),
        thread_name="openai-backend",
    )

    def __init__(
        self,
        base_url: str,
        model: str | None,
        *,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_concurrency: int = 64,
        on_error: Literal["raise", "completion"] = "raise",
        api_key: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if timeout <= 0 or retries < 0 or backoff < 0 or max_concurrency < 1:
            raise ValueError(
                "OpenAICompatibleBackend needs timeout > 0, retries >= 0, backoff >= 0 and "
                f"max_concurrency >= 1 (got {timeout}, {retries}, {backoff}, {max_concurrency})"
            )
        if on_error not in ("raise", "completion"):
            raise ValueError(f"on_error must be 'raise' or 'completion', got {on_error!r}")
        super().__init__(
            completions_url(base_url),
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            connections=max_concurrency,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
        )
        self.model = model
        self.max_concurrency = max_concurrency
        self.on_error = on_error
        self.extra_body = dict(extra_body or {})
        self._semaphore: asyncio.Semaphore | None = None

    # -- public API -------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Completion]:
        """One completion per prompt, in order (blocking). ``seeds``: one per prompt, sent as
        that prompt's request ``seed`` (instead of ``sampling.seed`` for all of them)."""
        return self._run(self._generate(_ids_list(prompts), sampling, seeds))

    async def agenerate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Completion]:
        """One completion per prompt, in order, awaitable from any event loop."""
        return await self._arun(self._generate(_ids_list(prompts), sampling, seeds))

    def score(
        self, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """Per-token log-probs of each continuation given its prefix (blocking)."""
        return self._run(self._score(*_score_inputs(prefixes, continuations)))

    async def ascore(
        self, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """Per-token log-probs of each continuation given its prefix, awaitable from any loop."""
        return await self._arun(self._score(*_score_inputs(prefixes, continuations)))

    def __repr__(self) -> str:
        return f"OpenAICompatibleBackend({self.url!r}, model={self.model!r})"

    # -- on the private loop ----------------------------------------------------------------

    async def _generate(
        self,
        prompts: list[list[int]],
        sampling: SamplingParams,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Completion]:
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        # One request per prompt, each with its own seed: the server's draws for a prompt then
        # depend on its seed only (vLLM seeds each request's sampler separately).
        per_prompt = [sampling] * len(prompts) if seeds is None else [
            dataclasses.replace(sampling, seed=s) for s in seeds
        ]

        async def one(prompt: list[int], sampling: SamplingParams) -> Completion:
            body = completion_request(self.model, prompt, sampling)
            body.update(self.extra_body)
            try:
                return parse_completion(await self._post(body), source=self.url)
            except BackendError as exc:
                if self.on_error == "raise":
                    raise
                return Completion([], [], "error", error=str(exc))

        return await _gather_or_cancel([one(p, s) for p, s in zip(prompts, per_prompt)])

    async def _score(
        self, prefixes: list[list[int]], continuations: list[list[int]]
    ) -> list[list[float]]:
        async def one(prefix: list[int], continuation: list[int]) -> list[float]:
            if not continuation:
                return []
            body = score_request(self.model, prefix, continuation)
            data = await self._post(body)
            return parse_prompt_logprobs(data, body["prompt"], len(prefix), source=self.url)

        return await _gather_or_cancel([one(p, c) for p, c in zip(prefixes, continuations)])

    async def _post(self, body: dict) -> Any:
        # At most max_concurrency requests in flight, retries included.
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        async with self._semaphore:
            return await self._post_json(body)


async def _gather_or_cancel(coros: list) -> list:
    """All results in order; on the first failure the other requests are cancelled."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _ids_list(prompts: Sequence[Sequence[int]]) -> list[list[int]]:
    if isinstance(prompts, (str, bytes)) or (len(prompts) and isinstance(prompts[0], int)):
        raise TypeError("prompts must be a list of token-id lists, one per prompt")
    return [[int(t) for t in p] for p in prompts]


def _score_inputs(prefixes, continuations) -> tuple[list[list[int]], list[list[int]]]:
    prefixes, continuations = _ids_list(prefixes), _ids_list(continuations)
    if len(prefixes) != len(continuations):
        raise ValueError(
            f"score() got {len(prefixes)} prefixes but {len(continuations)} continuations"
        )
    for i, (p, c) in enumerate(zip(prefixes, continuations)):
        if c and not p:
            raise ValueError(
                f"prefix {i} is empty: the first token of a sequence has no log-prob; start "
                "each prefix with at least one token (e.g. BOS or the chat-template prefix)"
            )
    return prefixes, continuations


__all__ = [
    "BackendError",
    "OpenAICompatibleBackend",
    "completion_request",
    "completions_url",
    "parse_completion",
    "parse_prompt_logprobs",
    "parse_token_id",
    "score_request",
]
