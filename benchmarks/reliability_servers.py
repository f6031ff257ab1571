"""Server reliability under stalled clients: ``/health`` latency and SIGTERM-to-exit time.

Each measurement starts a real ``python -m creditgym.cli serve-retriever`` (a bm25s index of a
tiny corpus) in a subprocess, opens raw sockets that stall (half their headers, or headers with
``Content-Length: 1000`` and no body), then

- :func:`health_latency`: times ``GET /health`` on fresh connections (p50, p99, failures);
- :func:`sigterm_exit_time`: sends SIGTERM and times the exit.

Run ``python benchmarks/reliability_servers.py`` (``--stalled N``, ``--requests N``); it prints a
table and asserts nothing. Needs ``ulimit -n`` above twice ``--stalled`` (client and server).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HALF_HEADERS = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
HALF_BODY = (b"POST /retrieve HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
             b"Content-Length: 1000\r\n\r\n")


def _index(folder: Path) -> Path:
    from creditgym.envs.retrieval.bm25 import build_bm25s_index

    corpus = folder / "corpus.jsonl"
    docs = [{"id": f"d{i}", "contents": f'"Title {i}"\nan apple numbered {i}'} for i in range(50)]
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return build_bm25s_index(corpus, folder / "idx")


@contextmanager
def _server(index: Path, *extra: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditgym.cli", "serve-retriever", "--index", str(index),
         "--backend", "bm25s", "--port", str(port), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("serve-retriever did not come up") from None
                time.sleep(0.1)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stall(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(HALF_BODY if i % 2 else HALF_HEADERS)
        socks.append(sock)
    return socks


def health_latency(index: Path, stalled: int, requests: int = 200, *extra: str) -> dict:
    """``/health`` latency (ms, fresh connection each) with ``stalled`` stalled clients open."""
    with _server(index, *extra) as (_, port):
        socks = _stall(port, stalled)
        times, failures = [], 0
        try:
            for _ in range(requests):
                start = time.perf_counter()
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
                    times.append((time.perf_counter() - start) * 1000)
                except OSError:
                    failures += 1
        finally:
            for sock in socks:
                sock.close()
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else float("nan")
    return {"p50_ms": statistics.median(times) if times else float("nan"), "p99_ms": p99,
            "failures": failures}


def sigterm_exit_time(index: Path, stalled: int) -> float:
    """Seconds from SIGTERM to exit with ``stalled`` stalled clients connected."""
    with _server(index) as (proc, port):
        socks = _stall(port, stalled)
        time.sleep(0.5)  # the stalled bodies' handlers are waiting for their bytes
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        finally:
            for sock in socks:
                sock.close()
        return time.monotonic() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", type=int, default=2000, help="stalled connections")
    parser.add_argument("--requests", type=int, default=200, help="/health requests timed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        index = _index(Path(tmp))
        rows = [
            ("idle", health_latency(index, 0, args.requests), sigterm_exit_time(index, 0)),
            (f"{args.stalled} stalled", health_latency(index, args.stalled, args.requests),
             sigterm_exit_time(index, args.stalled)),
            (f"{args.stalled} stalled, --max-connections 256",
             health_latency(index, args.stalled, args.requests, "--max-connections", "256"),
             float("nan")),
        ]
    print(f"{'serve-retriever':<40} {'/health p50':>12} {'p99':>9} {'failed':>7} "
          f"{'SIGTERM->exit':>14}")
    for name, lat, exit_s in rows:
        print(f"{name:<40} {lat['p50_ms']:>9.2f} ms {lat['p99_ms']:>6.2f} ms "
              f"{lat['failures']:>7d} {exit_s:>12.2f} s")


if __name__ == "__main__":
    main()
