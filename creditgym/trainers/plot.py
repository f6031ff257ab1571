"""Learning curves of a run as a PNG: rollout success, held-out evaluations, loss, advantages."""

from __future__ import annotations

import json
from pathlib import Path


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw ``out`` (default ``run_dir/learning_curves.png``) from ``metrics.jsonl`` and
    ``evals.json``, replacing it atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.jsonl"
    if not metrics_file.is_file():
        from creditgym.errors import ConfigError

        raise ConfigError(f"{run_dir} has no metrics.jsonl; is it a `creditgym train` run folder?")
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    evals = json.loads((run_dir / "evals.json").read_text()) if (run_dir / "evals.json").is_file() else {}
    its = [r["iteration"] + 1 for r in rows]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.plot(its, [r.get("rollout/success", 0) for r in rows], label="training rollouts")
    points = [(0, evals.get("before", {}).get("success"))]
    points += [(r["iteration"] + 1, r["eval/success"]) for r in rows if "eval/success" in r]
    if "after" in evals and rows:
        points.append((its[-1], evals["after"].get("success")))
    points = [(x, y) for x, y in points if y is not None]
    if points:
        ax.plot(*zip(*points), "o--", label="held-out evaluation")
    ax.set(title="success", xlabel="iteration", ylim=(-0.02, 1.02))
    ax.legend()
    axes[1].plot(its, [r.get("update/loss", 0) for r in rows], label="policy loss")
    axes[1].plot(its, [r.get("update/entropy", 0) for r in rows], label="entropy")
    axes[1].set(title="update", xlabel="iteration")
    axes[1].legend()
    axes[2].plot(its, [r.get("rollout/turns", 0) for r in rows], label="turns / episode")
    axes[2].plot(its, [r.get("credit/mean_abs_adv_token", 0) for r in rows], label="mean |A| per token")
    axes[2].plot(its, [r.get("credit/zero_adv_group_share", 0) for r in rows], label="zero-advantage groups")
    axes[2].set(title="behaviour and credit", xlabel="iteration")
    axes[2].legend()
    fig.tight_layout()
    from creditgym.files import write_png

    out = Path(out) if out is not None else run_dir / "learning_curves.png"
    write_png(fig, out)
    return out
