"""Benchmark the procedural world: generation time, corpus writing, memory, corpus size.

Each size runs in a fresh subprocess so its peak resident memory (``ru_maxrss``) is its own.

    python benchmarks/world.py                      # 3k, 100k and 1M documents
    python benchmarks/world.py --sizes 3000 50000   # other sizes

Columns: ``generate`` builds the entity graph (``World.generate``); ``questions`` builds both
splits; ``write`` streams the corpus to JSONL (rendering every document); ``docs/s`` is the write
rate; ``rss base``/``rss peak`` are the process's resident memory after imports and at its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _child(n: int, out_dir: str) -> dict:
    import numpy  # noqa: F401  (counted in the baseline, like the creditgym import)

    from creditgym.envs.world import World, WorldConfig

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    world = World.generate(WorldConfig(num_documents=n))
    t1 = time.perf_counter()
    n_q = len(world.questions("train")) + len(world.questions("test"))
    t2 = time.perf_counter()
    path = world.write_corpus(os.path.join(out_dir, f"world-{n}.jsonl"), progress=False)
    t3 = time.perf_counter()
    size = os.path.getsize(path)
    os.unlink(path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "documents": n,
        "generate_s": t1 - t0,
        "questions": n_q,
        "questions_s": t2 - t1,
        "write_s": t3 - t2,
        "corpus_bytes": size,
        "rss_base_kb": base,
        "rss_peak_kb": peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[3000, 100_000, 1_000_000])
    ap.add_argument(
        "--out-dir", default=None, help="where to write the corpora (default: a temp dir)"
    )
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child is not None:
        print(json.dumps(_child(args.child, args.out_dir)))
        return

    out_dir = args.out_dir or tempfile.mkdtemp(prefix="creditgym-world-bench-")
    rows = []
    for n in args.sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--out-dir", out_dir],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"done {n} documents", file=sys.stderr, flush=True)
    if args.out_dir is None:
        os.rmdir(out_dir)

    header = (
        f"{'documents':>10} {'generate':>9} {'questions':>10} {'write':>8} {'docs/s':>9} "
        f"{'corpus':>10} {'rss base':>9} {'rss peak':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['documents']:>10,} {r['generate_s']:>8.2f}s {r['questions_s']:>9.2f}s "
            f"{r['write_s']:>7.1f}s {r['documents'] / r['write_s']:>9,.0f} "
            f"{r['corpus_bytes'] / 2**20:>7.1f} MB {r['rss_base_kb'] / 1024:>6.0f} MB "
            f"{r['rss_peak_kb'] / 1024:>6.0f} MB"
        )
    print(
        f"({rows[0]['questions']} questions per world: 2000 train + 500 test; "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus)"
    )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
