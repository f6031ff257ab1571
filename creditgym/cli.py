"""The ``creditgym`` command: one subcommand per job, each a thin wrapper over library calls."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from creditgym.errors import CreditGymError

BACKENDS = ("lucene", "bm25s", "dense")


def _add_world_options(p: argparse.ArgumentParser) -> None:
    from creditgym.envs.world import WorldConfig

    default = WorldConfig()
    p.add_argument("--world-seed", type=int, default=default.seed, help="seed of the built-in world")
    p.add_argument(
        "--world-docs", type=int, default=default.num_documents,
        help=f"documents in the built-in world (default {default.num_documents})",
    )


def _world_config(args: argparse.Namespace):
    from creditgym.envs.world import WorldConfig

    return WorldConfig(seed=args.world_seed, num_documents=args.world_docs)


def cmd_index(args: argparse.Namespace) -> int:
    from creditgym.envs.defaults import ensure_world_index
    from creditgym.envs.retrieval import build_index

    if args.corpus is not None and args.out is not None:
        from creditgym.files import check_output_dir

        # --overwrite replaces the folder: it must not hold the corpus it is built from
        check_output_dir(args.out, [args.corpus], force=True)
    if args.corpus is None:
        built = ensure_world_index(_world_config(args), args.backend, threads=args.threads)
        print(built.index)
        return 0
    if args.out is None:
        from creditgym.envs import cache

        args.out = cache.index_path(Path(args.corpus).stem, args.backend)
    print(build_index(args.backend, args.corpus, args.out, threads=args.threads, overwrite=args.overwrite))
    return 0


def cmd_serve_retriever(args: argparse.Namespace) -> int:
    from creditgym.envs.retrieval.server import run_from_args

    if args.index is None and args.url is None:  # default: the built-in world's index
        from creditgym.envs.defaults import ensure_world_index

        args.backend = args.backend or "lucene"
        args.index = str(ensure_world_index(_world_config(args), args.backend, threads=args.threads).index)
    run_from_args(args)
    return 0


def cmd_world(args: argparse.Namespace) -> int:
    import json

    from creditgym.envs.world import World
    from creditgym.files import atomic_writer, check_output_dir

    out = check_output_dir(args.out, force=args.force)
    world = World.generate(_world_config(args))
    out.mkdir(parents=True, exist_ok=True)
    world.write_corpus(out / "corpus.jsonl")
    for split in ("train", "test"):
        with atomic_writer(out / f"{split}.jsonl") as f:
            for task in world.questions(split):
                f.write(json.dumps(task.to_dict()) + "\n")
    print(out)
    return 0


def parse_assignments(items: list[str] | None, *, flag: str) -> dict:
    """``key=value`` pairs (dotted keys nest; values are JSON when they parse, else strings)."""
    import json

    from creditgym.errors import ConfigError

    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected key=value, e.g. {flag} top_k=5")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.table import Table

    from creditgym.agents.backend import SamplingParams
    from creditgym.agents.rollout import RolloutConfig
    from creditgym.evaluate import run_eval

    if not args.model and not args.url:
        from creditgym.errors import ConfigError

        raise ConfigError("give --model PATH (a local model folder) or --url of a policy server")
    from creditgym.files import check_output

    final = Path(args.out or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    final.parent.mkdir(parents=True, exist_ok=True)
    env_kwargs = parse_assignments(args.env_arg, flag="--env-arg")
    inputs = [p for p in (args.model, args.tokenizer, env_kwargs.get("tasks_path")) if isinstance(p, str)]
    for suffix in ("", ".meta.json", ".summary.json"):
        check_output(f"{final}{suffix}", inputs, force=args.force)
    # Replacing a run: write the new one aside and rename it over the old one only when done.
    out = final.with_name(f".{final.name}.partial") if final.exists() else final
    if out != final:  # a killed earlier replacement: start over rather than resume it
        for suffix in ("", ".meta.json", ".summary.json"):
            Path(f"{out}{suffix}").unlink(missing_ok=True)
    # no stop strings here: run_eval takes the environment's own (its tools' closing tags)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              seed=args.seed)
    config = RolloutConfig(sampling=sampling, max_context_tokens=args.max_context,
                           system_prompt=not args.no_system_prompt)
    summary = run_eval(env_id=args.env, env_kwargs=env_kwargs,
                       model=args.model, url=args.url, episodes=args.episodes, group=args.group,
                       out=out, rollout_config=config, seed=args.seed,
                       tokenizer_path=args.tokenizer)
    if out != final:
        import os

        from creditgym.files import fsync_dir

        for suffix in (".meta.json", ".summary.json", ""):  # the trajectories last
            if Path(f"{out}{suffix}").exists():
                os.replace(f"{out}{suffix}", f"{final}{suffix}")
        fsync_dir(final.parent)
        out = final
    table = Table(title=f"eval: {args.env}, {int(summary['trajectories'])} trajectories")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.3f}")
    Console().print(table)
    print(f"trajectories: {out}")
    return 0


_MOVED_SFT = {"demo_worlds": "sft.demonstrator.worlds", "demo_backend": "sft.demonstrator.backend",
              "skip_search_prob": "sft.demonstrator.skip_search_prob",
              "early_answer_prob": "sft.demonstrator.early_answer_prob",
              "lm_perfect_expert": "sft.lm_demonstrator: {perfect: true}"}


def moved_train_keys(data: dict[str, Any]) -> str | None:
    """Where the keys of a config written before ``env:`` named any environment went, or None.
    Checked before the strict loader, whose "unknown key" error would not say where to."""
    moves = []
    if "world" in data:
        moves.append("world -> env.kwargs.world (and add eval.env_kwargs: {split: test} to "
                     "evaluate on the world's test split as before)")
    env = data.get("env")
    if isinstance(env, dict):
        moves += [f"env.{k} -> env.kwargs.{k}" for k in env if k not in ("id", "kwargs", "wrappers")]
    sft = data.get("sft")
    if isinstance(sft, dict):
        moves += [f"sft.{k} -> {to}" for k, to in _MOVED_SFT.items() if k in sft]
    if not moves:
        return None
    return ("this config uses keys from before `env:` could name any environment; move them "
            "(configs/default.yaml shows the new layout):\n  - " + "\n  - ".join(moves))


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from creditgym.config import from_dict, read_yaml
    from creditgym.errors import ConfigError
    from creditgym.trainers.config import TrainConfig, check_train_config
    from creditgym.trainers.loop import Trainer

    # Everything is checked before a folder, model or index is made (errors: exit 2, no traceback).
    data: dict = read_yaml(args.config) if args.config else {}
    _deep_update(data, parse_assignments(args.set, flag="--set"))
    moved = moved_train_keys(data)
    if moved:
        raise ConfigError(f"{args.config or 'train'}: {moved}")
    config = from_dict(TrainConfig, data, where=args.config or "train")
    check_train_config(config, resume=args.resume)
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # not yet a rank: start the ranks
        from creditgym.trainers.launch import launch_train

        argv = ["train", *(["--config", args.config] if args.config else []),
                *(x for s in args.set or [] for x in ("--set", s)),
                *(["--resume"] if args.resume else [])]
        return launch_train(argv, args.nproc)
    if args.nproc > 1 and int(os.environ["WORLD_SIZE"]) != args.nproc:
        raise ConfigError(f"--nproc {args.nproc} under a launcher that started "
                          f"{os.environ['WORLD_SIZE']} ranks; leave --nproc out under torchrun")
    trainer = Trainer(config, resume=args.resume)
    result = trainer.run()
    if trainer.dist.backend is not None:
        import torch.distributed as dist

        dist.destroy_process_group()
    if not trainer.main:
        return 0  # rank 0 reports
    rows = [(name, m) for name in ("before", "after") if (m := result[name]) is not None]
    # success first, then what the environment's aggregate_metrics adds (bookkeeping left out)
    skip = {"trajectories", "errored", "generated_tokens", "truncated"}
    keys = [k for k in rows[-1][1] if k not in skip and "/" not in k][:8]
    keys = ["success", *[k for k in keys if k != "success"]]
    table = Table(title=f"held-out evaluation ({config.env.id}, up to {config.eval.episodes} tasks)")
    table.add_column("")
    for key in keys:
        table.add_column(key, justify="right")
    for name, m in rows:  # eval.before: false leaves out "before"
        table.add_row(name + (" RL (after SFT)" if name == "before" else " RL"),
                      *[f"{m.get(k, float('nan')):.3f}" for k in keys])
    Console().print(table)
    print(f"learning curves: {result['plot']}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from creditgym.files import check_output
    from creditgym.trainers.plot import plot_run

    run = Path(args.run_dir)
    out = check_output(args.out or run / "learning_curves.png",
                       [run / "metrics.jsonl", run / "evals.json"], force=args.force)
    print(plot_run(run, out))
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    from creditgym.trainers.export import export_model

    export_model(args.run_dir, args.out, checkpoint=args.checkpoint, force=args.force)
    return 0


def _deep_update(base: dict, updates: dict) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def cmd_demo(args: argparse.Namespace) -> int:
    from creditgym.quickstart import run_quickstart

    return run_quickstart(_world_config(args), backend=args.backend, questions=args.questions)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="creditgym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="build a retrieval index from a wiki-18 JSONL corpus (default: the built-in world)")
    p.add_argument("--corpus", help="wiki-18 JSONL file ({'id', 'contents'} per line); default: the built-in world")
    p.add_argument("--backend", choices=BACKENDS, default="lucene")
    p.add_argument("--out", type=Path, help="index directory (default: in the cache, $CREDITGYM_CACHE)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at --out")
    _add_world_options(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("serve-retriever", help="serve a retrieval backend over HTTP (Search-R1 protocol)")
    from creditgym.envs.retrieval.server import add_arguments as add_server_arguments

    add_server_arguments(p)
    _add_world_options(p)
    p.set_defaults(func=cmd_serve_retriever)

    p = sub.add_parser("world", help="write the built-in world's corpus and questions to a folder")
    p.add_argument("--out", required=True, help="output folder (corpus.jsonl, train.jsonl, test.jsonl)")
    p.add_argument("--force", action="store_true", help="replace the files of a non-empty --out folder")
    _add_world_options(p)
    p.set_defaults(func=cmd_world)

    p = sub.add_parser("demo", help="build the default world and its index, then answer questions through it")
    p.add_argument("--backend", choices=BACKENDS, default="lucene")
    p.add_argument("--questions", type=int, default=8, help="test questions to answer")
    _add_world_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval", help="roll out a policy on an environment; write trajectories and metrics")
    p.add_argument("--env", default="creditgym/Search-v0", help="gymnasium id (default creditgym/Search-v0)")
    p.add_argument("--env-arg", action="append", metavar="KEY=VALUE",
                   help="environment option, repeatable (e.g. --env-arg split=test --env-arg top_k=3)")
    p.add_argument("--model", help="local model folder (transformers backend), or the model name for --url")
    p.add_argument("--url", help="OpenAI-compatible server (vllm serve, creditgym serve-policy)")
    p.add_argument("--tokenizer", help="local tokenizer folder for --url (default: --model)")
    p.add_argument("--episodes", type=int, default=32, help="tasks to roll out (the environment's first N)")
    p.add_argument("--group", type=int, default=1, help="trajectories per task")
    p.add_argument("--out", help="trajectory file (default runs/eval-<time>.jsonl)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out (the old run stays until the new one is complete)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-context", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-system-prompt", action="store_true",
                   help="leave out the environment's system message, as a model trained with "
                        "system_prompt: false (configs/default.yaml, world-long.yaml) was")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train an agent on any environment (SFT warm start, then RL with a credit estimator)")
    p.add_argument("--config", help="YAML config (configs/default.yaml is the built-in default)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, repeatable (e.g. --set rl.iterations=5 --set credit=grpo)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's newest checkpoint")
    p.add_argument("--nproc", type=int, default=1,
                   help="local processes (ranks) to train with: FSDP2 data parallel, started through "
                        "torch.distributed.run (running under torchrun works too)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("plot", help="draw a training run's learning curves (PNG)")
    p.add_argument("run_dir", help="a `creditgym train` run folder")
    p.add_argument("-o", "--out", help="PNG to write (default RUN_DIR/learning_curves.png)")
    p.add_argument("--force", action="store_true", help="replace the PNG if it exists")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("export-model", help="write a run's trained policy as a Hugging Face "
                       "folder (safetensors; LoRA merged) for eval, serve-policy and vLLM")
    p.add_argument("run_dir", help="a `creditgym train` run folder")
    p.add_argument("--out", required=True, help="folder to write (created atomically)")
    p.add_argument("--checkpoint", help="a step-NNNNNN folder (default: the run's latest)")
    p.add_argument("--force", action="store_true", help="replace --out if it is not empty")
    p.set_defaults(func=cmd_export_model)

    from creditgym.agents.policy_server import add_serve_policy_arguments, run_serve_policy

    p = sub.add_parser("serve-policy", help="serve a transformers model with the OpenAI/vLLM completions API")
    add_serve_policy_arguments(p)
    p.set_defaults(func=run_serve_policy)

    from creditgym.replay.cli import add_replay_arguments

    add_replay_arguments(sub)

    from creditgym.bench.cli import add_bench_arguments

    add_bench_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CreditGymError as exc:
        print(f"creditgym {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
