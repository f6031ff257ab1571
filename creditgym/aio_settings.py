"""What a creditgym server tolerates and whom it answers: :class:`ServerSettings`, its CLI
options (:func:`add_server_arguments`), and the per-request access checks.

- :func:`check_host`: a request whose ``Host`` header names anything but localhost, 127.0.0.1,
  [::1], the address the connection arrived on, or a name of ``allowed_hosts`` (``--allow-host``,
  ``*`` for any) is refused 403: a web page must not reach a local server through DNS rebinding.
  A request without ``Host`` (HTTP/1.0 tools; browsers always send one) passes.
- :func:`check_content_type`: a POST whose ``Content-Type`` is not ``application/json`` is refused
  415, so a web page cannot fire a CORS "simple" (form or text) request at the server.
"""

from __future__ import annotations

import argparse
import resource
from dataclasses import dataclass, field

from aiohttp import hdrs, web

from creditgym.errors import BadRequest, ConfigError

SETTINGS_KEY = web.AppKey("creditgym_server_settings", object)
"""Where a served app keeps its :class:`ServerSettings` (set when serving starts)."""

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def default_max_connections() -> int:
    """The connection cap when none is given: 90% of the open-file limit, at most 10,000.

    The rest of the descriptors stay free for the backend (index files, model weights, logs), and
    asyncio's accept loop never meets ``EMFILE``.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, soft - max(64, soft // 10)))


@dataclass(frozen=True)
class ServerSettings:
    """How long a server waits for clients, how many it holds, and who may call it."""

    header_timeout: float = 5.0
    """Seconds a connection has to send complete request headers (from connecting, or from its
    first byte after an idle keep-alive period)."""
    body_timeout: float = 10.0
    """Seconds without a byte of a request body before the request is answered 408."""
    keepalive_timeout: float = 30.0
    """Seconds an idle keep-alive connection stays open (clients' pools drop theirs sooner)."""
    max_connections: int | None = None
    """Most connections open at once; None: :func:`default_max_connections`."""
    shutdown_timeout: float = 3.0
    """Seconds in-flight requests get to finish on shutdown before they are cancelled."""
    exit_deadline: float | None = 8.0
    """Seconds after SIGTERM/SIGINT after which ``serve_app`` ends the process whatever is still
    running (a backend call that ignores cancellation); None: wait forever."""
    allowed_hosts: tuple[str, ...] = field(default=())
    """``Host`` names accepted besides the bound address and localhost/127.0.0.1/[::1]
    (``--allow-host``); ``"*"`` accepts any."""

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keepalive_timeout", "shutdown_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"ServerSettings.{name} must be > 0 seconds, got {value}")
        if self.exit_deadline is not None and not self.exit_deadline > 0:
            raise ConfigError(
                "ServerSettings.exit_deadline must be > 0 seconds or None, got "
                f"{self.exit_deadline}"
            )
        if self.max_connections is not None and self.max_connections < 1:
            raise ConfigError(
                f"ServerSettings.max_connections must be >= 1, got {self.max_connections}"
            )
        if isinstance(self.allowed_hosts, str):
            raise ConfigError("ServerSettings.allowed_hosts must be a tuple of host names")

    @property
    def connection_cap(self) -> int:
        """``max_connections``, or the default from the open-file limit."""
        return self.max_connections or default_max_connections()


def _host_name(value: str) -> str:
    """The host part of a ``Host`` header or ``--allow-host`` value, lowercased, IPv6 bracketed."""
    value = value.strip().lower()
    if value.startswith("["):
        value = value[: value.find("]") + 1] if "]" in value else value
    elif value.count(":") > 1:  # a bare IPv6 address
        value = f"[{value}]"
    elif ":" in value:
        value = value.rsplit(":", 1)[0]
    return value.rstrip(".")


def check_host(request: web.Request) -> None:
    header = request.headers.get(hdrs.HOST)
    if header is None:
        return
    name = _host_name(header)
    allowed = getattr(request.app.get(SETTINGS_KEY), "allowed_hosts", ())
    if name in _LOCAL_HOSTS or "*" in allowed or name in {_host_name(h) for h in allowed}:
        return
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if sockname and name == _host_name(str(sockname[0])):
        return
    raise BadRequest(
        f"Host {header!r} is not allowed: this server answers only requests addressed to "
        "localhost, 127.0.0.1, [::1] or its own address, so that web pages cannot reach it "
        f"(DNS rebinding). To expose it deliberately, start it with --allow-host {name}",
        status=403,
    )


def check_content_type(request: web.Request) -> None:
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    if request.match_info.http_exception is not None:  # answered 404/405 as such
        return
    if request.content_type != "application/json" or hdrs.CONTENT_TYPE not in request.headers:
        got = request.headers.get(hdrs.CONTENT_TYPE)
        raise BadRequest(
            f"Content-Type must be application/json, got {got!r}; send the body as JSON with "
            "the header Content-Type: application/json",
            status=415,
        )


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The access and connection options every creditgym server command takes."""
    d = ServerSettings()
    group = parser.add_argument_group("access and connection limits")
    group.add_argument(
        "--allow-host", action="append", default=[], metavar="HOST",
        help="also answer requests whose Host header names HOST (repeatable; '*': any). By "
        "default only localhost, 127.0.0.1, [::1] and the bound address are answered, so web "
        "pages cannot reach the server (DNS rebinding)",
    )
    group.add_argument("--header-timeout", type=float, default=d.header_timeout,
                       help="seconds a client has to send its request headers "
                       f"({d.header_timeout:g})")
    group.add_argument("--body-timeout", type=float, default=d.body_timeout,
                       help=f"seconds without body data before a 408 ({d.body_timeout:g})")
    group.add_argument("--keepalive-timeout", type=float, default=d.keepalive_timeout,
                       help=f"seconds an idle connection stays open ({d.keepalive_timeout:g})")
    group.add_argument("--max-connections", type=int, default=None,
                       help="most open connections (default: from the open-file limit, "
                       "`ulimit -n`); stalled ones are evicted first")
    group.add_argument("--shutdown-timeout", type=float, default=d.shutdown_timeout,
                       help="seconds in-flight requests get on SIGTERM before they are "
                       f"cancelled ({d.shutdown_timeout:g})")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The :class:`ServerSettings` of :func:`add_server_arguments`' options."""
    return ServerSettings(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keepalive_timeout=args.keepalive_timeout,
        max_connections=args.max_connections,
        shutdown_timeout=args.shutdown_timeout,
        allowed_hosts=tuple(args.allow_host or ()),
    )


__all__ = [
    "SETTINGS_KEY",
    "ServerSettings",
    "add_server_arguments",
    "check_content_type",
    "check_host",
    "default_max_connections",
    "settings_from_args",
]
