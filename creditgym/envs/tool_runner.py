"""Running tool calls off the caller's event loop, under a timeout that holds, with bounded threads.

``ToolRunner.call(name, fn, kwargs, timeout)`` runs one call and returns a ``ToolResult``; it
never raises, except ``asyncio.CancelledError`` when its caller is cancelled. ``ToolEnv`` owns one
runner (made on its first tool call, closed by ``close``); ``run_tool`` without a runner uses a
throw-away one.

Executors (``ToolEnvConfig.tool_executor``):

- ``"thread"`` (default): calls run on at most ``max_workers`` daemon threads of the runner,
  started on demand and reused. An async tool (any callable whose result is awaitable) runs on a
  fresh event loop in its worker thread, so a tool that blocks (``time.sleep`` inside
  ``async def``) blocks only its worker, never the caller's loop, and the timeout fires on time.
  Since every call gets a fresh loop, an async tool must not keep loop-bound objects (client
  sessions) between calls. Python cannot stop a thread: a timed-out call is abandoned (an async one
  is also cancelled at its next ``await``) and holds its worker until it returns. ``abandoned``
  counts such calls; they are capped by the pool size: when every worker is held, new calls wait
  and, if their timeout passes first, fail "without starting". So a stuck tool costs at most
  ``max_workers`` threads per runner, never a thread per call; daemon threads never block exit.
- ``"process"``: calls run in at most ``max_workers`` worker processes (``spawn`` start method,
  reused between calls); on timeout the process is killed, so a stuck tool (``while True:
  pass``) really stops. The function and its arguments are pickled to the worker and the value
  pickled back, so tools must be picklable - module-level functions (or ``functools.partial`` of
  one), not lambdas, closures or local functions - and return picklable data. The timeout starts
  once the worker has loaded the function (imported its module), which may take up to
  ``LOAD_TIMEOUT_S``, so a worker's start-up is not charged to the tool. Workers are daemonic:
  a tool cannot itself start ``multiprocessing`` children (``subprocess`` is fine).

What counts as a tool failure: anything the tool raises, ``BaseException`` included (a
``sys.exit()`` or ``KeyboardInterrupt`` raised by tool code in a worker is a failure of that
tool, not a request to stop the program: signals reach only the main thread, which is the caller),
a timeout, a process that dies, and a value that cannot be turned into text. The value's text
(``result_text``) is made in the worker, under the same timeout, so a value whose ``__str__``
raises or hangs fails like the tool itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import functools
import inspect
import json
import pickle
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from creditgym.json_values import to_plain

__all__ = ["LOAD_TIMEOUT_S", "ToolResult", "ToolRunner", "describe_exception", "result_text"]

LOAD_TIMEOUT_S = 60.0
"""Seconds a worker process may take to start and load a tool before the call fails."""


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call: ``ok`` with a ``value``, or not ``ok`` with an ``error``.

    ``text`` is the value as observation text (``result_text``), made where the tool ran; it
    is None for results built by hand.
    """

    ok: bool
    value: Any = None
    error: str | None = None
    text: str | None = None


def result_text(value: Any) -> str:
    """A tool value as text: a string as is, anything else as JSON (``to_plain``: numpy values as
    numbers, dataclasses as objects, unknown objects by ``str``), else its ``str``. Raises whatever the value's own ``__str__`` raises."""
    if isinstance(value, str):
        return str.__str__(value)  # a plain copy: never calls a subclass's __str__
    try:
        return json.dumps(to_plain(value), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` (or ``Type``), even when the exception's ``__str__`` itself fails."""
    try:
        message = str(exc).strip()
    except BaseException:  # noqa: BLE001 - a broken __str__ must not escape
        message = "<message unavailable: its __str__ failed>"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# ----------------------------------------------------------------------------- running one call


class Handle:
    """What the caller needs to stop a running call: its event loop and task, or its process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task | None = None
        self.worker: Any = None  # a tool_process.ProcessWorker
        self.cancelled = False

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
        with self.lock:
            self.loop, self.task = loop, task
            if self.cancelled:
                task.cancel()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            loop, task, worker = self.loop, self.task, self.worker
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # its loop already finished
                pass
        if worker is not None and worker.process.is_alive():
            # Only the process: the thread that talks to it sees EOF and cleans up.
            worker.process.kill()


async def _drive(awaitable: Any, handle: Handle | None) -> Any:
    if handle is not None:
        handle.attach(asyncio.get_running_loop(), asyncio.current_task())
    return await awaitable


def _run_on_fresh_loop(awaitable: Any, handle: Handle | None) -> Any:
    """``asyncio.run`` at half its cost (no default-executor shutdown, which costs a loop turn)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_drive(awaitable, handle))
    finally:
        try:
            leftover = asyncio.all_tasks(loop)  # tasks the tool started and did not await
            for task in leftover:
                task.cancel()
            if leftover:
                loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def execute(name: str, fn: Callable[..., Any], kwargs: dict[str, Any], handle: Handle | None):
    """Run one call to completion in this thread; an outcome tuple, never an exception."""
    try:
        value = fn(**kwargs)
        if inspect.isawaitable(value):
            value = _run_on_fresh_loop(value, handle)
    except BaseException as exc:  # noqa: BLE001 - see the module docstring
        return ("error", f"tool {name} failed with {describe_exception(exc)}")
    try:
        text = result_text(value)
    except BaseException as exc:  # noqa: BLE001
        return ("error", f"tool {name} returned a {type(value).__name__} that cannot be shown as "
                         f"text ({describe_exception(exc)}); return a str or JSON-ready data")
    return ("ok", value, text)


# ----------------------------------------------------------------------------- thread pool


class _ThreadPool:
    """At most ``size`` daemon threads running jobs in submission order."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self._name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, job: Callable[[], Any]) -> cf.Future:
        future: cf.Future = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the tool runner is closed")
            self._jobs.put((future, job))
            if not self._idle.acquire(blocking=False):
                self._threads = [t for t in self._threads if t.is_alive()]
                if len(self._threads) < self.size:
                    thread = threading.Thread(
                        target=_work, args=(self._jobs, self._idle), daemon=True,
                        name=f"{self._name}-{len(self._threads)}",
                    )
                    thread.start()
                    self._threads.append(thread)
        return future

    def close(self) -> None:
        """Let every worker exit once it has finished what it runs (does not wait)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)


def _work(jobs: queue.SimpleQueue, idle: threading.Semaphore) -> None:
    # A plain function holding only the queue, so a dropped pool can be collected.
    while True:
        item = jobs.get()
        if item is None:
            return
        future, job = item
        del item
        if not future.set_running_or_notify_cancel():  # cancelled while it waited
            continue
        try:
            outcome, failed = job(), False
        except BaseException as exc:  # noqa: BLE001 - jobs return outcomes; belt and braces
            outcome, failed = exc, True
        del job
        # Count this worker idle only when it will wait: over-counting would make submit() skip
        # starting a worker that is needed; under-counting at worst starts one within the cap.
        # Counted *before* the result is published, so a caller that submits its next call as
        # soon as this one resolves finds this worker idle instead of starting another.
        if jobs.empty():
            idle.release()
        if failed:
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
        del future, outcome


def _shutdown(pool: _ThreadPool, processes: Any) -> None:
    pool.close()
    if processes is not None:
        processes.close()


# ----------------------------------------------------------------------------- the runner


class ToolRunner:
    """Runs tool calls on ``max_workers`` threads or processes (see the module docstring)."""

    def __init__(self, executor: Literal["thread", "process"] = "thread", max_workers: int = 4,
                 *, name: str = "creditgym-tool") -> None:
        if executor not in ("thread", "process"):
            raise ValueError(f"executor must be 'thread' or 'process', got {executor!r}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.executor = executor
        self.max_workers = max_workers
        self._pool = _ThreadPool(max_workers, name)
        self._processes = None
        if executor == "process":
            from creditgym.envs.tool_process import Processes  # only this executor needs it

            self._processes = Processes()
        self._lock = threading.Lock()
        self._abandoned = 0
        self._finalizer = weakref.finalize(self, _shutdown, self._pool, self._processes)

    @property
    def abandoned(self) -> int:
        """Timed-out calls still running in a thread (each holds one worker until it returns)."""
        return self._abandoned

    def close(self) -> None:
        """Stop taking calls: idle threads exit, abandoned ones once their call returns, and
        every worker process is stopped (killed if busy). Idempotent."""
        self._finalizer()

    async def call(self, name: str, fn: Callable[..., Any], kwargs: dict[str, Any],
                   timeout: float | None) -> ToolResult:
        """Run ``fn(**kwargs)`` (awaiting its result if awaitable) under ``timeout`` seconds
        (``None``: no limit); see the module docstring."""
        handle = Handle()
        if self.executor == "process":
            try:
                payload = pickle.dumps((fn, kwargs))
            except Exception as exc:  # noqa: BLE001 - pickling can fail in many ways
                return ToolResult(ok=False, error=(
                    f"tool {name} cannot run in a worker process: it cannot be pickled "
                    f"({describe_exception(exc)}); define it at module level, or use "
                    "tool_executor='thread'"
                ))
            from creditgym.envs.tool_process import run_in_process

            job = functools.partial(run_in_process, self._processes, name, payload, timeout,
                                    time.monotonic(), handle)
            wait = None  # the job itself enforces the timeout (and kills the process)
        else:
            ctx = contextvars.copy_context()
            job = functools.partial(ctx.run, execute, name, fn, kwargs, handle)
            wait = timeout
        try:
            job_future = self._pool.submit(job)
        except RuntimeError:
            return ToolResult(ok=False, error=f"tool {name} cannot run: its environment was closed")
        future = asyncio.wrap_future(job_future)
        try:
            done, _ = await asyncio.wait({future}, timeout=wait)
        except asyncio.CancelledError:
            job_future.cancel()
            handle.cancel()
            future.cancel()
            raise
        if not done:
            started = not job_future.cancel()
            future.cancel()
            if started:
                handle.cancel()
                self._abandon(job_future)
            return ToolResult(ok=False, error=self._timeout_message(name, timeout, started))
        outcome = future.result()
        if outcome[0] == "ok":
            return ToolResult(ok=True, value=outcome[1], text=outcome[2])
        if outcome[0] == "timeout":
            return ToolResult(ok=False, error=self._timeout_message(name, timeout, outcome[1]))
        return ToolResult(ok=False, error=outcome[1])

    def _abandon(self, job_future: cf.Future) -> None:
        with self._lock:
            self._abandoned += 1

        def returned(_: cf.Future) -> None:
            with self._lock:
                self._abandoned -= 1

        job_future.add_done_callback(returned)

    def _timeout_message(self, name: str, timeout: float | None, started: bool) -> str:
        limit = f"{timeout:g}" if timeout is not None else "?"
        if self.executor == "process" and started:
            return f"tool {name} timed out after {limit} s (its worker process was killed)"
        if started:
            return f"tool {name} timed out after {limit} s"
        held = self._abandoned
        return (
            f"tool {name} timed out after {limit} s without starting: all {self.max_workers} "
            "tool workers were busy"
            + (f" ({held} with earlier calls that timed out and are still running)" if held else "")
        )
