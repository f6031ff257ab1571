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
  "backend", "batches", "prompts", "waiting", "running", "steps"}``: backend calls made, prompts
  served, prompts queued, prompts being decoded, decoding steps run).

Everything else is a 4xx JSON error ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's
form) naming what is wrong: ``n``/``best_of`` other than 1, ``stream``, ``echo``, sampling knobs
this server does not implement (penalties, ``logit_bias``, ``min_p``, ...), token ids outside the
vocabulary, prompts that do not fit the context. Unknown keys are ignored, as vLLM ignores them.
A failing backend gives 500 with its error; the server keeps serving either way.

Batching and fairness (:mod:`creditgym.agents.request_batcher`): requests wait in a queue per
sampling setting, then go to the backend together (up to ``max_batch_size`` prompts) on a single
worker thread; prompt log-prob requests are batched into ``score`` calls the same way. Seeded
requests are never merged, so a seed reproduces the same draw however busy the server is. With
the transformers backend a batch advances at most ``step_tokens`` tokens per backend call and
batches take turns, so a short request is answered while a long one runs (it waits one decoding
step, not the whole long request); the answers are bit-identical to uninterrupted generation.
A client that disconnects has its queued prompts dropped and its running rows stopped at the
next decoding step; on shutdown (SIGTERM) every request is failed with 503 and the running
slice stops within one decoding step. The server binds 127.0.0.1 unless told otherwise.

Access and limits (:mod:`creditgym.aio_server`): only requests addressed to localhost, 127.0.0.1,
[::1] or the bound address are answered (403 otherwise; ``--allow-host NAME``, repeatable, exposes
the server deliberately), POST bodies must be ``application/json`` (415), JSON nested more than
32 levels is a 400, clients that stall while sending headers or body are dropped after
``--header-timeout`` / ``--body-timeout`` seconds (408 for a body), open connections are capped
(stalled ones evicted first), and SIGTERM ends the server within seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from creditgym.agents.backend import Completion, PolicyBackend
from creditgym.agents.request_batcher import RequestBatcher
from creditgym.agents.policy_protocol import (
    BadRequest,
    CompletionJob,
    backend_limits,
    format_answer,
    parse_request,
)
from creditgym.aio_server import (
    BackgroundAppServer,
    ServerSettings,
    add_server_arguments,
    add_shutdown_hook,
    json_app,
    json_body,
    parse_json,
    read_body,
    serve_app,
    settings_from_args,
)
from creditgym.errors import GenerationCancelled

log = logging.getLogger(__name__)


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    """An error answer in OpenAI's form."""
    kind = {
        400: "BadRequestError",
        403: "PermissionDeniedError",
        404: "NotFoundError",
        405: "MethodNotAllowed",
        408: "RequestTimeout",
        413: "RequestTooLarge",
        415: "UnsupportedMediaType",
        503: "ServiceUnavailable",
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
    step_tokens: int = 16,
    max_running: int = 256,
) -> web.Application:
    """The aiohttp application serving ``backend`` as ``model_name``.

    ``max_batch_size``: most prompts in one backend call; ``max_prompts``: prompts in one request;
    ``max_body_bytes``: largest request body; ``step_tokens``: most tokens a batch advances
    before other batches get a turn; ``max_running``: most prompts decoded at once. The app does
    not close ``backend``.
    """
    batcher = RequestBatcher(
        backend, max_batch=max_batch_size, step_tokens=step_tokens, max_running=max_running
    )
    tokenizer = getattr(backend, "tokenizer", None)
    limits = backend_limits(backend, max_prompts=max_prompts)
    created = int(time.time())

    async def completions(request: web.Request) -> web.Response:
        body = await read_body(request, max_body_bytes)
        payload = parse_json(body)  # 400 for invalid or too deeply nested JSON
        if isinstance(payload, dict) and payload.get("model") not in (None, model_name):
            raise BadRequest(
                f"The model `{payload['model']}` does not exist; this server serves `{model_name}`",
                status=404,
                param="model",
            )
        job = parse_request(payload, **limits)
        work = asyncio.ensure_future(
            asyncio.gather(*(_complete(batcher, job, p) for p in job.prompts))
        )
        try:
            results = await _unless_disconnected(request, work)
        except GenerationCancelled as exc:
            return _error(503, str(exc))
        finally:
            work.cancel()  # a no-op once done; else the prompts leave the queue and the batch
        if results is None:  # nobody is listening: the answer goes nowhere
            return web.Response(status=499, reason="Client Closed Request")
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
        counts |= {"running": batcher.running, "steps": batcher.steps}
        return web.json_response(body | counts)

    async def on_cleanup(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, batcher.close)

    app = json_app(
        _error,
        max_body_bytes=max_body_bytes,
        routes="POST /v1/completions, GET /v1/models and GET /health",
        failure="the policy backend failed",
        logger=log,
    )
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    add_shutdown_hook(app, batcher.cancel_all)  # waiting requests answer 503 at once
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


DISCONNECT_POLL_S = 0.05
"""How often a waiting request checks that its client is still connected."""


async def _unless_disconnected(request: web.Request, work: asyncio.Future) -> Any:
    """``work``'s result, or None (with ``work`` cancelled) once the client has gone away.

    aiohttp does not cancel handlers when their client leaves (``handler_cancellation`` is off by
    default, and the app does not own that setting), so the connection is polled."""
    while True:
        done, _ = await asyncio.wait({work}, timeout=DISCONNECT_POLL_S)
        if done:
            return work.result()
        transport = request.transport
        if transport is None or transport.is_closing():
            work.cancel()
            return None


def serve(
    backend: PolicyBackend,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServerSettings | None = None,
    **app_options: Any,
) -> None:
    """Serve ``backend`` until SIGTERM/SIGINT (blocking); ``settings``: timeouts, connection cap
    and allowed ``Host`` names (see :mod:`creditgym.aio_server`)."""
    app = make_app(backend, model_name, **app_options)
    banner = f"serving {model_name!r} on http://{host}:{port}/v1 (Ctrl-C to stop)"
    serve_app(app, host, port, banner, settings)


class BackgroundPolicyServer(BackgroundAppServer):
    """Runs :func:`make_app` on its own event-loop thread: for tests, benchmarks and notebooks.

    ``port=0`` picks a free port; ``url`` is the base URL once started (give it to
    ``OpenAICompatibleBackend``); ``settings`` as for :func:`serve`. Use as a context manager or
    call ``start()`` / ``stop()``. The backend is not closed.
    """

    thread_name = "policy-server"

    def __init__(
        self,
        backend: PolicyBackend,
        model_name: str = "policy",
        host: str = "127.0.0.1",
        port: int = 0,
        settings: ServerSettings | None = None,
        **app_options: Any,
    ) -> None:
        super().__init__(host, port, settings)
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
    add_server_arguments(parser)  # --allow-host, timeouts, --max-connections


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
        serve(backend, name, host=args.host, port=args.port, settings=settings_from_args(args),
              max_batch_size=args.max_batch_size)
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
