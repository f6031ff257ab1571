"""``creditgym credit-bench``: score every credit estimator against ground-truth turn labels.

``creditgym credit-bench FILE [FILE...] [--estimators a,b] [--set-option est.key=val] [--groups
all|mixed] [--json OUT] [--png OUT] [--force] [--allow-module MOD] [--mc-model DIR [--mc-k K]
[--budget SECONDS] ...]`` reads trajectory JSONL files (a run's ``rollouts.jsonl``, ``creditgym
eval`` output), groups the finished trajectories by ``group`` as the trainer does (within each
file), labels their turns through their environment's ``turn_labels`` (``bench.labels``: the file's
``env_id`` is checked like ``replay rescore`` checks it), runs every registered estimator (or
``--estimators``) with its default config plus ``--set-option`` on the same groups (``--groups
mixed``: only the groups whose members' returns differ, ``credit_bench.mixed_outcome_groups``), and
prints a table of the metrics of ``bench.credit_bench``.
``--json OUT`` writes one object per estimator (``estimator``, ``pairwise_accuracy``, ``auc``,
``spearman_mc``, ``wrong_sign``, ``ms_per_1k_turns``, ``turns``, ``skipped``), ``--png OUT`` a
bar chart of pairwise accuracy and AUC. Outputs are written atomically; one that is an input
file (or its ``.meta.json``) is refused, and an existing one needs ``--force``.

``--mc-model DIR`` also estimates Monte-Carlo turn values (``bench.mc_values``) with the
transformers policy in ``DIR``: ``--mc-k`` continuations per state at ``--mc-temperature``, in
trajectory then turn order until ``--budget`` seconds are spent; ``spearman_mc`` is computed over
the turns that got a value. Environments are rebuilt through the same ``EnvPolicy`` as ``replay
rescore`` (``--allow-module``, ``--trust-file``, ``--retriever``, ``--tasks``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from creditgym.errors import ConfigError


def parse_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["gigpo.gamma=0.9", "tempo.x=1"]`` -> ``{"gigpo": {"gamma": 0.9}, "tempo": {"x": 1}}``
    (values read as YAML, as ``replay rescore --credit-opt`` reads them)."""
    from creditgym.replay.cli import parse_pairs

    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_pairs(items, "--set-option").items():
        name, sep, option = key.rpartition(".")
        if not sep or not name or not option:
            raise ConfigError(f"--set-option {key}={value}: expected ESTIMATOR.OPTION=VALUE, "
                              "e.g. --set-option gigpo.gamma=0.9")
        out.setdefault(name, {})[option] = value
    return out


def _progress(desc: str, unit: str):
    from tqdm import tqdm

    return lambda items: tqdm(items, desc=desc, unit=unit, disable=not sys.stderr.isatty(),
                              leave=False)


def load_groups(paths: list[Path]) -> list[list]:
    """The finished trajectories (no error, at least one turn) grouped by ``group`` as the
    trainer groups them, file by file: two files never share a group (``eval`` files of one
    task set reuse group ids). A record without action token ids (a text-only demonstration)
    cannot be credited: an error."""
    from creditgym.replay.cli import load
    from creditgym.replay.rescore import group_trajectories

    groups = []
    for path in paths:
        usable = []
        for t in load(path):
            if t.error is not None or t.n_turns == 0:
                continue
            if not any(t.action_ids):
                raise ConfigError(
                    f"{path}: trajectory {t.id!r} has no action token ids (a text-only record, "
                    "such as a warm-start demonstration); credit works on tokens, so benchmark "
                    "files written by a rollout (`creditgym eval`, a run's rollouts.jsonl)")
            usable.append(t)
        groups += group_trajectories(usable)
    if not groups:
        raise ConfigError(f"{', '.join(map(str, paths))}: no finished trajectory to benchmark "
                          "(every record failed or has no turns)")
    return groups


def cmd_credit_bench(args: argparse.Namespace) -> int:
    from creditgym.bench.credit_bench import bench_credit, estimator_names, mixed_outcome_groups
    from creditgym.bench.labels import turn_labels
    from creditgym.credit.registry import get_estimator, make_config
    from creditgym.files import atomic_write_text, check_output
    from creditgym.replay.cli import env_policy
    from creditgym.replay.io import meta_path

    # Everything the user typed is checked before a file is read.
    paths = [Path(f) for f in args.files]
    inputs = [*paths, *map(meta_path, paths)]
    outs = [(flag, check_output(out, inputs, force=args.force))
            for flag, out in (("--json", args.json), ("--png", args.png)) if out]
    if len(outs) == 2 and outs[0][1].resolve() == outs[1][1].resolve():
        raise ConfigError("--json and --png name the same file; give each its own path")
    wanted = [n.strip() for n in (args.estimators or "").split(",") if n.strip()]
    if args.estimators is not None and not wanted:
        raise ConfigError("--estimators: give comma-separated names, e.g. --estimators grpo,gigpo")
    names = estimator_names(wanted)
    mc_settings = check_mc_arguments(args)
    options = {}
    for name, opts in parse_options(args.set_option).items():
        short = get_estimator(name).name  # an unknown name fails here, listing the registered
        if short not in names:
            raise ConfigError(f"--set-option {name}.{next(iter(opts))}: {short!r} is not among "
                              f"the benchmarked estimators ({', '.join(names)})")
        make_config({**opts, "name": short})  # an unknown option fails here, listing the valid
        options[short] = opts

    groups = load_groups(paths)
    scope = ""
    if args.groups == "mixed":
        kept = mixed_outcome_groups(groups)
        if not kept:
            raise ConfigError(f"--groups mixed: in all {len(groups)} groups every member has the "
                              "same return, so nothing is left to score; drop --groups mixed")
        scope = f" (--groups mixed: {len(kept)} of {len(groups)} groups)"
        groups = kept
    ordered = [t for g in groups for t in g]
    policy = env_policy(args)
    labels = turn_labels(ordered, policy, progress=_progress("labels", "traj"))
    if mc_settings is not None:
        run_mc(args.mc_model, mc_settings, ordered, policy)
    rows = bench_credit(groups, labels, estimators=names, options=options,
                        progress=_progress("estimators", "estimator"))

    print_table(rows, ordered, labels, f"{len(groups)} groups{scope}")
    for flag, out in outs:
        if flag == "--json":
            atomic_write_text(out, json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
        else:
            plot_bench(rows, out)
        print(f"{flag[2:]}: {out}")
    return 0


def check_mc_arguments(args: argparse.Namespace):
    """The ``MCSettings`` of the ``--mc-*``/``--budget`` flags (None without ``--mc-model``),
    checked before any file is read."""
    from creditgym.bench.mc_values import MCSettings

    given = [flag for flag, value in (("--mc-k", args.mc_k), ("--budget", args.budget),
                                      ("--mc-temperature", args.mc_temperature),
                                      ("--mc-max-new-tokens", args.mc_max_new_tokens),
                                      ("--mc-seed", args.mc_seed)) if value is not None]
    if args.mc_model is None:
        if given:
            raise ConfigError(f"{given[0]} sets up Monte-Carlo values, which need --mc-model DIR "
                              "(the policy checkpoint that wrote the records)")
        return None
    if not Path(args.mc_model).is_dir():
        raise ConfigError(f"--mc-model {args.mc_model}: not a folder; give a Hugging Face model "
                          "folder (a run's checkpoint export, or creditgym.agents.tiny's output)")
    settings = MCSettings(
        k=8 if args.mc_k is None else args.mc_k, budget_s=args.budget,
        temperature=1.0 if args.mc_temperature is None else args.mc_temperature,
        max_new_tokens=args.mc_max_new_tokens, max_context_tokens=args.mc_max_context,
        seed=args.mc_seed or 0)
    settings.check()
    return settings


def run_mc(model_dir: str, settings, trajs: list, policy) -> None:
    """Estimate the turns' Monte-Carlo values with the policy in ``model_dir`` and store them
    in the records (in memory), saying how many turns got one."""
    from creditgym.agents.backends import make_backend
    from creditgym.agents.chat import ChatRenderer
    from tqdm import tqdm

    from creditgym.bench.mc_values import attach, estimate_mc_values

    backend = make_backend("transformers", model=model_dir, seed=settings.seed)
    try:

        result = estimate_mc_values(
            trajs, backend, ChatRenderer(backend.tokenizer), policy, settings,
            progress=lambda total: tqdm(total=total, desc=f"MC values (K={settings.k})",
                                        unit="state", disable=not sys.stderr.isatty()))
    finally:
        backend.close()
    attach(trajs, result)
    turns = sum(t.n_turns for t in trajs)
    stop = f", budget of {settings.budget_s:g} s spent" if result.stopped_early else ""
    print(f"MC values: {result.turns_valued} of {turns} turns ({result.states_done} of "
          f"{result.states_total} states, K={settings.k}, {result.seconds:.1f} s{stop})")
    for what, items in (("skipped", result.skipped), ("failed", result.failed)):
        if items:
            print(f"MC values: {len(items)} {what}, first: {' '.join(map(str, items[0]))}")


def print_table(rows: list, trajs: list, labels: list, groups: str) -> None:
    """The metrics as a rich table, with what was measured above it."""
    from collections import Counter

    from rich.console import Console
    from rich.table import Table

    counts = Counter(x for lab in labels if lab is not None for x in lab)
    turns = sum(t.n_turns for t in trajs)
    labelled = sum(counts.values())
    title = (f"credit bench: {len(trajs)} trajectories in {groups}, {turns} turns, "
             f"{labelled} labelled (useful {counts['useful']}, wasted {counts['wasted']}, "
             f"harmful {counts['harmful']})")
    table = Table(title=title)
    for col in ("estimator", "pairwise acc", "winners", "losers", "AUC", "spearman MC",
                "wrong sign", "ms / 1k turns"):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    table.add_column("note")

    def fmt(v: float | None, digits: int = 3) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    for r in rows:
        table.add_row(r.estimator, fmt(r.pairwise_accuracy), fmt(r.pairwise_winners),
                      fmt(r.pairwise_losers), fmt(r.auc), fmt(r.spearman_mc),
                      fmt(r.wrong_sign), fmt(r.ms_per_1k_turns, 2), r.skipped or "")
    console = Console(width=max(120, Console().width))
    console.print(table)
    if not labelled:
        console.print("no trajectory has ground-truth labels (its environment has no "
                      "turn_labels, or its tasks lack what the labels need): only cost is measured")


def plot_bench(rows: list, out: Path) -> Path:
    """Bars of pairwise accuracy and AUC per estimator (0.5: chance), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from creditgym.files import write_png

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4))
    for offset, field, label in ((-0.2, "pairwise_accuracy", "pairwise accuracy"),
                                 (0.2, "auc", "AUC (useful vs not)")):
        values = [getattr(r, field) for r in rows]
        ax.bar(x + offset, [np.nan if v is None else v for v in values], width=0.4, label=label)
    for i, r in enumerate(rows):
        if r.skipped:
            ax.text(i, 0.02, "skipped", ha="center", rotation=90, fontsize=8)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(x, [r.estimator for r in rows])
    ax.set(ylim=(0, 1), ylabel="score", title="credit bench: turn credit against ground truth")
    ax.legend(loc="upper right")
    fig.tight_layout()
    write_png(fig, out)
    return out


def add_bench_arguments(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``credit-bench`` on the ``creditgym`` subparsers."""
    from creditgym.replay.cli import add_trust_arguments

    p = subparsers.add_parser(
        "credit-bench",
        help="score every credit estimator's per-turn advantages against ground-truth labels",
        description="Score every registered credit estimator's per-turn advantages against "
                    "the ground-truth turn labels of the environments the records name.")
    p.add_argument("files", nargs="+", metavar="FILE", help="trajectory JSONL file(s)")
    p.add_argument("--estimators", metavar="A,B",
                   help="comma-separated estimators (default: every registered one)")
    p.add_argument("--set-option", action="append", metavar="EST.KEY=VALUE",
                   help="an estimator's option, e.g. gigpo.gamma=0.9 (repeatable)")
    p.add_argument("--groups", choices=("all", "mixed"), default="all",
                   help="mixed: score only the groups whose members' returns differ (where "
                        "outcome-based credit can say anything); default all")
    p.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    p.add_argument("--png", metavar="OUT", help="write a bar chart of the metrics")
    p.add_argument("--force", action="store_true", help="replace --json/--png if they exist")
    add_trust_arguments(p)
    mc = p.add_argument_group("Monte-Carlo turn values (costly; needs the policy checkpoint)")
    mc.add_argument("--mc-model", metavar="DIR",
                    help="estimate MC turn values with the transformers policy in DIR")
    mc.add_argument("--mc-k", type=int, metavar="K", help="continuations per state (default 8)")
    mc.add_argument("--budget", type=float, metavar="SECONDS",
                    help="seconds of Monte-Carlo work (model loading excluded) after which "
                         "no further state is started (default: no limit)")
    mc.add_argument("--mc-temperature", type=float, metavar="T",
                    help="sampling temperature of the continuations (default 1.0)")
    mc.add_argument("--mc-max-new-tokens", type=int, metavar="N",
                    help="most tokens per action (default: the longest recorded action)")
    mc.add_argument("--mc-max-context", type=int, default=4096, metavar="N",
                    help="context budget of a continuation (default 4096, at most the model's)")
    mc.add_argument("--mc-seed", type=int, metavar="S",
                    help="seed of the continuations (default 0)")
    p.set_defaults(func=cmd_credit_bench)
    return p
