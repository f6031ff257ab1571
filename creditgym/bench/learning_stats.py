"""Statistics of a learning comparison (``benchmarks/learning.py``): held-out success over seeds,
and how right a training run's credit was at each iteration.

- ``summarize_seeds(values)``: mean, sample std and a percentile bootstrap interval of the mean
  over seeds (``bootstrap_interval``: ``resamples`` resamples of the seeds with replacement,
  drawn by ``numpy.random.default_rng(seed)``, so one input and seed give one interval).
- ``separation(summary, baseline)``: ``"above"``/``"below"`` when the two intervals do not
  overlap (``intervals_overlap``), else None: the comparison's "beats GRPO" test.
- ``credit_over_training(rollouts, credit)``: a training run's ``rollouts.jsonl`` split by the
  records' ``iteration``; on each iteration's groups the credit bench
  (``credit_bench.bench_credit``, labels from ``labels.turn_labels``) of the estimator the run
  trained with (``credit``: a name or ``{name: ..., options}``, as ``TrainConfig.credit``), its
  model-computed inputs read from the records' ``turn_metrics["input/<name>"]`` (training runs
  write them). One ``IterationCredit`` per iteration, in iteration order.
- ``mean_curve(curves, field)``: per iteration, the mean of one metric over several runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from creditgym.errors import ConfigError

RESAMPLES = 10_000
LEVEL = 0.95


# ------------------------------------------------------------------------ success over seeds


def bootstrap_interval(values: Sequence[float], *, resamples: int = RESAMPLES,
                       level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap ``level`` interval of the mean of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
        raise ConfigError(f"bootstrap: expected one or more finite values, got {list(values)!r}")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ConfigError(f"bootstrap: resamples={resamples} must be >= 1 and level={level} "
                          "in (0, 1)")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class SeedSummary:
    """One setting's values over seeds (in the order given) and their statistics."""

    values: tuple[float, ...]
    mean: float
    std: float
    """Sample standard deviation (0.0 for a single seed)."""
    ci_low: float
    ci_high: float
    level: float = LEVEL
    resamples: int = RESAMPLES

    @property
    def interval(self) -> tuple[float, float]:
        return self.ci_low, self.ci_high

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "values": list(self.values)}


def summarize_seeds(values: Sequence[float], *, resamples: int = RESAMPLES, level: float = LEVEL,
                    seed: int = 0) -> SeedSummary:
    """Mean, std and bootstrap interval of ``values`` (one per seed)."""
    low, high = bootstrap_interval(values, resamples=resamples, level=level, seed=seed)
    x = np.asarray(values, dtype=np.float64)
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return SeedSummary(tuple(float(v) for v in x), float(x.mean()), std, low, high, level,
                       resamples)


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether closed intervals ``a`` and ``b`` share a point."""
    return a[0] <= b[1] and b[0] <= a[1]


def separation(summary: SeedSummary, baseline: SeedSummary) -> str | None:
    """``"above"`` / ``"below"`` when ``summary``'s interval lies wholly above / below the
    ``baseline``'s, None when they overlap."""
    if intervals_overlap(summary.interval, baseline.interval):
        return None
    return "above" if summary.ci_low > baseline.ci_high else "below"


# -------------------------------------------------------------------- credit over training


@dataclass(frozen=True)
class IterationCredit:
    """The credit bench of one training iteration's groups, for one estimator."""

    iteration: int
    trajectories: int
    turns: int
    labelled_turns: int
    pairwise_accuracy: float | None
    auc: float | None
    wrong_sign: float | None
    skipped: str | None = None
    """Why the estimator could not be scored (e.g. an input the records lack), or None."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def credit_spec(credit: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(registered name, options) of a ``TrainConfig.credit`` value."""
    from creditgym.bench.credit_bench import estimator_names

    spec = {"name": credit} if isinstance(credit, str) else dict(credit)
    if "name" not in spec:
        raise ConfigError(f"credit {credit!r}: expected a name or a mapping with 'name'")
    (name,) = estimator_names([spec.pop("name")])  # an unknown name lists the registered
    return name, spec


def credit_over_training(rollouts: str | Path, credit: str | Mapping[str, Any], *,
                         policy: Any = None) -> list[IterationCredit]:
    """See the module docstring; ``policy`` is the ``replay.trust.EnvPolicy`` the labels'
    environment ids are checked by (default: creditgym's registered environments only)."""
    from creditgym.bench.cli import load_groups
    from creditgym.bench.credit_bench import bench_credit
    from creditgym.bench.labels import turn_labels

    name, options = credit_spec(credit)
    path = Path(rollouts)
    groups = load_groups([path])
    by_iteration: dict[int, list[list]] = {}
    for group in groups:
        iterations = {t.iteration for t in group}
        if len(iterations) != 1 or None in iterations:
            raise ConfigError(
                f"{path}: group {group[0].group!r} has records of iterations {sorted(map(str, iterations))}; "
                "credit over training needs a training run's rollouts.jsonl (every record "
                "carries the iteration it was trained in)")
        by_iteration.setdefault(iterations.pop(), []).append(group)
    out = []
    for iteration in sorted(by_iteration):
        its_groups = by_iteration[iteration]
        trajs = [t for g in its_groups for t in g]
        labels = turn_labels(trajs, policy)
        (row,) = bench_credit(its_groups, labels, estimators=[name], options={name: options})
        turns = sum(t.n_turns for t in trajs)
        labelled = sum(len(x) for x in labels if x is not None)
        out.append(IterationCredit(iteration, len(trajs), turns, labelled, row.pairwise_accuracy,
                                   row.auc, row.wrong_sign, row.skipped))
    return out


def mean_curve(curves: Sequence[Sequence[IterationCredit]], field: str
               ) -> list[tuple[int, float]]:
    """Per iteration present in any curve, the mean of ``field`` over the curves that have a
    value there (None values left out); iterations without any value are dropped."""
    values: dict[int, list[float]] = {}
    for curve in curves:
        for row in curve:
            value = getattr(row, field)
            if value is not None and not math.isnan(value):
                values.setdefault(row.iteration, []).append(float(value))
    return [(it, float(np.mean(v))) for it, v in sorted(values.items())]
