"""The ``creditgym replay`` subcommands: show, verify, rescore, html and export trajectory files.

``add_replay_arguments(subparsers)`` registers ``replay`` on the ``creditgym`` parser; each
subcommand sets ``func`` to its handler, which returns the exit code (``verify``: 1 when a
trajectory diverged or nothing could be replayed).

Commands that write (rescore, html, export) refuse an output that is one of their inputs (also
through a symlink, hard link or ``./``) and an existing output without ``--force``, and replace
it atomically. ``html --groups`` writes the group view instead (``replay.group_view``).
``verify`` and ``rescore`` treat the file as untrusted (``replay.trust``): ``--allow-module``,
``--trust-file``, ``--retriever`` and ``--tasks`` widen what it may name.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from creditgym.errors import ConfigError
from creditgym.trajectory import Trajectory


HTML_LIMIT = 2000
"""``replay html``'s default ``--limit``."""


def _print_err(message: str) -> None:
    print(message, file=sys.stderr)


def load(path: str | Path, ids: list[str] | None = None) -> list[Trajectory]:
    """The trajectories of ``path`` (only ``ids`` when given), torn-line warnings on stderr."""
    from creditgym.replay.io import iter_trajectories

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"trajectory file {path} does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trajs = list(iter_trajectories(path))
    for w in caught:
        _print_err(f"warning: {w.message}")
    if ids:
        by_id = {t.id: t for t in trajs}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ConfigError(
                f"{path} has no trajectory with id {missing[0]!r} "
                f"(it has {len(trajs)}; `creditgym replay show {path}` lists them)"
            )
        trajs = [by_id[i] for i in ids]
    return trajs


def parse_value(text: str) -> Any:
    """A command-line value as YAML (``0.9`` -> float, ``true`` -> bool, ``[a, b]`` -> list,
    anything else a string)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_pairs(items: list[str] | None, option: str, *, commas: bool = False) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` (or with ``commas`` also ``["a=1,b=2"]``) -> ``{"a": 1, "b.c": "x"}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        for pair in item.split(",") if commas else [item]:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{option}: expected KEY=VALUE, got {pair!r}")
            out[key.strip()] = parse_value(value.strip())
    return out


def cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from creditgym.replay.io import iter_trajectories
    from creditgym.replay.show import SafeTextStream, show_file

    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"trajectory file {path} does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.id:  # a cheap first pass, so a wrong id fails before anything is printed
            missing = set(args.id) - {t.id for t in iter_trajectories(path) if t.id in args.id}
            if missing:
                raise ConfigError(
                    f"{path} has no trajectory with id {sorted(missing)[0]!r} "
                    f"(`creditgym replay show {path}` lists them)"
                )
        show_file(
            path,
            lambda: iter_trajectories(path),
            console=Console(file=SafeTextStream(sys.stdout)),
            ids=args.id,
            all_details=args.all,
            first=args.first,
            max_observation_chars=args.max_obs_chars,
        )
    for message in dict.fromkeys(str(w.message) for w in caught):
        _print_err(f"warning: {message}")
    return 0


def env_policy(args: argparse.Namespace, trusted_paths: set[str] | None = None):
    """The ``EnvPolicy`` of verify/rescore's ``--allow-module/--trust-file/--retriever/--tasks``."""
    from creditgym.replay.trust import EnvPolicy, retriever_spec

    return EnvPolicy(
        allow_modules=tuple(args.allow_module or ()),
        trust_file=args.trust_file,
        retriever=retriever_spec(args.retriever) if args.retriever else None,
        tasks_path=args.tasks,
        trusted_paths=trusted_paths or set(),
    )


def check_replay_output(args: argparse.Namespace, *extra_inputs: Path) -> Path:
    """``-o`` after ``check_output``: not the input file, its sidecar or ``extra_inputs``."""
    from creditgym.files import check_output
    from creditgym.replay.io import meta_path

    src = Path(args.file)
    return check_output(
        args.out, [src, meta_path(src), *extra_inputs], force=getattr(args, "force", False)
    )


def cmd_verify(args: argparse.Namespace) -> int:
    from creditgym.replay.verify import verify_trajectories

    trajs = load(args.file, args.id)
    policy = env_policy(args)
    policy.check(trajs)
    found = verify_trajectories(trajs, make_env=policy.make_env, progress=sys.stderr.isatty())
    diverged = [d for d in found if d.kind == "diverged"]
    skipped = [d for d in found if d.kind == "skipped"]
    for d in found:
        print(d.describe(args.width))
    replayed = len(trajs) - len(skipped)
    print(
        f"{args.file}: {replayed - len(diverged)}/{replayed} replayed trajectories match, "
        f"{len(diverged)} diverged, {len(skipped)} skipped"
    )
    if replayed == 0:
        _print_err("error: no trajectory could be replayed, so nothing was verified")
        return 1
    return 1 if diverged else 0


def cmd_rescore(args: argparse.Namespace) -> int:
    from creditgym.files import check_output
    from creditgym.replay.io import meta_path, read_metadata, run_metadata, write_trajectories
    from creditgym.replay.rescore import dotted_to_nested, rescore_trajectories
    from creditgym.replay.trust import leaf_paths

    src = Path(args.file)
    out = check_replay_output(args)
    check_output(meta_path(out), [src, meta_path(src)], force=True)
    reward = parse_pairs(args.reward, "--reward", commas=True)
    env_overrides = dotted_to_nested(parse_pairs(args.set, "--set"))
    credit_opts = parse_pairs(args.credit_opt, "--credit-opt")
    if credit_opts and not args.credit:
        raise ConfigError("--credit-opt needs --credit NAME")
    if not (reward or env_overrides or args.credit):
        raise ConfigError("nothing to re-score: give --reward, --set and/or --credit")
    credit = {"name": args.credit, **credit_opts} if args.credit else None
    trajs = load(args.file)
    policy = env_policy(args, leaf_paths(env_overrides) if env_overrides else set())
    if reward or env_overrides:  # only re-stepping builds environments
        policy.check(trajs)
    result = rescore_trajectories(
        trajs,
        reward_overrides=reward,
        env_overrides=env_overrides,
        credit=credit,
        make_env=policy.make_env,
        progress=sys.stderr.isatty(),
    )
    meta = run_metadata(
        rescored_from=str(src),
        reward_overrides=reward,
        env_overrides=env_overrides,
        credit=credit,
        source=read_metadata(src),
    )
    write_trajectories(out, result.trajectories, meta, overwrite=args.force)
    before = sum(t.episode_return for t in trajs) / max(len(trajs), 1)
    after = sum(t.episode_return for t in result.trajectories) / max(len(trajs), 1)
    print(
        f"{out}: {len(trajs)} trajectories, {result.rescored} re-stepped, {len(result.kept)} kept "
        f"as recorded; mean return {before:.4g} -> {after:.4g}"
    )
    if result.credit:
        print(
            "credit: "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in result.credit.items()
            )
        )
    return 0


def cmd_html(args: argparse.Namespace) -> int:
    from creditgym.replay.html import tokenizer_decoder, write_html

    if args.groups:
        from creditgym.replay.group_view import cmd_group_html

        return cmd_group_html(args)
    for flag, value in (("--max-groups", args.max_groups), ("--group", args.group),
                        ("--allow-module", args.allow_module)):
        if value is not None:
            raise ConfigError(f"{flag} belongs to the group view: add --groups")
    tok = Path(args.tokenizer) if args.tokenizer else None
    check_replay_output(args, *(sorted(tok.iterdir()) if tok and tok.is_dir() else ()))
    trajs = load(args.file, args.id)
    limit = HTML_LIMIT if args.limit is None else args.limit
    if len(trajs) > limit:
        _print_err(f"note: showing the first {limit} of {len(trajs)} trajectories (--limit)")
        trajs = trajs[:limit]
    decode = tokenizer_decoder(args.tokenizer) if args.tokenizer else None
    out = write_html(
        trajs,
        args.out,
        title=args.title or f"creditgym: {Path(args.file).name}",
        decode_tokens=decode,
    )
    print(out)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from creditgym.replay.export import export_table

    out = check_replay_output(args)
    trajs = load(args.file)
    print(export_table(trajs, out, format=args.format, per_turn=args.per_turn))
    return 0


def add_trust_arguments(p: argparse.ArgumentParser) -> None:
    """What a trajectory file may make replay build (see ``creditgym.replay.trust``)."""
    p.add_argument(
        "--allow-module",
        action="append",
        metavar="MOD",
        help="import MOD and allow the environment ids it registers (repeatable)",
    )
    p.add_argument(
        "--trust-file",
        action="store_true",
        help="follow the paths and URLs the file names (retriever, tasks_path, ...): "
        "only for files you made yourself",
    )
    p.add_argument(
        "--retriever",
        metavar="URL|INDEX_DIR",
        help="search this retrieval server or index instead of the one the file names",
    )
    p.add_argument("--tasks", metavar="PATH", help="use this task file instead of the file's tasks_path")


def add_replay_arguments(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``replay`` and its subcommands on the ``creditgym`` subparsers."""
    replay = subparsers.add_parser(
        "replay",
        help="inspect, verify, re-score and export trajectory files",
        description="Work with trajectory JSONL files written by rollouts (eval, train).",
    )
    sub = replay.add_subparsers(dest="replay_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("show", help="print trajectories in the terminal")
    p.add_argument("file", help="trajectory JSONL file")
    p.add_argument("--id", action="append", help="show this trajectory (repeatable)")
    p.add_argument("--all", action="store_true", help="show every trajectory in full")
    p.add_argument(
        "--first",
        type=int,
        default=1,
        help="without --id/--all: show this many trajectories in full after the table",
    )
    p.add_argument(
        "--max-obs-chars",
        type=int,
        default=600,
        help="shorten observations to about this many characters (0: never)",
    )
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "verify", help="re-step trajectories through their environments; exit 1 on divergence"
    )
    p.add_argument("file", help="trajectory JSONL file")
    p.add_argument("--id", action="append", help="verify only this trajectory (repeatable)")
    p.add_argument("--width", type=int, default=160, help="longest value shown per divergence")
    add_trust_arguments(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("rescore", help="recompute rewards and/or advantages into a new file")
    p.add_argument("file", help="trajectory JSONL file (never modified)")
    p.add_argument("-o", "--out", required=True, help="new trajectory file to write")
    p.add_argument(
        "--reward",
        action="append",
        metavar="K=V[,K=V]",
        help="reward settings to change, e.g. em=0,f1=1 or format=0.2",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any env keyword argument, dotted for nesting (reward.search_cost=0.05)",
    )
    p.add_argument("--credit", help="credit estimator: grpo, rloo, gigpo, igpo, tempo, oprl, pure")
    p.add_argument(
        "--credit-opt",
        action="append",
        metavar="KEY=VALUE",
        help="estimator option, e.g. gamma=0.9 (repeatable)",
    )
    p.add_argument("--force", action="store_true", help="replace -o if it exists")
    add_trust_arguments(p)
    p.set_defaults(func=cmd_rescore)

    p = sub.add_parser("html", help="write one self-contained HTML page to browse trajectories")
    p.add_argument("file", help="trajectory JSONL file")
    p.add_argument("-o", "--out", required=True, help="HTML file to write")
    p.add_argument(
        "--tokenizer", help="tokenizer folder: colour every action token by its advantage"
    )
    p.add_argument("--id", action="append", help="only this trajectory (repeatable)")
    p.add_argument(
        "--limit", type=int, help=f"at most this many trajectories (default {HTML_LIMIT})"
    )
    p.add_argument("--title", help="page title")
    p.add_argument("--force", action="store_true", help="replace -o if it exists")
    p.add_argument(
        "--groups",
        action="store_true",
        help="draw each group as its prefix tree, coloured by every estimator's advantages",
    )
    p.add_argument(
        "--max-groups", type=int, help="with --groups: at most this many groups (default 50)"
    )
    p.add_argument("--group", action="append", help="with --groups: only this group (repeatable)")
    p.add_argument(
        "--allow-module",
        action="append",
        metavar="MOD",
        help="with --groups: allow the environment ids MOD registers (for their turn labels)",
    )
    p.set_defaults(func=cmd_html)

    p = sub.add_parser("export", help="flatten to a parquet or JSONL table (pandas, datasets)")
    p.add_argument("file", help="trajectory JSONL file")
    p.add_argument("-o", "--out", required=True, help="table file (.parquet or .jsonl)")
    p.add_argument("--format", choices=("parquet", "jsonl"), help="default: from the suffix of -o")
    p.add_argument(
        "--per-turn", action="store_true", help="one row per turn instead of per trajectory"
    )
    p.add_argument("--force", action="store_true", help="replace -o if it exists")
    p.set_defaults(func=cmd_export)
    return replay


def main(argv: list[str] | None = None) -> int:
    """``python -m creditgym.replay.cli ...``: the replay subcommands on their own."""
    from creditgym.errors import CreditGymError

    parser = argparse.ArgumentParser(prog="creditgym")
    add_replay_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CreditGymError as exc:
        print(f"creditgym replay {args.replay_command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
