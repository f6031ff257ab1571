"""Benchmark multi-turn rollouts: throughput on SearchEnv, and the cost of observation encoding.

Part (a), throughput: the tiny model (built into a temp dir from the built-in world's texts, or
``--model PATH``) rolls out on SearchEnv (bm25s world index) through ``TransformersBackend``
at several (tasks, group size, max concurrency) settings; each row is one ``rollout`` call
after a warm-up. Columns: ``trajs`` trajectories, ``conc`` ``RolloutConfig.max_concurrency``,
``s`` wall time, ``traj/s``, ``gen tok`` generated tokens in all, ``gen tok/s``, ``turns``
mean turns per trajectory, ``calls``/``batch`` backend generate calls and their mean size.

Part (b), observation encoding per turn, on one long conversation of real SearchEnv
observations (each ~3 passages of the world corpus): token-in/token-out
(``ChatRenderer.observation_ids``: only the new message's template delta is tokenised) versus
re-rendering the whole conversation with the chat template and re-tokenising it every turn.
Columns: ``turns``; mean ms per turn of each; the last turn's ms of each; context tokens at the
end. Token-in/token-out stays flat per turn; re-rendering grows with the conversation.

    python benchmarks/rollout.py                      # both parts, CPU, a few minutes
    python benchmarks/rollout.py --threads 1          # one torch thread (faster on a busy box)
    python benchmarks/rollout.py --part encode --turns 8 32 128 512
"""

from __future__ import annotations

import argparse
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

    def counted_generate(prompts, sampling):  # counts backend calls; the work is unchanged
        calls.append(len(prompts))
        return generate(prompts, sampling)

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
    ap.add_argument("--part", choices=("all", "throughput", "encode"), default="all")
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: build a tiny one)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--max-turns", type=int, default=3)
    ap.add_argument("--max-generation-batch", type=int, default=64)
    ap.add_argument("--scale", type=int, default=8,
                    help="tasks of the 64-task rows = 8 x scale / 8 (lower it for a quick look)")
    ap.add_argument("--turns", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--world-documents", type=int, default=500)
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
