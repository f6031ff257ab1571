"""Client machinery shared by creditgym's HTTP clients: a private event loop and retried JSON posts.

:class:`LoopThreadClient` is the base of :class:`~creditgym.envs.retrieval.http.HTTPRetriever` and
:class:`~creditgym.agents.openai_backend.OpenAICompatibleBackend`. It owns a private event loop on
a daemon thread with one pooled aiohttp session, so a subclass's synchronous methods (``_run``)
work from plain code and from inside another running event loop (they block that caller, never
deadlock), and its ``async`` methods (``_arun``) work from any loop. ``close()`` closes the
session on the loop, stops the loop and joins the thread; the client is a context manager.

``_post_json(body)`` posts to ``self.url`` with retries: a connection error, a timeout or a 5xx /
429 answer is retried ``retries`` more times, waiting ``backoff`` seconds, then twice that, and so
on. A 4xx answer is the caller's mistake and fails at once with the server's own message. Every
failure raises the subclass's error type (:class:`ServerKind` says which, and how its server is
named and started).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import aiohttp
from typing_extensions import Self  # typing.Self needs Python 3.11

T = TypeVar("T")


@dataclass(frozen=True)
class ServerKind:
    """How a client names its server in errors, and what it raises."""

    name: str
    """The server as errors name it, e.g. ``"policy server"``."""
    error: type[Exception]
    """The exception raised for every failure (``BackendError``, ``RetrievalError``)."""
    start_hint: str
    """Said after "is it running?" when the server stays unreachable: how to start one."""
    blocking_on_own_loop: str
    """The error for a blocking call made on the client's own loop: what to await instead."""
    thread_name: str
    """The name of the private loop's thread (shows in thread dumps)."""
    invalid_json: str = "answered invalid JSON"
    """How an answer that is not JSON is described after the URL."""


def error_message(body: bytes) -> str:
    """The server's error message (OpenAI/vLLM, FastAPI or plain forms), else its body's start."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return data["message"]
        if "detail" in data:  # FastAPI's validation errors
            return json.dumps(data["detail"])[:500]
    text = body.decode("utf-8", errors="replace").strip()
    return text[:500] or "(empty body)"


class LoopThreadClient:
    """A private event-loop thread with one pooled aiohttp session; see the module docstring.

    Subclasses set ``server_kind`` and call ``super().__init__``; ``self.url``, ``self.timeout``,
    ``self.retries`` and ``self.backoff`` are public on every client.
    """

    server_kind: ClassVar[ServerKind]

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        connections: int,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._connections = connections
        self._headers = dict(headers or {})
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client_session: aiohttp.ClientSession | None = None
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections and stop the private loop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread, session = self._loop, self._thread, self._client_session
            self._loop = self._thread = self._client_session = None
        if loop is None:
            return
        if session is not None:
            asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running coroutines on the private loop -----------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise self.server_kind.error(f"{type(self).__name__} for {self.url} is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                name = self.server_kind.thread_name
                self._thread = threading.Thread(target=run, name=name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _loop_for(self, coro: Coroutine, *, blocking: bool) -> asyncio.AbstractEventLoop:
        try:
            # Blocking the private loop on work scheduled on itself would never finish.
            if blocking and self._thread is not None and threading.current_thread() is self._thread:
                raise self.server_kind.error(self.server_kind.blocking_on_own_loop)
            return self._ensure_loop()
        except BaseException:
            coro.close()  # never started: close it so Python does not warn about it
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and wait for it (blocking the calling thread)."""
        loop = self._loop_for(coro, blocking=True)
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop, awaitable from any event loop."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop_for(coro, blocking=False))
        return await asyncio.wrap_future(future)

    # -- on the private loop ------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        """The pooled session (made on first use, on the private loop)."""
        if self._client_session is None:
            self._client_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self._headers,
            )
        return self._client_session

    async def _post_json(self, body: Any) -> Any:
        """POST ``body`` as JSON to ``self.url`` with retries; the decoded JSON answer."""
        kind = self.server_kind
        attempts = self.retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                async with self._session().post(self.url, json=body) as resp:
                    payload, status = await resp.read(), resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if status >= 500 or status == 429:
                last = f"HTTP {status}: {error_message(payload)}"
                continue
            if status >= 400:
                raise kind.error(
                    f"{kind.name} {self.url} rejected the request (HTTP {status}): "
                    f"{error_message(payload)}"
                )
            try:
                return json.loads(payload)
            except ValueError as exc:
                raise kind.error(f"{kind.name} {self.url} {kind.invalid_json}: {exc}") from None
        raise kind.error(
            f"{kind.name} {self.url} unreachable after {attempts} attempt"
            f"{'s' if attempts != 1 else ''} (last error: {last}); is it running? "
            f"{kind.start_hint}"
        )


__all__ = ["LoopThreadClient", "ServerKind", "error_message"]
