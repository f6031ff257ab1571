"""Server plumbing shared by creditgym's aiohttp servers (``serve-retriever``, ``serve-policy``).

Contract of every server built here (:func:`json_app`, served by :func:`serve_app` or
:class:`BackgroundAppServer`):

- Local only by default. A request whose ``Host`` header names anything but localhost,
  127.0.0.1, [::1] or the address the connection arrived on is refused 403, so a web page cannot
  reach the server through DNS rebinding; ``--allow-host NAME`` (repeatable, ``*`` for any)
  exposes it deliberately. A request without ``Host`` (HTTP/1.0 tools; browsers always send it)
  is served.
- JSON only: a POST whose ``Content-Type`` is not ``application/json`` is refused 415, so a web
  page cannot fire a CORS "simple" (form or text) request at it.
- Every failure is a JSON error in the server's own form: a :class:`BadRequest` with its status
  (400, 408, 413, 415, 422, ...), an unknown path 404 naming the paths served, a wrong method 405
  naming the allowed ones, a body over the limit 413, a body that stalls 408, JSON nested deeper
  than :data:`MAX_JSON_DEPTH` 400; 5xx only for the server's own faults (a backend exception:
  500, logged with its traceback; a generation cancelled by shutdown: 503). Each refused request
  is one log line (no traceback), at most 10 lines a second, then a "suppressed K similar lines"
  summary (:class:`~creditgym.aio_connections.RateLimitedLog`). The server keeps serving.
- Slow or stalled clients are dropped and the number of open connections is capped; see
  :mod:`creditgym.aio_connections` and :class:`ServerSettings` (header, body and keep-alive
  timeouts, ``max_connections``).
- Shutdown (SIGTERM or SIGINT for :func:`serve_app`, ``stop()`` for the background server): the
  port closes, idle connections and those stalled mid-request close, hooks added with
  :func:`add_shutdown_hook` run (the policy server cancels generation there), in-flight requests
  get ``shutdown_timeout`` seconds, then are cancelled, then the app's ``on_cleanup`` runs.
  :func:`serve_app` ends the process ``exit_deadline`` seconds after the signal whatever is still
  running; a second signal ends it at once.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web
from typing_extensions import Self  # typing.Self needs Python 3.11

from creditgym.aio_connections import ConnectionGuard, GuardedSite, RateLimitedLog, handler_options
from creditgym.aio_settings import (
    SETTINGS_KEY,
    ServerSettings,
    add_server_arguments,
    check_content_type,
    check_host,
    settings_from_args,
)
from creditgym.errors import BadRequest, GenerationCancelled
from creditgym.json_values import MAX_JSON_DEPTH, parse_json  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

ErrorResponse = Callable[[int, str, "str | None"], web.Response]
"""Builds a server's error answer from (status, message, offending parameter or None)."""

_ERROR_KEY = web.AppKey("creditgym_error_response", object)


def json_error_middleware(
    error: ErrorResponse,
    *,
    max_body_bytes: int,
    routes: str,
    failure: str,
    logger: logging.Logger,
    bad_request: type[Exception] = BadRequest,
) -> Any:
    """The middleware that checks ``Host`` and ``Content-Type`` and turns every failure into
    ``error(status, message, param)`` (see the module docstring).

    ``routes`` lists what the server answers (``"POST /retrieve and GET /health"``) for the 404
    message; ``failure`` starts the 500 message (``"retrieval failed"``) and its log line.
    ``bad_request`` exceptions carry ``status`` and optionally ``param``.
    """
    quiet = RateLimitedLog(logger)

    @web.middleware
    async def json_errors(request: web.Request, handler):
        param = None
        try:
            check_host(request)
            check_content_type(request)
            return await handler(request)
        except bad_request as exc:
            status, message = exc.status, str(exc)  # type: ignore[attr-defined]
            param = getattr(exc, "param", None)
        except web.HTTPRequestEntityTooLarge:
            status = 413
            message = f"request body is larger than the limit of {max_body_bytes} bytes"
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods - {"HEAD"})) or "none"
            status = 405
            message = f"method {request.method} is not allowed on {request.path}; use {allowed}"
        except web.HTTPNotFound:
            status, message = 404, f"no such path {request.path!r}; this server answers {routes}"
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            status, message = exc.status, exc.reason
        except GenerationCancelled as exc:  # shutting down: not the client's fault, nor a bug
            quiet.warning("%s %s: 503 %s", request.method, request.path, exc)
            return error(503, str(exc), None)
        except ConnectionError:  # the client left: there is no one to answer
            raise
        except Exception as exc:  # a backend failure: say so, keep serving
            quiet.exception("%s %s: %s", request.method, request.path, failure)
            return error(500, f"{failure}: {type(exc).__name__}: {exc}", None)
        quiet.warning("%s %s from %s: %d %.300s", request.method, request.path,
                      request.remote, status, message)
        return error(status, message, param)

    return json_errors


def json_app(
    error: ErrorResponse,
    *,
    max_body_bytes: int,
    routes: str,
    failure: str,
    logger: logging.Logger,
) -> web.Application:
    """An empty application with :func:`json_error_middleware` and the body limit; add routes."""
    middleware = json_error_middleware(
        error, max_body_bytes=max_body_bytes, routes=routes, failure=failure, logger=logger
    )
    app = web.Application(middlewares=[middleware], client_max_size=max_body_bytes)
    app[_ERROR_KEY] = error  # the connection cap answers 503 in the server's own form
    return app


async def read_body(
    request: web.Request, max_body_bytes: int, timeout: float | None = None
) -> bytes:
    """The request body: 413 at once when its declared length is over ``max_body_bytes`` (or
    when it grows over it), 408 when no byte arrives for ``timeout`` seconds (default: the
    server's ``body_timeout``)."""
    declared = request.content_length
    if declared is not None and declared > max_body_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_body_bytes, actual_size=declared)
    if timeout is None:
        timeout = getattr(request.app.get(SETTINGS_KEY), "body_timeout", 10.0)
    protocol = request.protocol
    chunks: list[bytes] = []
    size = 0
    setattr(protocol, "reading_body", True)  # a connection stalled here may be evicted
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(request.content.readany(), timeout)
            except asyncio.TimeoutError:
                raise BadRequest(
                    f"request body stalled: no data for {timeout:g} s after {size} of "
                    f"{declared if declared is not None else 'an unknown number of'} bytes; "
                    "send the whole body without pausing",
                    status=408,
                ) from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > max_body_bytes:
                raise web.HTTPRequestEntityTooLarge(max_size=max_body_bytes, actual_size=size)
            chunks.append(chunk)
    finally:
        setattr(protocol, "reading_body", False)


def json_body(data: Any) -> web.Response:
    """``data`` as a UTF-8 JSON answer (non-ASCII text kept as is, not ``\\u`` escaped)."""
    return web.Response(
        body=json.dumps(data, ensure_ascii=False).encode("utf-8"),
        content_type="application/json",
    )


def add_shutdown_hook(app: web.Application, hook: Callable[[], Any]) -> None:
    """Run ``hook()`` (sync or async) when the server starts shutting down.

    It runs after the port and the idle connections closed and before in-flight requests get
    ``shutdown_timeout`` seconds to finish: the place to cancel long work (the policy server
    cancels generation, so waiting requests end with ``GenerationCancelled``, answered 503).
    A hook that raises is logged; the other hooks still run.
    """

    async def run(app: web.Application) -> None:
        try:
            result = hook()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("shutdown hook %r failed", hook)

    app.on_shutdown.append(run)


async def _start(
    app: web.Application, host: str, port: int, settings: ServerSettings
) -> tuple[web.AppRunner, ConnectionGuard, int]:
    """Bind ``app`` on (host, port) behind a ConnectionGuard: (runner, guard, bound port)."""
    app[SETTINGS_KEY] = settings
    guard = ConnectionGuard(settings, app.get(_ERROR_KEY))  # type: ignore[arg-type]

    async def close_stalled(app: web.Application) -> None:
        guard.close_stalled()  # a client stalled mid-request must not hold up the shutdown

    app.on_shutdown.insert(0, close_stalled)
    runner = web.AppRunner(app, **handler_options(settings))
    await runner.setup()
    site = GuardedSite(runner, host, port, guard)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, guard, site.port


def _exit_now(message: str, status: int) -> None:
    sys.stderr.write(f"creditgym: {message}\n")
    sys.stderr.flush()
    os._exit(status)


def serve_app(
    app: web.Application,
    host: str,
    port: int,
    banner: str,
    settings: ServerSettings | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT (blocking), then shut down as the module says.

    ``banner`` is printed once the port is bound. No access log.
    """
    settings = settings or ServerSettings()
    watchdog: threading.Timer | None = None
    if settings.exit_deadline is not None:
        # A backend call that ignores cancellation must not keep the process alive after a
        # signal: this timer, started by the signal, ends the process at the deadline.
        watchdog = threading.Timer(
            settings.exit_deadline,
            _exit_now,
            (f"shutdown did not finish within {settings.exit_deadline:g} s of the signal; "
             "exiting now", 1),
        )
        watchdog.daemon = True

    async def main() -> None:
        runner, guard, _ = await _start(app, host, port, settings)
        print(banner, flush=True)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal() -> None:
            if watchdog is not None:
                watchdog.start()
            for sig in _SIGNALS:
                loop.add_signal_handler(sig, _exit_now, "second signal: exiting now", 130)
            stop.set()

        for sig in _SIGNALS:
            loop.add_signal_handler(sig, on_signal)
        await stop.wait()
        try:
            await runner.cleanup()
        finally:
            guard.log.flush()

    try:
        asyncio.run(main())
    finally:
        if watchdog is not None:
            watchdog.cancel()


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BackgroundAppServer:
    """Runs the app of :meth:`_build_app` on its own event-loop thread.

    ``port=0`` picks a free port; ``url`` is the base URL once started; ``guard`` (the
    :class:`~creditgym.aio_connections.ConnectionGuard`) counts timeouts, evictions and refusals.
    Use as a context manager or call ``start()`` / ``stop()``. Subclasses build the app and name
    the thread.
    """

    thread_name = "aio-server"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, settings: ServerSettings | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.settings = settings or ServerSettings()
        self.guard: ConnectionGuard | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _build_app(self) -> web.Application:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Start serving; returns once the port is bound (raises what binding raised)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                runner, self.guard, self.port = loop.run_until_complete(
                    _start(self._build_app(), self.host, self.port, self.settings)
                )
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            try:
                loop.run_until_complete(runner.cleanup())
            finally:
                self.guard.log.flush()
                loop.close()

        self._thread = threading.Thread(target=main, name=self.thread_name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def stop(self) -> None:
        """Shut down (as :func:`serve_app` does on a signal) and join the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "MAX_JSON_DEPTH",
    "BackgroundAppServer",
    "BadRequest",
    "ServerSettings",
    "add_server_arguments",
    "add_shutdown_hook",
    "json_app",
    "json_body",
    "json_error_middleware",
    "parse_json",
    "read_body",
    "serve_app",
    "settings_from_args",
]
