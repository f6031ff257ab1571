"""Tools for the process-executor tests, in a module of their own so that a worker process
unpickling them imports only this (not pytest and the test module)."""

from __future__ import annotations

import os
import threading


def echo(query: str) -> str:
    """Says the query back."""
    return f"echo {query}"


def spin(path: str) -> str:
    """Writes its process id to ``path``, then never returns."""
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    while True:
        pass


def hard_exit(path: str) -> str:
    """Ends its process without a word."""
    os._exit(7)


def unsendable(path: str) -> object:
    """Returns a value that cannot be pickled back (a lock)."""
    return threading.Lock()
