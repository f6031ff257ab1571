"""The outputs of ``benchmarks/learning.py``: one summary object per config x method (held-out
success per seed with its bootstrap interval and separation from the baseline, the trained
estimator's credit accuracy per iteration), the console table and the PNG. The statistics
themselves are ``creditgym.bench.learning_stats``'s."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from creditgym.bench import learning_stats as stats


def summarize(settings: dict, results: dict, args: argparse.Namespace) -> list[dict]:
    """One object per config x method (see the module docstring)."""
    rows = []
    for name, s in settings.items():
        summaries = {}
        for method in s["methods"]:
            done = {seed: r for seed, r in results[name][method].items() if "error" not in r}
            if done:
                summaries[method] = stats.summarize_seeds(
                    [done[seed]["success"] for seed in sorted(done)], seed=args.bootstrap_seed)
        base = summaries.get(args.baseline)
        for method in s["methods"]:
            runs = results[name][method]
            done = {seed: r for seed, r in sorted(runs.items()) if "error" not in r}
            curves = [[stats.IterationCredit(**x) for x in r["curve"]] for r in done.values()]
            summary = summaries.get(method)
            rl = s["base"]["rl"]
            rows.append({
                "config": name, "config_path": s["path"], "method": method,
                "credit": s["credits"][method], "warm_start_success": s["warm"]["before"],
                "iterations": rl["iterations"], "tasks_per_iteration": rl["tasks_per_iteration"],
                "group_size": rl["group_size"],
                "samples_per_run": rl["iterations"] * rl["tasks_per_iteration"] * rl["group_size"],
                "seeds": sorted(done), "success_per_seed": [r["success"] for r in done.values()],
                **({k: getattr(summary, k) for k in ("mean", "std", "ci_low", "ci_high",
                                                     "level", "resamples")} if summary else {}),
                "baseline": args.baseline,
                "separated_from_baseline": (stats.separation(summary, base)
                                            if summary and base and method != args.baseline
                                            else None),
                "credit_accuracy_per_seed": {str(seed): r["curve"] for seed, r in done.items()},
                "credit_accuracy_mean": [
                    {"iteration": it, "pairwise_accuracy": acc, "auc": dict(
                        stats.mean_curve(curves, "auc")).get(it)}
                    for it, acc in stats.mean_curve(curves, "pairwise_accuracy")],
                "failed": {str(seed): r["error"] for seed, r in runs.items() if "error" in r},
                "run_dirs": {str(seed): s["run_dirs"][method][seed] for seed in runs},
            })
    return rows


def print_table(rows: list[dict], console) -> None:
    from rich.table import Table

    table = Table(title="held-out success after RL (mean over seeds, 95% bootstrap interval) "
                        "and the trained estimator's credit accuracy")
    for col in ("config", "method", "seeds", "warm start", "success", "95% interval",
                f"vs {rows[0]['baseline'] if rows else 'baseline'}", "pairwise acc first->last",
                "AUC last", "failed"):
        table.add_column(col, justify="left" if col in ("config", "method") else "right")

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    for r in rows:
        acc = r["credit_accuracy_mean"]
        table.add_row(
            r["config"], r["method"], str(len(r["seeds"])), fmt(r["warm_start_success"]),
            f"{fmt(r.get('mean'))} +- {fmt(r.get('std'))}",
            f"[{fmt(r.get('ci_low'))}, {fmt(r.get('ci_high'))}]",
            r["separated_from_baseline"] or ("baseline" if r["method"] == r["baseline"]
                                             else "overlaps" if "mean" in r else "-"),
            f"{fmt(acc[0]['pairwise_accuracy'])} -> {fmt(acc[-1]['pairwise_accuracy'])}"
            if acc else "-", fmt(acc[-1]["auc"]) if acc else "-", str(len(r["failed"]) or ""))
    console.print(table)


def plot_learning(rows: list[dict], out: Path) -> None:
    """Per config: success with intervals per method; mean pairwise accuracy over iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from creditgym.files import write_png

    configs = list(dict.fromkeys(r["config"] for r in rows))
    fig, axes = plt.subplots(len(configs), 2, figsize=(12, 4 * len(configs)), squeeze=False)
    for (left, right), name in zip(axes, configs):
        these = [r for r in rows if r["config"] == name]
        for i, r in enumerate(these):
            if "mean" in r:
                left.errorbar([i], [r["mean"]], yerr=[[r["mean"] - r["ci_low"]],
                                                      [r["ci_high"] - r["mean"]]],
                              fmt="o", capsize=4, color=f"C{i}")
            left.scatter([i + 0.15] * len(r["success_per_seed"]), r["success_per_seed"],
                         s=10, color=f"C{i}", alpha=0.5)
            acc = r["credit_accuracy_mean"]
            right.plot([a["iteration"] for a in acc], [a["pairwise_accuracy"] for a in acc],
                       marker=".", color=f"C{i}", label=r["method"])
        left.axhline(these[0]["warm_start_success"], color="grey", linestyle="--",
                     linewidth=1, label="warm start")
        left.set_xticks(range(len(these)), [r["method"] for r in these])
        left.set(ylabel="held-out success", ylim=(-0.02, 1.02),
                 title=f"{name}: success after RL (95% bootstrap interval)")
        left.legend(loc="lower right")
        right.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        right.set(xlabel="iteration", ylabel="pairwise accuracy", ylim=(0, 1),
                  title=f"{name}: credit accuracy of the trained estimator")
        right.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    write_png(fig, out)
