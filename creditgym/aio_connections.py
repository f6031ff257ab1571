"""Connection-level protection for creditgym's aiohttp servers: timeouts, a cap, quiet logs.

aiohttp (3.9 to 3.14 at least) never times out a request body a handler is waiting for and
closes a half-sent request only after its keep-alive timeout, so a client that sends
``Content-Length: 1000`` and then nothing, or half its headers, holds a socket and a file
descriptor as long as it likes; enough of them exhaust the descriptors and the server stops
answering. :class:`~creditgym.aio_settings.ServerSettings` says what a server tolerates,
:class:`ConnectionGuard` enforces it:

- header timeout: a connection must complete its request headers ``header_timeout`` seconds after
  connecting, or after the first byte that follows an idle keep-alive period; else it is closed;
- keep-alive idle timeout: ``keepalive_timeout`` seconds with no new request after an answer
  (aiohttp's own timer);
- body timeout: ``body_timeout`` seconds without a byte of a body the server is reading answers
  408 (enforced where bodies are read, :func:`creditgym.aio_server.read_body`);
- connection cap: at most ``max_connections`` open at once (default: from ``RLIMIT_NOFILE``, see
  :func:`~creditgym.aio_settings.default_max_connections`). At the cap a new connection evicts
  the oldest one that is not being answered (still sending its headers or body, or idle between
  requests), so well-behaved clients are served however many stalled ones pile up; only when
  every open connection has a request in progress is the newcomer answered 503 at once and
  closed. Shutdown closes the connections stalled mid-request at once
  (:meth:`ConnectionGuard.close_stalled`), so they cannot delay it.

:class:`RateLimitedLog` keeps a flood of bad requests from flooding the log: at most
``per_second`` lines a second, then one "suppressed K similar lines" line, and no traceback for
a malformed HTTP message (the client's fault, not the server's).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from creditgym.aio_settings import ServerSettings

log = logging.getLogger("creditgym.http")


class RateLimitedLog(logging.LoggerAdapter):
    """A logger that writes at most ``per_second`` lines a second, then a summary line.

    Lines over the rate are counted, not written; the next line written after a quiet second is
    preceded by "suppressed K similar lines in the last S s". A malformed HTTP message
    (aiohttp's ``HttpProcessingError``) is the client's fault: its line gets the error's text
    instead of a traceback.
    """

    def __init__(
        self,
        logger: logging.Logger,
        per_second: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logger, {})
        self.per_second = per_second
        self._clock = clock
        self._window = clock()
        self._written = 0
        self.suppressed = 0
        """Lines not written in the current window."""
        self._suppressed_since = 0.0

    def log(self, level: int, msg: object, *args: object, **kwargs) -> None:
        if not self.isEnabledFor(level):
            return
        exc = kwargs.get("exc_info")
        if isinstance(exc, tuple):
            exc = exc[1]
        if isinstance(exc, HttpProcessingError):  # a malformed message: say what, no traceback
            kwargs["exc_info"] = None
            msg = f"{msg}: {exc.message or type(exc).__name__}"
        now = self._clock()
        if now - self._window >= 1.0:
            self.flush()
            self._window, self._written = now, 0
        if self._written >= self.per_second:
            if not self.suppressed:
                self._suppressed_since = now
            self.suppressed += 1
            return
        self._written += 1
        self.logger.log(level, msg, *args, **kwargs)

    def flush(self) -> None:
        """Write the "suppressed K similar lines" summary now, if lines were suppressed."""
        if self.suppressed:
            self.logger.warning(
                "suppressed %d similar lines in the last %.1f s",
                self.suppressed,
                self._clock() - self._suppressed_since,
            )
            self.suppressed = 0


class _GuardedHandler(RequestHandler):
    """aiohttp's connection protocol plus the header timeout and the cap of a ConnectionGuard.

    It reads aiohttp internals (``_messages``, ``_current_request``) that have been stable since
    aiohttp 3.8; ``tests/test_aio_server.py`` fails if they change.
    """

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._refused = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._parsed = 0  # request heads parsed so far
        self.reading_body = False
        """True while a handler waits for this connection's request body (evictable then)."""

    @property
    def evictable(self) -> bool:
        """Not being answered: sending its request, reading its body, or idle."""
        return self.reading_body or (self._current_request is None and not self._messages)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self):
            self._refused = True
            transport.write(self._guard.busy_response)  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._guard.forget(self)
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:  # a request's headers are complete
            self._parsed += 1
            self._disarm()
        elif self._header_timer is None and self._current_request is None:
            self._arm_header_timer()  # the first bytes of a request after an idle keep-alive

    def _arm_header_timer(self) -> None:
        delay = self._guard.settings.header_timeout
        self._header_timer = self._loop.call_later(delay, self._headers_late, self._parsed)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self, parsed: int) -> None:
        self._header_timer = None
        if parsed == self._parsed and self._current_request is None and self.transport:
            self._guard.note("header_timeouts", "closed a connection: no complete request "
                             f"headers within {self._guard.settings.header_timeout} s")
            self.force_close()


class ConnectionGuard:
    """Makes the connection protocols of one server and enforces its :class:`ServerSettings`.

    ``counts`` tells what it did: ``header_timeouts``, ``evicted``, ``refused``.
    """

    def __init__(
        self,
        settings: ServerSettings,
        busy_response: Callable[[int, str, str | None], web.Response] | None = None,
    ) -> None:
        self.settings = settings
        self.cap = settings.connection_cap
        self._open: dict[_GuardedHandler, None] = {}  # in connection order: oldest first
        self.counts = {"header_timeouts": 0, "evicted": 0, "refused": 0}
        self.log = RateLimitedLog(log)
        message = (f"server busy: all {self.cap} connections are handling requests; "
                   "try again shortly")
        if busy_response is None:
            body, ctype = json.dumps({"error": message}).encode(), "application/json"
        else:
            answer = busy_response(503, message, None)
            body, ctype = answer.body, answer.content_type  # type: ignore[assignment]
        self.busy_response = (
            f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {ctype}\r\nRetry-After: 1\r\n"
            f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + bytes(body)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def protocol(self, server: web.Server) -> _GuardedHandler:
        """A new connection's protocol (the factory ``loop.create_server`` calls)."""
        return _GuardedHandler(server, self, loop=server._loop, **server._kwargs)

    def admit(self, handler: _GuardedHandler) -> bool:
        """Make room for ``handler`` (evicting a stalled connection if at the cap), or refuse."""
        if len(self._open) >= self.cap:
            victim = next((h for h in self._open if h.evictable), None)
            if victim is None:
                self.note("refused", f"refused a connection (503): all {self.cap} are busy")
                return False
            self._open.pop(victim)
            self.note("evicted", f"at the cap of {self.cap} connections: closed the oldest "
                      "one not being answered to admit a new one")
            victim.force_close()
        self._open[handler] = None
        return True

    def close_stalled(self) -> int:
        """Close every connection that is not being answered (on shutdown: nothing to wait for)."""
        stalled = [h for h in self._open if h.evictable]
        for handler in stalled:
            handler.force_close()
        return len(stalled)

    def forget(self, handler: _GuardedHandler) -> None:
        self._open.pop(handler, None)

    def note(self, count: str, message: str) -> None:
        self.counts[count] += 1
        self.log.info(message)


class GuardedSite(web.TCPSite):
    """A ``TCPSite`` whose connections are made by a :class:`ConnectionGuard`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner, host, port, backlog=1024)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self.guard.protocol(server), self._host, self._port, backlog=self._backlog
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


def handler_options(settings: ServerSettings) -> dict:
    """The aiohttp ``AppRunner`` keyword arguments that go with ``settings``."""
    return {
        "access_log": None,
        "keepalive_timeout": settings.keepalive_timeout,
        "shutdown_timeout": settings.shutdown_timeout,
        # After an early answer (413, 408) aiohttp reads and drops the rest of the body this
        # long so the client sees the answer; a stalled client must not hold it for 10 s.
        "lingering_time": 1.0,
        "logger": RateLimitedLog(log),
    }


__all__ = [
    "ConnectionGuard",
    "GuardedSite",
    "RateLimitedLog",
    "ServerSettings",
    "default_max_connections",
    "handler_options",
]
