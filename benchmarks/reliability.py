"""Reliability on loopback: what hostile clients and inputs do to creditgym's servers and runs.

Five measurements, each against its goal (the reliability issue's numbers):

1. **poison**: ``serve-retriever`` (a separate process, Lucene over a small built-in world) gets
   --good well-formed requests at concurrency 64 with one poisoned request after every 30 good
   ones (a lone surrogate, 1,100 distinct words, an empty query, in turn). Reported: good requests
   that failed or got results other than the same query alone gets (goal 0), and what the
   poisoned ones were answered.
2. **stalled /health** (this and 3 use ``benchmarks/reliability_servers.py``): ``/health`` latency (p50/p99) with 2,000 connections that sent headers
   promising a body and then nothing (goal p99 < 100 ms).
3. **SIGTERM**: seconds from SIGTERM to exit with stalled clients connected (goal < 10 s), both
   servers.
4. **short while long** (``benchmarks/reliability_policy.py``): ``serve-policy`` latency of short requests while a 64-prompt long request
   runs (goal < 1 s).
5. **identical runs**: two ``creditgym train`` runs of one tiny config; the share of trajectory
   records in ``rollouts.jsonl`` that are byte-identical between them (goal 100%).

Usage: ``python benchmarks/reliability.py [--good 10000] [--only poison,health,sigterm,policy,
identical]``. It prints a table; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
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

POISON_EVERY = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not answer /health within {timeout_s} s")


def world_index(workdir: Path) -> tuple[Path, list[str]]:
    """A Lucene index of a 1,000-document world and 200 title queries over it."""
    from creditgym.envs.retrieval import build_index
    from creditgym.envs.world import World, WorldConfig

    world = World.generate(WorldConfig(seed=0, num_documents=1000))
    corpus = workdir / "corpus.jsonl"
    world.write_corpus(corpus)
    index = workdir / "index"
    build_index("lucene", corpus, index, threads=1)
    titles = [doc["contents"].split("\n", 1)[0].strip('"') for doc in world.iter_documents()]
    return index, titles[:200]


def poison_bodies() -> list[tuple[str, bytes]]:
    many = " ".join(f"w{i}x" for i in range(1100))
    return [
        ("lone surrogate", b'{"queries": ["\\ud800 city"], "topk": 3}'),
        ("1,100 distinct words", json.dumps({"queries": [many], "topk": 3}).encode()),
        ("empty query", b'{"queries": [""], "topk": 3}'),
    ]


async def _poison_load(url: str, queries: list[str], good: int, concurrency: int) -> dict:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def post(body: bytes) -> tuple[int, dict | None]:
            async with session.post(url + "/retrieve", data=body,
                                    headers={"Content-Type": "application/json"}) as r:
                try:
                    return r.status, await r.json(content_type=None)
                except ValueError:
                    return r.status, None

        def good_body(q: str) -> bytes:
            return json.dumps({"queries": [q], "topk": 3}).encode()

        expected = {}
        for q in queries:  # the answer each query gets alone, before any poison
            status, data = await post(good_body(q))
            expected[q] = data["result"] if status == 200 else None
        jobs: list[tuple[str, bytes, str | None]] = []
        bad = poison_bodies()
        for i in range(good):
            q = queries[i % len(queries)]
            jobs.append(("good", good_body(q), q))
            if (i + 1) % POISON_EVERY == 0:
                name, body = bad[(i // POISON_EVERY) % len(bad)]
                jobs.append((name, body, None))
        good_failed = 0
        poison_status: dict[str, dict[int, int]] = {}
        next_job = iter(jobs)

        async def worker() -> None:
            nonlocal good_failed
            for kind, body, q in next_job:
                try:
                    status, data = await post(body)
                except Exception:  # noqa: BLE001 - a dropped connection counts as a failure
                    status, data = -1, None
                if kind == "good":
                    if status != 200 or data is None or data.get("result") != expected[q]:
                        good_failed += 1
                else:
                    counts = poison_status.setdefault(kind, {})
                    counts[status] = counts.get(status, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return {"good": good, "good_failed": good_failed, "poison": poison_status,
                "seconds": time.perf_counter() - t0}


def measure_poison(workdir: Path, good: int) -> dict:
    index, queries = world_index(workdir)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "creditgym.cli", "serve-retriever", "--index", str(index),
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_health(url)
        result = asyncio.run(_poison_load(url, queries, good, concurrency=64))
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    result["log_lines"] = len(err.splitlines())
    return result


# A tiny run (seconds of warm start, 3 iterations of 4 tasks x 4) so the comparison is cheap.
TINY_TRAIN = [
    "--set", "env.kwargs.world.num_documents=600", "--set", "env.kwargs.world.num_train_questions=100",
    "--set", "env.kwargs.world.num_test_questions=20", "--set", "env.kwargs.world_backend=bm25s",
    "--set", "model.tiny_vocab=800", "--set", "model.tiny_hidden=64",
    "--set", "sft.demonstrations=16", "--set", "sft.steps=2", "--set", "sft.lm_steps=2",
    "--set", "sft.batch_size=8", "--set", "threads=1", "--set", "rl.iterations=3",
    "--set", "rl.tasks_per_iteration=4", "--set", "rl.group_size=4", "--set", "rl.max_new_tokens=16",
    "--set", "eval.episodes=4", "--set", "policy.micro_batch_tokens=4096",
]


def measure_identical_runs(workdir: Path) -> dict:
    """Two identical tiny training runs; share of rollouts.jsonl records byte-identical."""
    lines = []
    for name in ("a", "b"):
        run = workdir / f"run-{name}"
        cmd = [sys.executable, "-m", "creditgym.cli", "train", "--config",
               str(ROOT / "configs/default.yaml"), "--set", f"run_dir={run}", *TINY_TRAIN]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
        lines.append((run / "rollouts.jsonl").read_text().splitlines())

    def by_id(rows: list[str]) -> dict[str, str]:
        out = {}
        for row in rows:
            rec = json.loads(row)
            if "id" in rec:
                rec.pop("created", None)  # wall-clock time of writing, not sampled content
                out[rec["id"]] = json.dumps(rec, sort_keys=True)
        return out

    a, b = by_id(lines[0]), by_id(lines[1])
    same = sum(1 for k in a if b.get(k) == a[k])
    return {"records": len(a), "identical": same, "share": same / max(len(a), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--good", type=int, default=10_000, help="good requests in the poison test")
    ap.add_argument("--only", default="poison,health,sigterm,policy,identical")
    args = ap.parse_args()
    only = set(args.only.split(","))
    os.environ.setdefault("OPENAI_API_KEY", "dummy")
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="creditgym-reliability-") as tmp:
        work = Path(tmp)
        if "poison" in only:
            (work / "poison").mkdir()
            r = measure_poison(work / "poison", args.good)
            poison = "; ".join(f"{k}: " + ", ".join(f"{n}x{s}" for s, n in sorted(v.items()))
                               for k, v in r["poison"].items())
            rows.append(("good requests failed under poison",
                          f"{r['good_failed']} of {r['good']} ({r['seconds']:.0f} s; server log "
                          f"{r['log_lines']} lines; poisoned answered {poison})", "0"))
        if "health" in only or "sigterm" in only:
            import reliability_servers

            (work / "servers").mkdir()
            index = reliability_servers._index(work / "servers")
            if "health" in only:
                h = reliability_servers.health_latency(index, 2000, 200)
                rows.append(("retriever /health with 2,000 stalled connections, p50 / p99",
                             f"{h['p50_ms']:.1f} ms / {h['p99_ms']:.1f} ms "
                             f"({h['failures']} of 200 failed)", "p99 < 100 ms"))
            if "sigterm" in only:
                t = reliability_servers.sigterm_exit_time(index, 2000)
                rows.append(("retriever SIGTERM -> exit with 2,000 stalled clients",
                             f"{t:.2f} s", "< 10 s"))
        if "policy" in only:
            import reliability_policy

            rows.extend(reliability_policy.measure(work))
        if "identical" in only:
            (work / "identical").mkdir()
            r = measure_identical_runs(work / "identical")
            rows.append(("identical runs: rollouts.jsonl records equal",
                         f"{r['identical']} of {r['records']} ({100 * r['share']:.0f}%)", "100%"))
    from reliability_policy import print_table

    print_table(rows)


if __name__ == "__main__":
    main()
