"""What stepping through wrappers costs: ``creditgym.envs.astep`` steps/s on the calculator
environment, bare, as ``gymnasium.make`` wraps it, and under a plain (sync) gymnasium wrapper.

Run: ``python benchmarks/async_step.py [--envs 64] [--steps 5]``. ``--envs`` environments step
concurrently on one event loop. Bare and ``gymnasium.make`` (its bookkeeping wrappers pass the
async step through once their checks ran) are awaited on the loop; a sync wrapper makes each of
its steps run ``step`` in a worker thread.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import gymnasium

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import creditgym.envs  # noqa: E402,F401  (registers the built-in ids)
from creditgym.envs import astep  # noqa: E402
from creditgym.envs.examples.calculator import CalculatorEnv  # noqa: E402

ACTION = "<calculate>1 + 2</calculate>"


class Prefix(gymnasium.ObservationWrapper):
    def observation(self, observation):
        return "> " + observation


async def steps_per_second(make, n_envs: int, steps: int) -> float:
    envs = [make() for _ in range(n_envs)]
    for i, env in enumerate(envs):
        env.reset(seed=i)

    async def drive(env):
        for _ in range(steps):
            await astep(env, ACTION)

    start = time.perf_counter()
    await asyncio.gather(*(drive(env) for env in envs))
    elapsed = time.perf_counter() - start
    for env in envs:
        env.close()
    return n_envs * steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    rows = [
        ("bare ToolEnv (its astep)", CalculatorEnv),
        ("gymnasium.make (OrderEnforcing, PassiveEnvChecker)",
         lambda: gymnasium.make("creditgym/Calculator-v0")),
        ("sync ObservationWrapper (step in a thread)", lambda: Prefix(CalculatorEnv())),
    ]
    print(f"| environment ({args.envs} concurrent, {args.steps} steps each) | steps/s |")
    print("| --- | ---: |")
    for name, make in rows:
        print(f"| {name} | {asyncio.run(steps_per_second(make, args.envs, args.steps)):.0f} |")


if __name__ == "__main__":
    main()
