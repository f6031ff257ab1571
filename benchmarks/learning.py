"""Held-out success after RL with each credit estimator, from the same SFT warm start.

Run: ``python benchmarks/learning.py [--methods grpo,gigpo,igpo,tempo,oprl] [--seeds 0,1,2]
[--iterations N] [--set key=value ...]``. For each seed the warm start (SFT on the imperfect
scripted expert) runs once; every method then starts from that same model with the same budget,
and the table prints held-out success before RL and after RL (mean +- std over seeds), plus the
searches per question. ``--set`` overrides go to every run (e.g. ``--set eval.episodes=64``).
Expect minutes per run on a CPU; this script prints, it does not assert.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from creditgym.cli import _deep_update, parse_assignments  # noqa: E402
from creditgym.config import from_dict  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--methods", default="grpo,gigpo,igpo,tempo,oprl")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--out", default="runs/learning")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE")
    args = parser.parse_args()
    import yaml

    base = yaml.safe_load(Path(args.config).read_text())
    _deep_update(base, parse_assignments(args.set, flag="--set"))
    if args.iterations is not None:
        _deep_update(base, {"rl": {"iterations": args.iterations}})
    results: dict[str, list[tuple[float, float, float]]] = {}
    befores: list[float] = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        warm = Path(args.out) / f"seed{seed}" / "warm-start"
        Trainer(config(base, seed=seed, run_dir=str(warm), rl={"iterations": 0}), progress=False).run()
        for method in args.methods.split(","):
            run = Path(args.out) / f"seed{seed}" / method
            cfg = config(base, seed=seed, run_dir=str(run), credit=CREDIT[method],
                         model={"path": str(warm / "sft-model")}, sft={"steps": 0})
            out = Trainer(cfg, progress=False).run()
            results.setdefault(method, []).append(
                (out["before"]["success"], out["after"]["success"], out["after"]["searches"]))
            print(f"seed {seed} {method:6s} success {out['before']['success']:.3f} -> "
                  f"{out['after']['success']:.3f}", flush=True)
        befores.append(results[args.methods.split(",")[0]][-1][0])

    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} +- {sd:.3f}"

    print(f"\nheld-out success (mean +- std over {len(befores)} seeds), "
          f"{base['rl']['iterations']} RL iterations per run")
    print(f"{'method':8s} {'before RL':>18s} {'after RL':>18s} {'searches/q':>11s}")
    for method, rows in results.items():
        print(f"{method:8s} {ms([r[0] for r in rows]):>18s} {ms([r[1] for r in rows]):>18s} "
              f"{statistics.mean(r[2] for r in rows):>11.2f}")


if __name__ == "__main__":
    main()
