"""Learning comparison of the credit estimators: held-out success after RL from one shared warm
start, with bootstrap intervals over seeds, and each run's credit accuracy over training.

CPU (the default sizing: each config as written, 2 runs at a time, one torch thread each)::

    python benchmarks/learning.py [--config configs/keydoor.yaml [configs/world-long.yaml ...]]
        [--methods grpo,gigpo] [--seeds 0,1,2,3,4] [--jobs 2] [--out runs/learning] [--force]
        [--iterations N] [--set key=value ...] [--set-option gigpo.gamma=0.9 ...]

GPU (same script): ``--preset gpu`` (twice the iterations, 16 tasks per iteration, up to 256
held-out episodes, seeds 0-9, 8 runs at a time, ``model.device: cuda``; ``--device`` overrides,
the cpu preset's is ``auto``: CUDA when torch sees one). Per config, one warm start (SFT on the
config's demonstrator; a run must take one RL iteration, so it takes the cheapest, after
``sft-model`` is saved) runs once and is evaluated on the held-out tasks ("warm start");
every (method, seed) then starts RL from its ``sft-model`` (``model.path``, no SFT; a config
without SFT steps is evaluated as it loads: a warm start made elsewhere, ``--set model.path=DIR
--set sft.steps=0 --set sft.lm_steps=0``, is shared as it is) with the
same iterations x tasks x group size, so every method gets equal samples. Methods are every
estimator of ``creditgym.credit.registry.ESTIMATORS`` (``--methods`` restricts); the method the
config names keeps the config's options, the others run with their defaults plus
``--set-option``. Per (config, method): held-out success per seed, mean, std, a 95% bootstrap
interval (``creditgym.bench.learning_stats``, 10,000 resamples, seeded by ``--bootstrap-seed``)
and whether it lies above or below ``--baseline``'s (default grpo) without overlap; per run, the
credit bench of its own estimator on each training iteration's rollouts (pairwise accuracy, AUC).
Writes into ``--out``: ``results.json`` (one object per config x method), ``learning.png`` and
one folder per run (``CONFIG/warm-start``, ``CONFIG/seedS/METHOD``), all kept. A non-empty
``--out`` needs ``--force`` (its runs are redone) or ``--reuse`` (finished runs are read back,
interrupted ones resume, the rest run; a run made with other settings is refused). A failed run
is reported and left out of the statistics; the others go on. This script prints; it does not
assert. The summary, table and plot are ``benchmarks/learning_report.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.learning_report import plot_learning, print_table, summarize  # noqa: E402
from creditgym.bench import learning_stats as stats  # noqa: E402
from creditgym.cli import _deep_update, parse_assignments  # noqa: E402
from creditgym.errors import ConfigError, CreditGymError  # noqa: E402

PRESETS = {
    "cpu": {"iterations_scale": 1, "seeds": "0,1,2,3,4", "jobs": 2, "device": "auto",
            "overrides": {}},
    "gpu": {"iterations_scale": 2, "seeds": ",".join(map(str, range(10))), "jobs": 8,
            "device": "cuda",
            "overrides": {"rl": {"tasks_per_iteration": 16}, "eval": {"episodes": 256}}},
}


# ------------------------------------------------------------------------------ the runs


def train(cfg_data: dict, reuse: bool) -> dict:
    """One ``creditgym train`` run in this (worker) process; returns its evaluations. With
    ``reuse``, a run interrupted earlier resumes from its last checkpoint."""
    from transformers.utils import logging as hf_logging

    from creditgym.config import from_dict
    from creditgym.trainers.config import TrainConfig
    from creditgym.trainers.loop import Trainer

    hf_logging.disable_progress_bar()  # one bar per model load and save would bury the progress
    resume = reuse and (Path(cfg_data["run_dir"]) / "checkpoints").is_dir()
    return Trainer(from_dict(TrainConfig, cfg_data), resume=resume, progress=False).run()


def finished(cfg_data: dict, phase: str) -> float | None:
    """Held-out success of ``phase`` of a run that finished earlier (``--reuse``), or None; a
    run made with other settings is an error (its numbers would not be this comparison's)."""
    import yaml

    from creditgym.config import from_dict, to_plain
    from creditgym.trainers.config import TrainConfig

    run_dir = Path(cfg_data["run_dir"])
    path = run_dir / "evals.json"
    if not (run_dir / "rollouts.jsonl").is_file() or not path.is_file():
        return None
    if yaml.safe_load((run_dir / "config.yaml").read_text()) != to_plain(
            from_dict(TrainConfig, cfg_data)):
        raise ConfigError(f"--reuse: {run_dir} was run with other settings than this "
                          "comparison's (see its config.yaml); pass --force to redo it")
    evals = json.loads(path.read_text())
    return (evals.get(phase) or {}).get("success")


def warm_model_dir(cfg_data: dict) -> Path:
    """The model every method of a config starts RL from: the warm-start run's ``sft-model``
    when the config has SFT steps, else the model that run loads (``model.path``) or builds."""
    from creditgym.config import from_dict
    from creditgym.trainers.config import TrainConfig
    from creditgym.trainers.model_setup import base_model_dir

    cfg = from_dict(TrainConfig, cfg_data)
    run_dir = Path(cfg_data["run_dir"])
    return run_dir / "sft-model" if cfg.sft.steps + cfg.sft.lm_steps > 0 else \
        base_model_dir(cfg, run_dir)


def warm_start(cfg_data: dict, model: Path, reuse: bool) -> dict:
    """The warm start of one config, ending in ``model`` (``warm_model_dir``): SFT, evaluated
    before RL (see the module docstring)."""
    before = finished(cfg_data, "before") if reuse else None
    if before is None or not (model / "config.json").is_file():
        before = train(cfg_data, reuse)["before"]["success"]
    return {"model": str(model), "before": before}


def rl_run(cfg_data: dict, reuse: bool) -> dict:
    """One method and seed: RL from the warm start, then its credit accuracy per iteration."""
    run_dir = Path(cfg_data["run_dir"])
    start = time.perf_counter()
    success = finished(cfg_data, "after") if reuse else None
    if success is None:
        success = train(cfg_data, reuse)["after"]["success"]
    curve = stats.credit_over_training(run_dir / "rollouts.jsonl", cfg_data["credit"])
    return {"success": success, "curve": [r.to_dict() for r in curve],
            "seconds": time.perf_counter() - start}


def base_config(path: str, args: argparse.Namespace, preset: dict) -> dict:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    rl = data.setdefault("rl", {})
    rl["iterations"] = rl.get("iterations", 20) * preset["iterations_scale"]
    _deep_update(data, copy.deepcopy(preset["overrides"]))
    if args.iterations is not None:
        rl["iterations"] = args.iterations
    _deep_update(data, parse_assignments(args.set, flag="--set"))
    _deep_update(data, {"model": {"device": args.device or preset["device"]}})
    return data


def with_overrides(base: dict, **overrides: Any) -> dict:
    data = copy.deepcopy(base)
    credit = overrides.pop("credit", None)
    _deep_update(data, overrides)
    if credit is not None:  # replaced whole: one estimator's options mean nothing to another
        data["credit"] = credit
    from creditgym.config import from_dict
    from creditgym.trainers.config import TrainConfig, check_train_config

    # Every run's config is checked up front, but for the warm start its runs will read (not
    # made yet) and a run --reuse resumes.
    check = copy.deepcopy(data)
    check.setdefault("model", {})["path"] = None
    check_train_config(from_dict(TrainConfig, check), resume=True)
    return data


def method_credit(base: dict, method: str, options: dict) -> dict:
    """The config's own credit (with its options) for the method it names; defaults plus
    ``--set-option`` for the others."""
    name, own = stats.credit_spec(base.get("credit", "gigpo"))
    spec = dict(own) if name == method else {}
    return {"name": method, **spec, **options.get(method, {})}


# --------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", nargs="+", default=["configs/keydoor.yaml"], metavar="YAML")
    p.add_argument("--methods", help="comma-separated estimators (default: every registered)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the preset's, 0-4 on cpu)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--device", help="model.device of every run: auto, cpu, cuda (default: the "
                   "preset's: auto on cpu, cuda on gpu)")
    p.add_argument("--jobs", type=int, help="runs in parallel (default: the preset's)")
    p.add_argument("--iterations", type=int, help="rl.iterations of every run")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    p.add_argument("--set-option", action="append", metavar="EST.KEY=VALUE",
                   help="an estimator's option, e.g. gigpo.gamma=0.9 (repeatable)")
    p.add_argument("--baseline", default="grpo", help="the method intervals are compared to")
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--out", default="runs/learning")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--force", action="store_true", help="redo the runs of a non-empty --out")
    group.add_argument("--reuse", action="store_true",
                       help="read back the runs of --out that finished, run the rest")
    return p.parse_args(argv)


def plan(args: argparse.Namespace, out: Path) -> dict:
    """Every config's base, methods, credit specs and run folders, checked before any run."""
    from creditgym.bench.cli import parse_options
    from creditgym.bench.credit_bench import estimator_names

    preset = PRESETS[args.preset]
    methods = estimator_names([m.strip() for m in args.methods.split(",") if m.strip()]
                              if args.methods else None)
    options = parse_options(args.set_option)
    seeds = [int(s) for s in (args.seeds or preset["seeds"]).split(",")]
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds {args.seeds}: give distinct seeds >= 0, e.g. 0,1,2,3,4")
    settings: dict[str, dict] = {}
    for path in args.config:
        name = Path(path).stem
        if name in settings:
            raise ConfigError(f"--config: two configs named {name!r}; rename one")
        base = base_config(path, args, preset)
        warm = with_overrides(base, seed=seeds[0], run_dir=str(out / name / "warm-start"),
                              rl={"iterations": 1, "tasks_per_iteration": 1, "group_size": 2},
                              credit={"name": "grpo"}, eval={"before": True})
        warm_model = warm_model_dir(warm)
        credits = {m: method_credit(base, m, options) for m in methods}
        runs = {m: {seed: with_overrides(
            base, seed=seed, run_dir=str(out / name / f"seed{seed}" / m), credit=credits[m],
            threads=1, model={"path": str(warm_model)},
            sft={"steps": 0, "lm_steps": 0}, eval={"before": False}) for seed in seeds}
            for m in methods}
        settings[name] = {"path": path, "base": base, "methods": methods, "credits": credits,
                          "warm_cfg": warm, "warm_model": warm_model, "runs": runs,
                          "run_dirs": {m: {s: c["run_dir"] for s, c in r.items()}
                                       for m, r in runs.items()}}
    return settings


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from creditgym.files import atomic_write_text, check_output, check_output_dir

    args = parse_args(argv)
    console = Console(width=max(140, Console().width))
    out = check_output_dir(args.out, args.config, force=args.force or args.reuse)
    settings = plan(args, out)
    out.mkdir(parents=True, exist_ok=True)
    json_out = check_output(out / "results.json", args.config, force=args.force or args.reuse)
    png_out = check_output(out / "learning.png", args.config, force=args.force or args.reuse)
    if args.force:  # every run folder is redone; nothing else under --out is touched
        for s in settings.values():
            for run_dir in [s["warm_cfg"]["run_dir"], *(d for r in s["run_dirs"].values()
                                                         for d in r.values())]:
                shutil.rmtree(run_dir, ignore_errors=True)
    if args.baseline not in next(iter(settings.values()))["methods"]:
        console.print(f"note: --baseline {args.baseline} is not among the methods run; no "
                      "interval is compared")
    jobs = args.jobs or PRESETS[args.preset]["jobs"]
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be >= 1")
    results: dict[str, dict] = {n: {m: {} for m in s["methods"]} for n, s in settings.items()}
    n_runs = sum(len(s["methods"]) * len(next(iter(s["runs"].values()))) for s in settings.values())
    start = time.perf_counter()
    with Progress(console=console) as progress, ProcessPoolExecutor(
            jobs, mp_context=mp.get_context("spawn")) as pool:
        bar = progress.add_task("runs", total=len(settings) + n_runs)
        pending = {pool.submit(warm_start, s["warm_cfg"], s["warm_model"], args.reuse): ("warm", name)
                   for name, s in settings.items()}
        while pending:
            fut = next(as_completed(pending))
            kind, *key = pending.pop(fut)
            progress.advance(bar)
            try:
                value = fut.result()
            except Exception as exc:  # noqa: BLE001  (one failed run must not end the others)
                value = {"error": f"{type(exc).__name__}: {exc}"}
            if kind == "warm":
                (name,) = key
                if "error" in value:
                    raise ConfigError(f"warm start of {name} failed: {value['error']}")
                settings[name]["warm"] = value
                progress.console.print(f"{name}: warm start, held-out success "
                                       f"{value['before']:.3f}")
                for method, by_seed in settings[name]["runs"].items():
                    for seed, cfg in by_seed.items():
                        pending[pool.submit(rl_run, cfg, args.reuse)] = ("rl", name, method, seed)
                continue
            name, method, seed = key
            results[name][method][seed] = value
            what = value.get("error") or (f"success {value['success']:.3f} "
                                          f"({value['seconds']:.0f} s)")
            progress.console.print(f"{name} seed {seed} {method}: {what}")
    rows = summarize(settings, results, args)
    print_table(rows, console)
    atomic_write_text(json_out, json.dumps(rows, indent=2) + "\n")
    plot_learning(rows, png_out)
    console.print(f"{n_runs} runs in {time.perf_counter() - start:.0f} s; "
                  f"json: {json_out}; png: {png_out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CreditGymError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
