"""Server plumbing shared by creditgym's aiohttp servers (``serve-retriever``, ``serve-policy``).

- :func:`json_error_middleware`: every failure becomes a JSON error in the server's own form:
  a :class:`BadRequest` (or the server's own bad-request type) with its status, an unknown path
  404 naming the paths served, a wrong method 405 naming the allowed ones, a body over the limit
  413, any other HTTP error with its reason, and an exception from the backend 500 (logged; the
  server keeps serving).
- :func:`read_body`: the request body, refused with 413 before reading when its declared length
  is over the limit (aiohttp's ``client_max_size`` catches undeclared ones while reading).
- :func:`json_body`: a UTF-8 JSON response that keeps non-ASCII text as is.
- :class:`BackgroundAppServer`: runs an app on its own event-loop thread (tests, benchmarks,
  notebooks); :func:`serve_app` runs one in the foreground until interrupted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web
from typing_extensions import Self  # typing.Self needs Python 3.11

ErrorResponse = Callable[[int, str, "str | None"], web.Response]
"""Builds a server's error answer from (status, message, offending parameter or None)."""


class BadRequest(Exception):
    """A request that fails validation; the message goes back to the client."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


def json_error_middleware(
    error: ErrorResponse,
    *,
    max_body_bytes: int,
    routes: str,
    failure: str,
    logger: logging.Logger,
    bad_request: type[Exception] = BadRequest,
) -> Any:
    """The middleware that turns every failure into ``error(status, message, param)``.

    ``routes`` lists what the server answers (``"POST /retrieve and GET /health"``) for the 404
    message; ``failure`` starts the 500 message (``"retrieval failed"``) and the log line.
    ``bad_request`` exceptions carry ``status`` and optionally ``param``.
    """

    @web.middleware
    async def json_errors(request: web.Request, handler):
        try:
            return await handler(request)
        except bad_request as exc:
            return error(exc.status, str(exc), getattr(exc, "param", None))
        except web.HTTPRequestEntityTooLarge:
            return error(
                413, f"request body is larger than the limit of {max_body_bytes} bytes", None
            )
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods - {"HEAD"})) or "none"
            return error(
                405,
                f"method {request.method} is not allowed on {request.path}; use {allowed}",
                None,
            )
        except web.HTTPNotFound:
            return error(
                404, f"no such path {request.path!r}; this server answers {routes}", None
            )
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error(exc.status, exc.reason, None)
            raise
        except Exception as exc:  # a backend failure: say so, keep serving
            logger.exception(failure)
            return error(500, f"{failure}: {type(exc).__name__}: {exc}", None)

    return json_errors


async def read_body(request: web.Request, max_body_bytes: int) -> bytes:
    """The request body; 413 at once when its declared length is over ``max_body_bytes``."""
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise web.HTTPRequestEntityTooLarge(
            max_size=max_body_bytes, actual_size=request.content_length
        )
    return await request.read()


def json_body(data: Any) -> web.Response:
    """``data`` as a UTF-8 JSON answer (non-ASCII text kept as is, not ``\\u`` escaped)."""
    return web.Response(
        body=json.dumps(data, ensure_ascii=False).encode("utf-8"),
        content_type="application/json",
    )


def serve_app(app: web.Application, host: str, port: int, banner: str) -> None:
    """Print ``banner`` and serve ``app`` until interrupted (blocking); no access log."""
    print(banner, flush=True)
    web.run_app(app, host=host, port=port, access_log=None, print=None)


class BackgroundAppServer:
    """Runs the app of :meth:`_build_app` on its own event-loop thread.

    ``port=0`` picks a free port; ``url`` is the base URL once started. Use as a context manager
    or call ``start()`` / ``stop()``. Subclasses build the app and name the thread.
    """

    thread_name = "aio-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
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
            runner: web.AppRunner | None = None
            try:
                runner = web.AppRunner(self._build_app(), access_log=None)
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.TCPSite(runner, self.host, self.port).start())
                self.port = runner.addresses[0][1]
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                if runner is not None:
                    loop.run_until_complete(runner.cleanup())
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=main, name=self.thread_name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "BackgroundAppServer",
    "BadRequest",
    "json_body",
    "json_error_middleware",
    "read_body",
    "serve_app",
]
