"""SearchEnv steps/s with 1, 64 and 512 concurrent environments over the built-in world.

Run: ``python benchmarks/envs.py [--backend lucene|bm25s] [--episodes N]``. Every environment
runs the scripted expert (search each hop, then answer) with async steps on one event loop; all
environments share one retriever wrapped in a ``BatchingRetriever``, so searches issued at the
same time become one backend call. The table shows steps/s, searches/s and the mean number of
queries per backend call; a row "unbatched" runs the same load with batching switched off
(max_batch=1) for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from creditgym.envs.defaults import ensure_world_index  # noqa: E402
from creditgym.envs.retrieval import RetrieverConfig, make_retriever  # noqa: E402
from creditgym.envs.retrieval.batching import BatchingRetriever  # noqa: E402
from creditgym.envs.search_env import SearchEnv  # noqa: E402
from creditgym.envs.world import WorldConfig  # noqa: E402
from creditgym.envs.world.expert import expert_action  # noqa: E402


async def run_env(env: SearchEnv, tasks, counts: list[int]) -> None:
    for task in tasks:
        obs, _ = env.reset(seed=0, options={"task": task})
        turn, done = 0, False
        while not done:
            obs, _, term, trunc, _ = await env.astep(expert_action(task, turn, obs))
            turn += 1
            counts[0] += 1
            done = term or trunc


def measure(backend, n_envs: int, episodes: int, max_batch: int) -> dict:
    shared = BatchingRetriever(backend, max_batch=max_batch, window_s=0.0)
    envs = [SearchEnv(split="test", retriever=shared) for _ in range(n_envs)]
    tasks = envs[0].tasks
    per_env = max(1, episodes // n_envs)
    plan = [[tasks[(i * per_env + j) % len(tasks)] for j in range(per_env)] for i in range(n_envs)]
    counts = [0]

    async def main():
        await asyncio.gather(*(run_env(e, p, counts) for e, p in zip(envs, plan)))

    start = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - start
    return {
        "steps/s": counts[0] / elapsed,
        "searches/s": shared.queries / elapsed,
        "queries/call": shared.queries / max(shared.backend_calls, 1),
        "steps": counts[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="lucene", choices=["lucene", "bm25s"])
    parser.add_argument("--episodes", type=int, default=1024)
    parser.add_argument("--envs", default="1,64,512")
    args = parser.parse_args()
    built = ensure_world_index(WorldConfig(), args.backend)
    backend = make_retriever(RetrieverConfig(backend=args.backend, index=str(built.index)))
    print(f"SearchEnv, built-in world (3,000 docs), {args.backend}, scripted expert, "
          f"{args.episodes} episodes per row")
    header = f"{'envs':>6} {'batching':>9} {'steps/s':>9} {'searches/s':>11} {'queries/call':>13}"
    print(header)
    print("-" * len(header))
    for n in [int(x) for x in args.envs.split(",")]:
        for label, max_batch in (("on", 512), ("off", 1)):
            if n == 1 and label == "off":
                continue
            row = measure(backend, n, args.episodes, max_batch)
            print(f"{n:>6} {label:>9} {row['steps/s']:>9.0f} {row['searches/s']:>11.0f} "
                  f"{row['queries/call']:>13.1f}")
    backend.close()


if __name__ == "__main__":
    main()
