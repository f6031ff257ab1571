"""Retrieval speed: index builds, in-process search, and the HTTP server under load.

For each corpus size (the built-in world at its default size and at >= 100k documents) and each
backend (lucene, bm25s, dense; dense only at sizes up to --dense-max-docs, since encoding 100k
passages on a CPU takes long), it reports:

- index build time and size on disk;
- in-process queries/s, one query per ``search`` call ("single") and 256 per call ("batched"),
  top-3;
- the retrieval server (``creditgym serve-retriever``, in this process) under a load generator in
  a separate process (aiohttp, so the two do not share a GIL): requests/s and p50/p99 latency at
  concurrency 1, 16 and 64, one query per request, top-3 with scores, --requests per level.

Usage: ``python benchmarks/retrieval.py [--sizes default,100000] [--backends lucene,bm25s,dense]
[--requests 2000]``. It prints a table; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER_TOPK = 3


# ---------------------------------------------------------------------------------------------
# the load generator (runs in its own process)


async def _load(url: str, queries: list[str], concurrency: int, requests: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                body = {"queries": [queries[i % len(queries)]], "topk": SERVER_TOPK,
                        "return_scores": True}
                t0 = time.perf_counter()
                try:
                    async with session.post(url, json=body) as resp:
                        data = await resp.read()
                        ok = resp.status == 200 and data.startswith(b'{"result"')
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        # warm up the connections (not timed)
        await asyncio.gather(*(session.post(url, json={"query": queries[0]}) for _ in
                               range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {"rps": len(latencies) / wall, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "errors": errors, "requests": len(latencies)}


def loadgen_main(url: str, queries_file: str, concurrency: int, requests: int) -> None:
    queries = json.loads(Path(queries_file).read_text())
    print(json.dumps(asyncio.run(_load(url, queries, concurrency, requests))))


def run_load(url: str, queries_file: Path, concurrency: int, requests: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--_loadgen", url, str(queries_file), str(concurrency),
         str(requests)],
        capture_output=True, text=True, timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# corpora


def make_corpus(size: str, workdir: Path) -> tuple[Path, list[str], int, str]:
    """(corpus path, queries, documents, label) for ``size`` ("default" or a number)."""
    try:
        from creditgym.envs.world import World, WorldConfig
    except ImportError:
        World = None
    if World is not None:
        cfg = WorldConfig(seed=0) if size == "default" else WorldConfig(
            seed=0, num_documents=int(size))
        world = World.generate(cfg)
        path = workdir / f"world-{size}.jsonl"
        world.write_corpus(path, progress=False)
        queries = []
        for split in ("train", "test"):
            queries += [t.question for t in world.questions(split)]
        n = sum(1 for _ in path.open())
        return path, queries or _fallback_queries(path), n, f"world ({n:,} docs)"
    n = 5_000 if size == "default" else int(size)
    path = workdir / f"synthetic-{n}.jsonl"
    _synthetic_corpus(path, n)
    return path, _fallback_queries(path), n, f"synthetic ({n:,} docs)"


def _synthetic_corpus(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(30_000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    with path.open("w") as f:
        for i in range(n):
            words = rng.choices(vocab, weights, k=60)
            title = f"Entity {i}"
            f.write(json.dumps({"id": str(i), "contents": f'"{title}"\n{title} ' + " ".join(words)})
                    + "\n")


def _fallback_queries(path: Path, n: int = 2000, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    docs = [json.loads(line)["contents"] for line in path.open()]
    out = []
    for _ in range(n):
        words = rng.choice(docs).split()
        start = rng.randrange(max(1, len(words) - 6))
        out.append(" ".join(words[start:start + 6]).strip('"'))
    return out


# ---------------------------------------------------------------------------------------------
# measurements


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(backend: str, corpus: Path, index: Path) -> float:
    from creditgym.envs.retrieval import build_index

    t0 = time.perf_counter()
    # as creditgym.envs.defaults builds the world's indexes: no stemming (invented names)
    build_index(backend, corpus, index, threads=2, stemmer="none", stem=False)
    return time.perf_counter() - t0


def open_backend(backend: str, index: Path):
    from creditgym.envs.retrieval import RetrieverConfig, make_retriever

    return make_retriever(RetrieverConfig(backend=backend, index=str(index), threads=2))


def in_process(retriever, queries: list[str], budget_s: float = 8.0) -> tuple[float, float]:
    """(single queries/s, batched queries/s), each measured for about ``budget_s``."""
    retriever.search(queries[:8], SERVER_TOPK)  # warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s and n < len(queries):
        retriever.search([queries[n]], SERVER_TOPK)
        n += 1
    single = n / (time.perf_counter() - t0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s and n < len(queries):
        batch = queries[n:n + 256]
        retriever.search(batch, SERVER_TOPK)
        n += len(batch)
    batched = n / (time.perf_counter() - t0)
    return single, batched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="default,100000",
                    help="comma-separated corpus sizes: 'default' (the world's default) or numbers")
    ap.add_argument("--backends", default="lucene,bm25s,dense")
    ap.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--dense-max-docs", type=int, default=20_000,
                    help="skip the dense backend above this many documents (CPU encoding)")
    ap.add_argument("--server-backends", default=None,
                    help="backends to load-test over HTTP (default: all of --backends)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()

    from creditgym.envs.retrieval.server import BackgroundServer

    backends = [b for b in args.backends.split(",") if b]
    server_backends = set((args.server_backends or args.backends).split(","))
    levels = [int(c) for c in args.concurrency.split(",")]
    rows: list[dict] = []
    notes: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="creditgym-bench-"))
    try:
        for size in args.sizes.split(","):
            corpus, queries, ndocs, label = make_corpus(size, workdir)
            random.Random(0).shuffle(queries)
            qfile = workdir / f"queries-{size}.json"
            qfile.write_text(json.dumps(queries))
            print(f"# {label}: {len(queries)} queries", file=sys.stderr, flush=True)
            for backend in backends:
                row = {"corpus": label, "backend": backend}
                if backend == "dense" and ndocs > args.dense_max_docs:
                    notes.append(f"dense skipped on {label}: encoding {ndocs:,} passages on a "
                                 f"CPU takes too long (--dense-max-docs {args.dense_max_docs})")
                    continue
                index = workdir / f"{size}.{backend}"
                try:
                    row["build_s"] = build(backend, corpus, index)
                    row["size_mb"] = dir_size(index) / 1e6
                    retriever = open_backend(backend, index)
                except Exception as exc:  # noqa: BLE001 - a missing backend is a note, not a crash
                    notes.append(f"{backend} unavailable on {label}: {type(exc).__name__}: "
                                 f"{str(exc)[:160]}")
                    continue
                try:
                    row["single_qps"], row["batched_qps"] = in_process(retriever, queries)
                    print(f"#   {backend}: built in {row['build_s']:.1f}s, "
                          f"{row['single_qps']:.0f} / {row['batched_qps']:.0f} q/s",
                          file=sys.stderr, flush=True)
                    if backend in server_backends:
                        with BackgroundServer(retriever) as server:
                            for c in levels:
                                r = run_load(server.url + "/retrieve", qfile, c, args.requests)
                                row[f"c{c}"] = r
                                print(f"#     c={c}: {r['rps']:.0f} req/s p50 {r['p50_ms']:.1f} "
                                      f"p99 {r['p99_ms']:.1f} ms errors {r['errors']}",
                                      file=sys.stderr, flush=True)
                finally:
                    retriever.close()
                rows.append(row)
                shutil.rmtree(index, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows, levels, notes, args.requests)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "notes": notes}, indent=2))


def print_table(rows: list[dict], levels: list[int], notes: list[str], requests: int) -> None:
    head = ["corpus", "backend", "build s", "index MB", "q/s single", "q/s batched"]
    for c in levels:
        head += [f"c{c} req/s", f"c{c} p50 ms", f"c{c} p99 ms"]
    table = []
    for r in rows:
        line = [r["corpus"], r["backend"], f"{r['build_s']:.1f}", f"{r['size_mb']:.1f}",
                f"{r['single_qps']:,.0f}", f"{r['batched_qps']:,.0f}"]
        for c in levels:
            s = r.get(f"c{c}")
            line += ([f"{s['rps']:,.0f}", f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}"] if s
                     else ["-", "-", "-"])
        table.append(line)
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
              for i, h in enumerate(head)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    print(fmt(head))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print(fmt(t))
    print(f"\nserver: one query per request, top-{SERVER_TOPK} with scores, {requests} requests "
          f"per level, load generator in a separate process (aiohttp), loopback, "
          f"{os.cpu_count()} CPUs")
    for n in notes:
        print(f"note: {n}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_loadgen":
        loadgen_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
