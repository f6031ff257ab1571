"""``creditgym serve-policy``: a policy backend behind vLLM's flavour of the OpenAI completions API.

It lets :class:`~creditgym.agents.openai_backend.OpenAICompatibleBackend` be tested over real
HTTP without vLLM, and gives users without a GPU a local server (a transformers model on CPU).
Endpoints:

- ``POST /v1/completions``: ``prompt`` is token ids (``[1, 2, 3]``), text (tokenised with the
  model's tokenizer; ``add_special_tokens`` as in vLLM) or a list of either (one choice each).
  Honoured: ``max_tokens`` (16 by default), ``temperature``, ``top_p``, ``top_k``, ``seed``,
  ``stop``, ``stop_token_ids``, ``logprobs`` (0 or 1: only the sampled token's
  log-prob is known), ``return_tokens_as_token_ids``, ``return_token_ids``, ``prompt_logprobs`` (0
  or 1: only the prompt token's own log-prob), ``skip_special_tokens``,
  ``include_stop_str_in_output``. The answer has vLLM's shape: ``choices[i].text``,
  ``.logprobs.tokens/.token_logprobs/.top_logprobs/.text_offset``, ``.finish_reason``,
  ``.prompt_logprobs`` (first entry null), optionally ``.token_ids``/``.prompt_token_ids``, and
  ``usage``. As vLLM does, generation also stops at the tokenizer's end-of-sequence ids
  (``ignore_eos`` is not supported), and the stop string is cut from ``text`` (never from the
  token ids) unless ``include_stop_str_in_output``.
- ``GET /v1/models`` (the one served model) and ``GET /health`` (``{"status": "ok", "model",
  "backend", "batches", "prompts", "waiting"}``: backend calls made, prompts served, prompts
  queued).

Everything else is a 4xx JSON error ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's
form) naming what is wrong: ``n``/``best_of`` other than 1, ``stream``, ``echo``, sampling knobs
this server does not implement (penalties, ``logit_bias``, ``min_p``, ...), token ids outside the
vocabulary, prompts that do not fit the context. Unknown keys are ignored, as vLLM ignores them.
A failing backend gives 500 with its error; the server keeps serving either way.

Batching: requests wait in a queue per sampling setting while the backend works on the previous
batch, then go to the backend together as one ``generate`` call in a single worker thread (the
model runs one batch at a time); prompt log-prob requests are batched into ``score`` calls the
same way. Seeded requests are never merged, so a seed reproduces the same draw however busy the
server is. The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from creditgym.agents.backend import Completion, PolicyBackend
from creditgym.agents.policy_protocol import (
    BadRequest,
    CompletionJob,
    backend_limits,
    format_answer,
    parse_request,
)
from creditgym.aio_server import (
    BackgroundAppServer,
    json_body,
    json_error_middleware,
    read_body,
    serve_app,
)

log = logging.getLogger(__name__)


class RequestBatcher:
    """Coalesces concurrent requests into batched ``generate``/``score`` calls on one thread.

    Work waits in a queue per key (a sampling setting, or "score"); whenever the worker thread is
    free, the queue whose oldest item waited longest is sent, up to ``max_batch`` prompts. Results
    go back to each waiting request in order, so batching never mixes requests up.
    """

    def __init__(self, backend: PolicyBackend, *, max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.backend = backend
        self.max_batch = max_batch
        self._queues: dict[Any, list[tuple[Any, asyncio.Future]]] = {}
        self._busy = False
        self._seeded = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="policy-backend")
        self.batches = 0
        """Backend calls made so far."""
        self.prompts = 0
        """Prompts generated or scored so far."""

    @property
    def waiting(self) -> int:
        """Prompts queued for the next backend calls (not counting the running one)."""
        return sum(len(queue) for queue in self._queues.values())

    async def generate(self, prompt: list[int], sampling) -> Completion:
        if sampling.seed is not None:  # a seeded draw must not depend on its batch mates
            self._seeded += 1
            key: Any = ("generate", sampling, self._seeded)
        else:
            key = ("generate", sampling)
        return await self._submit(key, prompt)

    async def score(self, prefix: list[int], continuation: list[int]) -> list[float]:
        return await self._submit(("score",), (prefix, continuation))

    async def _submit(self, key: Any, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, []).append((item, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        if self._busy or not self._queues:
            return
        key = next(iter(self._queues))  # dicts keep insertion order: the oldest queue first
        queue = self._queues.pop(key)
        batch = [job for job in queue[: self.max_batch] if not job[1].done()]
        if len(queue) > self.max_batch:  # the rest goes to the back of the line
            self._queues[key] = queue[self.max_batch :]
        if not batch:
            self._dispatch()
            return
        self._busy = True
        asyncio.get_running_loop().create_task(self._run(key, batch))

    async def _run(self, key: Any, batch: list[tuple[Any, asyncio.Future]]) -> None:
        items = [item for item, _ in batch]
        loop = asyncio.get_running_loop()
        try:
            try:
                if key[0] == "score":
                    results = await loop.run_in_executor(
                        self._executor,
                        self.backend.score,
                        [p for p, _ in items],
                        [c for _, c in items],
                    )
                else:
                    results = await loop.run_in_executor(
                        self._executor, self.backend.generate, items, key[1]
                    )
                if len(results) != len(items):
                    raise RuntimeError(
                        f"backend returned {len(results)} results for {len(items)} prompts"
                    )
            except Exception as exc:  # every waiting request learns what happened
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            self.batches += 1
            self.prompts += len(items)
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
        finally:
            self._busy = False
            self._dispatch()

    def close(self) -> None:
        """Stop the worker thread (waiting for a running batch)."""
        self._executor.shutdown(wait=True)


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    """An error answer in OpenAI's form."""
    kind = {
        400: "BadRequestError",
        404: "NotFoundError",
        405: "MethodNotAllowed",
        413: "RequestTooLarge",
    }.get(status, "InternalServerError" if status >= 500 else "Error")
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": param, "code": status}},
        status=status,
    )


def make_app(
    backend: PolicyBackend,
    model_name: str,
    *,
    max_batch_size: int = 32,
    max_prompts: int = 64,
    max_body_bytes: int = 8 << 20,
) -> web.Application:
    """The aiohttp application serving ``backend`` as ``model_name``.

    ``max_batch_size``: most prompts in one backend call; ``max_prompts``: prompts in one request;
    ``max_body_bytes``: largest request body. The app does not close ``backend``.
    """
    batcher = RequestBatcher(backend, max_batch=max_batch_size)
    tokenizer = getattr(backend, "tokenizer", None)
    limits = backend_limits(backend, max_prompts=max_prompts)
    created = int(time.time())

    async def completions(request: web.Request) -> web.Response:
        body = await read_body(request, max_body_bytes)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        if isinstance(payload, dict) and payload.get("model") not in (None, model_name):
            raise BadRequest(
                f"The model `{payload['model']}` does not exist; this server serves `{model_name}`",
                status=404,
                param="model",
            )
        job = parse_request(payload, **limits)
        results = await asyncio.gather(*(_complete(batcher, job, p) for p in job.prompts))
        return json_body(format_answer(model_name, job, results, tokenizer))

    async def models(request: web.Request) -> web.Response:
        card: dict[str, Any] = {"id": model_name, "object": "model", "created": created}
        card["owned_by"] = "creditgym"
        if limits["max_context"]:
            card["max_model_len"] = limits["max_context"]
        return web.json_response({"object": "list", "data": [card]})

    async def health(request: web.Request) -> web.Response:
        body = {"status": "ok", "model": model_name, "backend": type(backend).__name__}
        counts = {"batches": batcher.batches, "prompts": batcher.prompts, "waiting": batcher.waiting}
        return web.json_response(body | counts)

    async def on_cleanup(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, batcher.close)

    json_errors = json_error_middleware(
        _error,
        max_body_bytes=max_body_bytes,
        routes="POST /v1/completions, GET /v1/models and GET /health",
        failure="the policy backend failed",
        logger=log,
        bad_request=BadRequest,
    )
    app = web.Application(middlewares=[json_errors], client_max_size=max_body_bytes)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.on_cleanup.append(on_cleanup)
    return app


async def _complete(
    batcher: RequestBatcher, job: CompletionJob, prompt: list[int]
) -> tuple[Completion, list[float] | None]:
    """One prompt's completion (and prompt log-probs when asked), through the batcher."""
    scoring = None
    if job.prompt_logprobs and len(prompt) > 1:
        scoring = batcher.score(prompt[:1], prompt[1:])
    completion, prompt_lps = await asyncio.gather(
        batcher.generate(prompt, job.sampling), scoring or _none()
    )
    if completion.finish_reason == "error":
        raise RuntimeError(completion.error or "generation failed")
    if job.prompt_logprobs and prompt_lps is None:
        prompt_lps = []
    return completion, prompt_lps


async def _none() -> None:
    return None


def serve(
    backend: PolicyBackend,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    **app_options: Any,
) -> None:
    """Serve ``backend`` until interrupted (blocking)."""
    app = make_app(backend, model_name, **app_options)
    banner = f"serving {model_name!r} on http://{host}:{port}/v1 (Ctrl-C to stop)"
    serve_app(app, host, port, banner)


class BackgroundPolicyServer(BackgroundAppServer):
    """Runs :func:`make_app` on its own event-loop thread: for tests, benchmarks and notebooks.

    ``port=0`` picks a free port; ``url`` is the base URL once started (give it to
    ``OpenAICompatibleBackend``). Use as a context manager or call ``start()`` / ``stop()``. The
    backend is not closed.
    """

    thread_name = "policy-server"

    def __init__(
        self,
        backend: PolicyBackend,
        model_name: str = "policy",
        host: str = "127.0.0.1",
        port: int = 0,
        **app_options: Any,
    ) -> None:
        super().__init__(host, port)
        self.backend = backend
        self.model_name = model_name
        self.app_options = app_options

    def _build_app(self) -> web.Application:
        return make_app(self.backend, self.model_name, **self.app_options)


def add_serve_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``creditgym serve-policy``."""
    parser.add_argument("--model", required=True, help="Hugging Face model folder (or hub id)")
    parser.add_argument(
        "--served-model-name",
        default=None,
        help="name clients send as 'model' (default: the folder's name)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument(
        "--dtype", default=None, help="torch dtype, e.g. bfloat16 (default: model's)"
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=32,
        help="most prompts in one backend call (default 32)",
    )
    parser.add_argument(
        "--max-context",
        type=int,
        default=None,
        help="longest prompt + completion in tokens (default: the model's)",
    )


def run_serve_policy(args: argparse.Namespace) -> int:
    """Build a ``TransformersBackend`` from ``args`` and serve it until interrupted."""
    from creditgym.agents.hf_backend import TransformersBackend

    backend = TransformersBackend(
        args.model,
        device=args.device,
        dtype=args.dtype,
        max_batch_size=args.max_batch_size,
        max_context=args.max_context,
    )
    name = args.served_model_name or Path(str(args.model).rstrip("/")).name
    try:
        serve(backend, name, host=args.host, port=args.port, max_batch_size=args.max_batch_size)
    finally:
        backend.close()
    return 0


__all__ = [
    "BackgroundPolicyServer",
    "RequestBatcher",
    "add_serve_policy_arguments",
    "make_app",
    "run_serve_policy",
    "serve",
]
