"""The ``"process"`` tool executor: worker processes that run tool calls and are killed on timeout.

``ToolRunner`` (``creditgym.envs.tool_runner``) imports this module only for
``executor="process"``; its docstring states the contract (picklable tools, the ``spawn`` start
method, ``LOAD_TIMEOUT_S``). Protocol over one pipe per worker: the parent sends
``(name, pickle((fn, kwargs)))``; the worker answers ``b"started"`` once it has unpickled the
call (imported the tool's module), then the pickled outcome tuple of ``execute``. A load failure
is answered with an outcome instead of ``b"started"``. The parent's clock starts at
``b"started"``; when the timeout passes it kills the process, and a fresh one serves the next call.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import threading
import time
from typing import Any

from creditgym.envs.tool_runner import LOAD_TIMEOUT_S, Handle, describe_exception, execute

_STARTED = b"started"


class ProcessWorker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_process_main, args=(child,), daemon=True,
                                   name="creditgym-tool-process")
        self.process.start()
        child.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        self.conn.close()  # the worker reads EOF and exits
        self.process.join(1)
        self.kill()


def _process_main(conn: Any) -> None:
    """A worker process: load a call, say it started, run it, send the outcome; until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            name, payload = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            fn, kwargs = pickle.loads(payload)
        except BaseException as exc:  # noqa: BLE001
            why = describe_exception(exc)
            conn.send_bytes(pickle.dumps(("error", f"tool {name} could not be loaded in its process ({why})")))
            continue
        conn.send_bytes(_STARTED)
        outcome = execute(name, fn, kwargs, None)
        try:
            data = pickle.dumps(outcome)
        except BaseException as exc:  # noqa: BLE001
            data = pickle.dumps(("error", (
                f"tool {name} returned a {type(outcome[1]).__name__} that cannot be sent back "
                f"from its process ({describe_exception(exc)}); return plain data (str, numbers, "
                "lists, dicts)"
            )))
        conn.send_bytes(data)


class Processes:
    """The runner's worker processes: idle ones for reuse, busy ones to kill on close."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.lock = threading.Lock()
        self.idle: list[ProcessWorker] = []
        self.busy: set[ProcessWorker] = set()
        self.closed = False

    def take(self) -> ProcessWorker:
        with self.lock:
            if self.closed:
                raise RuntimeError("the tool runner is closed")
            worker = self.idle.pop() if self.idle else None
        if worker is None:
            worker = ProcessWorker(self.ctx)
        with self.lock:
            self.busy.add(worker)
        return worker

    def give_back(self, worker: ProcessWorker, reusable: bool) -> None:
        with self.lock:
            self.busy.discard(worker)
            keep = reusable and not self.closed and worker.process.is_alive()
            if keep:
                self.idle.append(worker)
        if not keep:
            worker.kill()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            idle, busy = self.idle, list(self.busy)
            self.idle = []
        for worker in idle:
            worker.stop()
        for worker in busy:
            worker.kill()


def run_in_process(processes: Processes, name: str, payload: bytes, timeout: float | None,
                   submitted: float, handle: Handle):
    """One call in a worker process, killed ``timeout`` s after it started; runs in a pool thread
    (submitted at ``submitted``: a call that waited its whole timeout for a thread never starts)."""
    if timeout is not None and time.monotonic() - submitted >= timeout:
        return ("timeout", False)
    try:
        worker = processes.take()
    except BaseException as exc:  # noqa: BLE001 - e.g. the runner closed, or no process could start
        why = describe_exception(exc)
        return ("error", f"tool {name} could not start a worker process ({why})")
    with handle.lock:
        handle.worker = worker
        cancelled = handle.cancelled
    reusable = False
    try:
        if cancelled:
            return ("error", f"tool {name} was cancelled")
        worker.conn.send_bytes(pickle.dumps((name, payload)))
        if not worker.conn.poll(LOAD_TIMEOUT_S):
            return ("error", f"tool {name}'s worker process did not load it within "
                             f"{LOAD_TIMEOUT_S:g} s (a slow or hanging import?)")
        reply = worker.conn.recv_bytes()
        if reply != _STARTED:
            reusable = True
            return pickle.loads(reply)
        if not worker.conn.poll(timeout):
            return ("timeout", True)
        outcome = pickle.loads(worker.conn.recv_bytes())
        reusable = True
        return outcome
    except (EOFError, OSError):
        worker.process.join(1)
        return ("error", f"tool {name}'s worker process ended unexpectedly "
                         f"(exit code {worker.process.exitcode})")
    finally:
        processes.give_back(worker, reusable)
