"""Held-out success after RL with each credit estimator, from the same SFT warm start.

Run: ``python benchmarks/learning.py [--methods grpo,gigpo,igpo,tempo,oprl] [--seeds 0,1,2]
[--iterations N] [--jobs 2] [--set key=value ...]``. The warm start (SFT on the imperfect
scripted expert) runs once (or once per seed with ``--warm-start-per-seed``) and is evaluated on
the held-out split; every method and seed then starts RL from that same model with the same
budget (``--jobs`` runs in parallel, one torch thread each), and the table prints held-out success
before and after RL (mean +- std over seeds) and the searches per question. ``--set`` overrides go to every run (e.g. ``--set eval.episodes=64``).
Expect minutes per run on a CPU; this script prints, it does not assert.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from creditgym.cli import _deep_update, parse_assignments  # noqa: E402
from creditgym.config import from_dict  # noqa: E402
from creditgym.replay import read_trajectories  # noqa: E402
from creditgym.trainers.config import TrainConfig  # noqa: E402
from creditgym.trainers.loop import Trainer  # noqa: E402

CREDIT = {
    "grpo": {"name": "grpo"},
    "gigpo": {"name": "gigpo", "gamma": 1.0},
    "igpo": {"name": "igpo"},
    "tempo": {"name": "tempo"},
    "oprl": {"name": "oprl"},
}


def config(base: dict, **overrides) -> TrainConfig:
    import copy

    data = copy.deepcopy(base)
    credit = overrides.pop("credit", None)
    _deep_update(data, overrides)
    if credit is not None:  # replaced whole: options of one estimator mean nothing to another
        data["credit"] = credit
    return from_dict(TrainConfig, data)


def run_one(cfg: TrainConfig) -> dict:
    return Trainer(cfg, progress=False).run()["after"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--methods", default="grpo,gigpo,igpo,tempo,oprl")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--out", default="runs/learning")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE")
    parser.add_argument("--jobs", type=int, default=2, help="RL runs in parallel (1 thread each)")
    parser.add_argument("--from-run", default=None,
                        help="start every run from RUN_DIR/sft-model (a finished creditgym train "
                             "run) instead of running a warm start here")
    parser.add_argument("--warm-start-per-seed", action="store_true",
                        help="a warm start per seed (default: one, shared by every run)")
    args = parser.parse_args()
    import yaml

    base = yaml.safe_load(Path(args.config).read_text())
    _deep_update(base, parse_assignments(args.set, flag="--set"))
    if args.iterations is not None:
        _deep_update(base, {"rl": {"iterations": args.iterations}})
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    out_dir = Path(args.out)
    warm_seeds = seeds if args.warm_start_per_seed else seeds[:1]
    warm = {}
    if args.from_run:  # reuse a finished run's warm start and its "before" evaluation
        run = Path(args.from_run)
        # the warm start's success on the same first eval.episodes questions the runs evaluate
        episodes = config(base).eval.episodes
        # (the file is in completion order, so pick the questions by task id, not by line)
        firsts = sorted(read_trajectories(run / "eval-before.jsonl"), key=lambda t: t.group)
        firsts = firsts[:episodes]
        before = sum(bool(t.success) for t in firsts) / len(firsts)
        warm = {seed: (run / "sft-model", before) for seed in seeds}
        warm_seeds = []
    for seed in warm_seeds:  # the SFT warm start, evaluated once ("before RL")
        path = out_dir / f"warm-start-seed{seed}"
        out = Trainer(config(base, seed=seed, run_dir=str(path), rl={"iterations": 0}),
                      progress=False).run()
        warm[seed] = (path / "sft-model", out["before"]["success"])
        print(f"warm start seed {seed}: held-out success {out['before']['success']:.3f}", flush=True)
    jobs = []
    for seed in seeds:
        model, before = warm[seed if args.warm_start_per_seed or args.from_run else seeds[0]]
        for method in methods:
            cfg = config(base, seed=seed, run_dir=str(out_dir / f"seed{seed}" / method),
                         credit=CREDIT[method], model={"path": str(model)}, threads=1,
                         sft={"steps": 0, "lm_steps": 0}, eval={"before": False})
            jobs.append((seed, method, before, cfg))
    results: dict[str, list[tuple[float, float, float]]] = {}
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, cfg): (seed, method, before)
                   for seed, method, before, cfg in jobs}
        for fut in as_completed(futures):
            seed, method, before = futures[fut]
            after = fut.result()
            results.setdefault(method, []).append((before, after["success"], after["searches"]))
            print(f"seed {seed} {method:6s} success {before:.3f} -> {after['success']:.3f}",
                  flush=True)

    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} +- {sd:.3f}"

    print(f"\nheld-out success (mean +- std over seeds {args.seeds}; warm start "
          f"{'per seed' if args.warm_start_per_seed else 'shared'}), "
          f"{base['rl']['iterations']} RL iterations per run")
    print(f"{'method':8s} {'before RL':>18s} {'after RL':>18s} {'searches/q':>11s}")
    for method in methods:
        rows = results[method]
        print(f"{method:8s} {ms([r[0] for r in rows]):>18s} {ms([r[1] for r in rows]):>18s} "
              f"{statistics.mean(r[2] for r in rows):>11.2f}")


if __name__ == "__main__":
    main()
