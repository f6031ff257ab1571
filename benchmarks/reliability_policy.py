"""``serve-policy`` fairness: latency of short requests while a long request runs.

A real ``creditgym serve-policy`` subprocess serves the tiny model on 127.0.0.1. First 20 short
requests (1 prompt, 16 greedy tokens) are timed on the idle server; then a long request (64
prompts x ``--long-tokens`` greedy tokens) is sent and, while it runs, the same 20 short
requests one after another. Then the long request's client disconnects and the benchmark
records how long ``/health`` takes to show ``waiting: 0, running: 0`` and whether the decoding
step counter stops. Goal: the short requests' extra wait is well under 1 s.

Usage: ``python benchmarks/reliability_policy.py [--long-tokens 4000] [--threads 1]``; prints a
table, asserts nothing. ``measure(work_dir)`` gives the rows to ``benchmarks/reliability.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float = 120) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def _health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        return json.loads(resp.read())


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def short_latency_while_long(url: str, prompts: list[list[int]], long_tokens: int) -> dict:
    """Latencies (s) of 20 short requests alone, then while a 64-prompt long request runs."""
    short = {"prompt": prompts[0], "max_tokens": 16, "temperature": 0}

    def timed() -> float:
        start = time.perf_counter()
        _post(url + "/v1/completions", short)
        return time.perf_counter() - start

    idle = [timed() for _ in range(20)]
    body = json.dumps(
        {"prompt": [prompts[i % len(prompts)] for i in range(64)], "max_tokens": long_tokens,
         "temperature": 0}
    ).encode()
    # A raw socket, so the benchmark can walk away from the long request like a client that
    # gave up.
    sock = socket.create_connection((url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1])))
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    deadline = time.monotonic() + 60
    while _health(url)["running"] < 64 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let the long request get going
    busy = [timed() for _ in range(20)]
    steps_before = _health(url)["steps"]
    sock.close()  # the long request's client leaves
    left = time.perf_counter()
    while True:
        health = _health(url)
        if health["waiting"] == 0 and health["running"] == 0:
            break
        if time.perf_counter() - left > 60:
            break
        time.sleep(0.02)
    drained = time.perf_counter() - left
    settled = _health(url)["steps"]
    time.sleep(1.0)
    return {
        "idle": idle,
        "busy": busy,
        "drained_s": drained,
        "steps_during_shorts": settled - steps_before,
        "steps_after_leaving": _health(url)["steps"] - settled,
    }


def measure(work: Path, long_tokens: int = 4000, threads: int = 1) -> list[tuple[str, str, str]]:
    """Build the tiny model under ``work``, serve it, and measure: (name, result, goal) rows.

    ``threads``: the server's torch threads (OMP_NUM_THREADS). On a small shared CPU, torch's
    default (one per core) spins against other processes: a 16-token answer of the tiny model
    takes ~2 s instead of ~40 ms, which would measure the machine, not the scheduler."""
    from policy_server import build_model, prompts_for
    from transformers import AutoTokenizer

    model = build_model(work / "tiny-policy")
    prompts = prompts_for(AutoTokenizer.from_pretrained(model), 64)
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["OMP_NUM_THREADS"] = str(threads)
    server = subprocess.Popen(
        [sys.executable, "-m", "creditgym.cli", "serve-policy", "--model", str(model),
         "--port", str(port), "--device", "cpu"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _health(url)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("serve-policy did not start") from None
                time.sleep(0.2)
        r = short_latency_while_long(url, prompts, long_tokens)
    finally:
        server.terminate()
        server.wait(30)
    idle50 = _quantile(r["idle"], 0.5)
    name = f"policy: short request while 64x{long_tokens} runs"
    return [
        (f"{name}, p50 / p99", f"{_quantile(r['busy'], 0.5):.3f} s / "
         f"{_quantile(r['busy'], 0.99):.3f} s (idle p50 {idle50:.3f} s)", "< 1 s extra"),
        ("policy: long client left -> waiting & running 0", f"{r['drained_s']:.2f} s", "< 1 s"),
        ("policy: decoding steps after that", str(r["steps_after_leaving"]), "0"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--long-tokens", type=int, default=4000, help="max_tokens of the long request")
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="creditgym-reliability-policy-") as tmp:
        print_table(measure(Path(tmp), args.long_tokens, args.threads))


def print_table(rows: list[tuple[str, str, str]]) -> None:
    """(measurement, result, goal) rows as a Markdown table."""
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measurement'.ljust(width)} | result | goal")
    print(f"{'-' * width}-|--------|-----")
    for name, value, goal in rows:
        print(f"{name.ljust(width)} | {value} | {goal}")


if __name__ == "__main__":
    main()
