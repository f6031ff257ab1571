"""Benchmark multi-turn rollouts: throughput on SearchEnv, and the cost of observation encoding.

Part (a), throughput: the tiny model (built into a temp dir from the built-in world's texts, or
``--model PATH``) rolls out on SearchEnv (bm25s world index) through ``TransformersBackend``
at several (tasks, group size, max concurrency) settings; each row is one ``rollout`` call
after a warm-up. Columns: ``trajs`` trajectories, ``conc`` ``RolloutConfig.max_concurrency``,
``s`` wall time, ``traj/s``, ``gen tok`` generated tokens in all, ``gen tok/s``, ``turns``
mean turns per trajectory, ``calls``/``batch`` backend generate calls and their mean size.

Part (c), ``--part batching``: the cost and the reproducibility of each
``RolloutConfig.batching`` mode (``rounds``: lockstep, batches sorted by trajectory; ``free``:
whatever is queued; ``alone``: one prompt per call). The same rollout (``--tasks`` tasks x
``--group`` members, seeded sampling) runs ``--repeats`` times per mode, the modes interleaved
(a busy machine then slows them alike); columns: ``min s`` / ``max s`` wall time over the runs,
``gen s`` the part of it spent in backend calls (the rest: environments, rendering, waiting;
median run), ``calls``/``batch`` backend calls and their mean size (first run), ``identical``
whether all runs' records (every field but ``created``) are byte-identical, ``same tokens``
whether the actions equal the first mode's (they should: per-request seeds make tokens
batch-independent).
``--step-jitter MS``: every environment step first sleeps a random 0..MS ms (a differently
seeded stream per run), as a slow tool would: the two runs then see different arrival orders.

Part (b), observation encoding per turn, on one long conversation of real SearchEnv
observations (each ~3 passages of the world corpus): token-in/token-out
(``ChatRenderer.observation_ids``: only the new message's template delta is tokenised) versus
re-rendering the whole conversation with the chat template and re-tokenising it every turn.
Columns: ``turns``; mean ms per turn of each; the last turn's ms of each; context tokens at the
end. Token-in/token-out stays flat per turn; re-rendering grows with the conversation.

    python benchmarks/rollout.py                      # both parts, CPU, a few minutes
    python benchmarks/rollout.py --threads 1          # one torch thread (faster on a busy box)
    python benchmarks/rollout.py --part encode --turns 8 32 128 512
    python benchmarks/rollout.py --part batching --threads 2 [--batching rounds free alone]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

ENV_ID = "creditgym/Search-v0"
SETTINGS = [(8, 1, 8), (8, 8, 64), (64, 8, 64), (64, 8, 512)]
"""(tasks, group size, max concurrency) of the throughput rows."""


def _world_texts(num_documents: int) -> list[str]:
    from creditgym.envs.world import World, WorldConfig

    world = World.generate(WorldConfig(seed=0, num_documents=num_documents))
    docs = [doc["contents"] for doc in world.iter_documents()]
    return docs + [task.question for task in world.questions("train")]


def bench_throughput(model_dir: Path, args: argparse.Namespace) -> None:
    from creditgym.agents.backend import SamplingParams
    from creditgym.agents.chat import ChatRenderer
    from creditgym.agents.hf_backend import TransformersBackend
    from creditgym.agents.rollout import SEARCH_R1_STOPS, RolloutConfig, rollout
    from creditgym.envs.factory import env_factory

    env_kwargs = {"split": "test", "world_backend": "bm25s", "max_turns": args.max_turns}
    make_env = env_factory(ENV_ID, env_kwargs)
    probe = make_env()
    tasks = list(probe.unwrapped.tasks)
    backend = TransformersBackend(model_dir, max_batch_size=args.max_generation_batch, seed=0)
    calls: list[int] = []
    generate = backend.generate

    def counted_generate(prompts, sampling, *, seeds=None):  # counts calls; same work
        calls.append(len(prompts))
        return generate(prompts, sampling, seeds=seeds)

    backend.generate = counted_generate  # type: ignore[method-assign]
    renderer = ChatRenderer(backend.tokenizer)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0,
                              stop=SEARCH_R1_STOPS, seed=0)

    def run(n_tasks: int, group: int, concurrency: int):
        if n_tasks > len(tasks):
            raise SystemExit(f"the test split has {len(tasks)} tasks; lower --scale")
        config = RolloutConfig(group_size=group, sampling=sampling, max_concurrency=concurrency,
                               max_generation_batch=args.max_generation_batch,
                               max_context_tokens=backend.max_context)
        return rollout(make_env, tasks[:n_tasks], backend, renderer, config, env_id=ENV_ID,
                       env_kwargs=env_kwargs)

    run(2, 2, 4)  # warm-up: index loaded, kernels and tokenizer caches hot
    print(f"\n(a) rollout throughput: SearchEnv (bm25s), max_turns={args.max_turns}, "
          f"max_new_tokens={args.max_new_tokens}, T=1, max_generation_batch="
          f"{args.max_generation_batch}")
    header = (f"{'tasks':>6} {'group':>6} {'trajs':>6} {'conc':>5} {'s':>7} {'traj/s':>8} "
              f"{'gen tok':>8} {'gen tok/s':>10} {'turns':>6} {'calls':>6} {'batch':>6} {'err':>4}")
    print(header)
    print("-" * len(header))
    for n_tasks, group, concurrency in SETTINGS:
        n_tasks = max(1, n_tasks * args.scale // 8) if n_tasks > 8 else n_tasks
        calls.clear()
        t0 = time.perf_counter()
        trajs = run(n_tasks, group, concurrency)
        seconds = time.perf_counter() - t0
        tokens = sum(len(a) for t in trajs for a in t.action_ids)
        turns = sum(t.n_turns for t in trajs) / len(trajs)
        errored = sum(t.error is not None for t in trajs)
        print(f"{n_tasks:>6} {group:>6} {len(trajs):>6} {concurrency:>5} {seconds:>7.2f} "
              f"{len(trajs) / seconds:>8.1f} {tokens:>8} {tokens / seconds:>10.0f} {turns:>6.2f} "
              f"{len(calls):>6} {sum(calls) / max(len(calls), 1):>6.1f} {errored:>4}", flush=True)
    backend.close()
    probe.close()


def bench_batching(model_dir: Path, args: argparse.Namespace) -> None:
    import hashlib
    import json

    from creditgym.agents.backend import SamplingParams
    from creditgym.agents.chat import ChatRenderer
    from creditgym.agents.hf_backend import TransformersBackend
    from creditgym.agents.rollout import SEARCH_R1_STOPS, RolloutConfig, rollout
    from creditgym.envs.factory import env_factory

    import random

    from creditgym.envs.search_env import SearchEnv

    env_kwargs = {"split": "test", "world_backend": "bm25s", "max_turns": args.max_turns}
    probe = env_factory(ENV_ID, env_kwargs)()
    tasks = list(probe.unwrapped.tasks)[: args.tasks]
    jitter = random.Random(0)

    class JitterEnv(SearchEnv):
        async def astep(self, action):
            await asyncio.sleep(jitter.uniform(0, args.step_jitter / 1000))
            return await super().astep(action)

    def make_env():  # one shared index, as the trainer shares its in-process retriever
        cls = JitterEnv if args.step_jitter > 0 else SearchEnv
        return cls(**env_kwargs, retriever=probe.unwrapped.retriever, tasks=probe.unwrapped.tasks)

    backend = TransformersBackend(model_dir, max_batch_size=args.max_generation_batch, seed=0)
    calls: list[int] = []
    generate = backend.generate

    gen_seconds = [0.0]

    def counted_generate(prompts, sampling, *, seeds=None):  # counts and times calls
        calls.append(len(prompts))
        t0 = time.perf_counter()
        try:
            return generate(prompts, sampling, seeds=seeds)
        finally:
            gen_seconds[0] += time.perf_counter() - t0

    backend.generate = counted_generate  # type: ignore[method-assign]
    renderer = ChatRenderer(backend.tokenizer)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0,
                              stop=SEARCH_R1_STOPS, seed=0)

    def run(mode: str, n_tasks: int, group: int):
        config = RolloutConfig(group_size=group, sampling=sampling, batching=mode,
                               max_generation_batch=args.max_generation_batch,
                               max_context_tokens=backend.max_context)
        return rollout(make_env, tasks[:n_tasks], backend, renderer, config, env_id=ENV_ID,
                       env_kwargs=env_kwargs)

    def digest(trajs) -> str:
        lines = [json.dumps({k: v for k, v in t.to_dict().items() if k != "created"},
                            sort_keys=True) for t in trajs]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    run("free", 2, 2)  # warm-up: index loaded, kernels and tokenizer caches hot
    print(f"\n(c) batching modes: {len(tasks)} tasks x {args.group} members, SearchEnv (bm25s), "
          f"max_turns={args.max_turns}, max_new_tokens={args.max_new_tokens}, T=1, "
          f"max_generation_batch={args.max_generation_batch}, step jitter 0..{args.step_jitter} ms")
    header = (f"{'mode':>7} {'min s':>7} {'max s':>7} {'gen s':>7} {'calls':>6} {'batch':>6} "
              f"{'identical':>10} {'same tokens':>12} {'err':>4}")
    print(header)
    print("-" * len(header))
    results: dict[str, list[tuple[float, float, str]]] = {m: [] for m in args.batching}
    first: dict[str, tuple[int, float, list, int]] = {}
    for attempt in range(args.repeats):
        for mode in args.batching:
            jitter.seed(attempt)
            calls.clear()
            gen_seconds[0] = 0.0
            t0 = time.perf_counter()
            trajs = run(mode, len(tasks), args.group)
            results[mode].append((time.perf_counter() - t0, gen_seconds[0], digest(trajs)))
            if attempt == 0:
                errored = sum(t.error is not None for t in trajs)
                first[mode] = (len(calls), sum(calls) / max(len(calls), 1),
                               [t.action_ids for t in trajs], errored)
    tokens0 = first[args.batching[0]][2]
    for mode in args.batching:
        times = sorted(results[mode])
        n_calls, mean, tokens, errored = first[mode]
        identical = len({d for _, _, d in results[mode]}) == 1
        print(f"{mode:>7} {times[0][0]:>7.2f} {times[-1][0]:>7.2f} "
              f"{times[len(times) // 2][1]:>7.2f} {n_calls:>6} {mean:>6.1f} "
              f"{'yes' if identical else 'NO':>10} {'yes' if tokens == tokens0 else 'NO':>12} "
              f"{errored:>4}", flush=True)
    backend.close()
    probe.close()


def bench_encoding(model_dir: Path, args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from creditgym.agents.chat import ChatRenderer
    from creditgym.envs.search_env import SearchEnv

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.model_max_length = 1 << 30  # long renders are the point here; no length warning
    renderer = ChatRenderer(tokenizer)
    longest = max(args.turns)
    env = SearchEnv(split="test", world_backend="bm25s", max_turns=longest + 1)
    tasks = env.tasks
    obs, info = env.reset(seed=0, options={"task": tasks[0]})
    messages = [{"role": "system", "content": info["system_prompt"]},
                {"role": "user", "content": obs}]
    # One long conversation of real search turns: query i looks up task i's question.
    actions, observations = [], []
    for i in range(longest):
        action = f"<think>Look it up.</think>\n<search> {tasks[(i + 1) % len(tasks)].question} </search>"
        obs, _, terminated, truncated, _ = env.step(action)
        assert not (terminated or truncated), "the benchmark conversation ended early"
        actions.append(action)
        observations.append(obs)
    env.close()
    obs_tokens = sum(len(renderer.encode(o)) for o in observations) / len(observations)
    print(f"\n(b) observation encoding per turn (mean observation: {obs_tokens:.0f} tokens, "
          f"{sum(map(len, observations)) / len(observations):.0f} characters)")
    header = (f"{'turns':>6} {'tito ms/turn':>13} {'rerender ms/turn':>17} {'tito last':>10} "
              f"{'rerender last':>14} {'context tok':>12}")
    print(header)
    print("-" * len(header))
    for n in args.turns:
        running = renderer.prompt_ids(messages)
        convo = list(messages)
        tito, rerender = [], []
        for action, obs in zip(actions[:n], observations[:n]):
            action_ids = renderer.encode(action)  # ends at the </search> stop, as generated
            running += action_ids  # generated ids are appended as they came: nothing to time
            convo += [{"role": "assistant", "content": action}, {"role": "user", "content": obs}]
            t0 = time.perf_counter()
            running += renderer.observation_ids(obs, action_ids)
            tito.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            renderer.prompt_ids(convo)
            rerender.append(time.perf_counter() - t0)
        print(f"{n:>6} {1000 * sum(tito) / n:>13.3f} {1000 * sum(rerender) / n:>17.3f} "
              f"{1000 * tito[-1]:>10.3f} {1000 * rerender[-1]:>14.3f} {len(running):>12}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("all", "throughput", "encode", "batching"),
                    default="all", help="all: throughput and encode")
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: build a tiny one)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--max-turns", type=int, default=3)
    ap.add_argument("--max-generation-batch", type=int, default=64)
    ap.add_argument("--scale", type=int, default=8,
                    help="tasks of the 64-task rows = 8 x scale / 8 (lower it for a quick look)")
    ap.add_argument("--turns", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--batching", nargs="+", choices=("rounds", "free", "alone"),
                    default=["rounds", "free", "alone"], help="modes of --part batching")
    ap.add_argument("--tasks", type=int, default=8, help="tasks of --part batching")
    ap.add_argument("--repeats", type=int, default=3,
                    help="--part batching: runs per mode (at least 2, to compare records)")
    ap.add_argument("--step-jitter", type=float, default=0.0,
                    help="--part batching: each env step sleeps a random 0..MS ms first")
    ap.add_argument("--group", type=int, default=8, help="members per task of --part batching")
    ap.add_argument("--world-documents", type=int, default=500)
    args = ap.parse_args()
    if args.repeats < 2:
        ap.error(f"--repeats {args.repeats}: at least 2 runs are needed to compare records")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")

    from creditgym.agents.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_tiny_model(Path(tmp) / "tiny",
                                                   _world_texts(args.world_documents))
        if args.part in ("all", "throughput"):
            bench_throughput(model_dir, args)
        if args.part in ("all", "encode"):
            bench_encoding(model_dir, args)
        if args.part == "batching":
            bench_batching(model_dir, args)


if __name__ == "__main__":
    main()
