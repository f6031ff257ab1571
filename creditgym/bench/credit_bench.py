"""How right is each credit estimator's per-turn credit? Metrics against per-turn ground truth.

``bench_credit(groups, labels)`` runs every registered estimator (``credit.registry.ESTIMATORS``,
so a new estimator is benchmarked without any change here) with its default config, or the
options given, on the same trajectory groups through the registry's entry point ``estimate``;
reads each turn's advantage back from the per-token arrays (``adapter.tokens_to_turns``: the
value on the turn's action tokens) and scores it against ``labels`` (per trajectory, one of
``TURN_LABELS`` per turn, or None: no ground truth, as an environment's ``turn_labels`` gives):

- ``pairwise_accuracy``: over pairs of turns of one trajectory with different labels, ordered
  useful > wasted > harmful, the share where the better turn got the larger advantage (ties
  count 0.5); pooled over every pair of the batch. An estimator giving all turns of a
  trajectory one value (GRPO, RLOO) scores exactly 0.5.
- ``pairwise_winners`` / ``pairwise_losers``: the same, counting only the trajectories whose
  return is above (below) their group's mean (groups whose members all tie are in neither):
  where an estimator orders the turns of the trajectories it rewards but inverts those of the
  ones it punishes, the pooled accuracy hides both.
- ``auc``: across the batch, the probability that a useful turn's advantage exceeds a not
  useful one's (ties 0.5; the Mann-Whitney statistic).
- ``spearman_mc``: rank correlation with Monte-Carlo turn values, read from the records'
  ``turn_metrics[t]["mc/value"]`` (``MC_KEY``; turns without one are left out); None when no
  turn has one.
- ``wrong_sign``: the share of useful turns whose advantage is negative.
- ``ms_per_1k_turns``: wall time of the estimator's ``estimate`` call per 1,000 turns (the only
  value that differs between runs on the same input).

A metric is None where it has nothing to count (no labelled pair, no useful turn, ...).
Model-computed inputs (IGPO's ``probe_logprob``, OPRL's ``logratio_sum``) come in ``inputs``
(name -> trajectory id -> one value per turn, as the trainer passes them) or from the records,
``turn_metrics[t]["input/<name>"]`` on every turn of every trajectory (``INPUT_PREFIX``); an
estimator whose ``needs`` are met by neither is reported as skipped, with the reason.
``run_estimators`` is the first half on its own: each estimator's per-turn advantages (the
replay page's group view colours its prefix trees with them). ``mixed_outcome_groups`` keeps the
groups whose members' returns differ: in a group that fails (or succeeds) whole, every
outcome-based estimator gives every turn the same value, so those groups only pull its pairwise
accuracy towards 0.5.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from creditgym.credit import adapter
from creditgym.credit.registry import ESTIMATORS, estimate, get_estimator, make_config
from creditgym.envs.contract import TURN_LABELS
from creditgym.errors import CreditGymError
from creditgym.trainers.credit_inputs import INPUT_METRIC_PREFIX
from creditgym.trajectory import Trajectory

LABEL_RANK = {label: len(TURN_LABELS) - 1 - i for i, label in enumerate(TURN_LABELS)}
"""useful 2 > wasted 1 > harmful 0; unlabelled turns are -1."""
MC_KEY = "mc/value"
"""Turn-metrics key of a turn's Monte-Carlo value (the change in expected return)."""
INPUT_PREFIX = INPUT_METRIC_PREFIX
"""Turn-metrics key prefix of an estimator input the records carry (``input/probe_logprob``;
a training run records the inputs its estimator used)."""
_PAIR_CHUNK = 1 << 22  # bound on compared pairs held at once


@dataclass(frozen=True)
class BenchRow:
    """One estimator's scores (the fields of ``--json``)."""

    estimator: str
    pairwise_accuracy: float | None
    auc: float | None
    spearman_mc: float | None
    wrong_sign: float | None
    ms_per_1k_turns: float | None
    turns: int
    """Turns the estimator scored (all turns of the batch; 0 when skipped)."""
    skipped: str | None = None
    """Why the estimator did not run, or None."""
    pairwise_winners: float | None = None
    """``pairwise_accuracy`` over the trajectories whose return is above their group's mean."""
    pairwise_losers: float | None = None
    """``pairwise_accuracy`` over the trajectories whose return is below their group's mean."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------ metrics


def average_ranks(x: Any) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]] if xs.size else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], xs.size]
    ranks = np.empty(x.size)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(new) - 1]
    return ranks


def pairwise_accuracy(traj: Any, rank: Any, adv: Any) -> float | None:
    """Share of within-trajectory pairs of turns with different ``rank`` (higher is better;
    -1: unlabelled, left out) where the better turn has the larger ``adv``; ties count 0.5.
    ``traj`` is each row's trajectory; None when there is no such pair."""
    traj, rank, adv = (np.asarray(a) for a in (traj, rank, adv))
    keep = rank >= 0
    order = np.argsort(traj[keep], kind="stable")
    traj, rank, adv = traj[keep][order], rank[keep][order], adv[keep][order].astype(np.float64)
    _, start, length = np.unique(traj, return_index=True, return_counts=True)
    pairs = score = 0.0
    # trajectories of one length form a [k, L] block: every pair at once, a chunk at a time
    for n in np.unique(length[length > 1]):
        first = start[length == n]
        step = max(1, _PAIR_CHUNK // int(n * n))
        for lo in range(0, first.size, step):
            idx = first[lo:lo + step, None] + np.arange(n)
            r, a = rank[idx], adv[idx]
            better = r[:, :, None] > r[:, None, :]
            diff = a[:, :, None] - a[:, None, :]
            pairs += better.sum()
            score += (better & (diff > 0)).sum() + 0.5 * (better & (diff == 0)).sum()
    return float(score / pairs) if pairs else None


def auc(positive: Any, adv: Any) -> float | None:
    """Probability that a positive row's ``adv`` exceeds a negative row's (ties 0.5); None
    without both kinds."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    ranks = average_ranks(adv)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(x: Any, y: Any) -> float | None:
    """Spearman rank correlation (average ranks for ties); None for fewer than two rows or a
    constant side."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else None


def wrong_sign(positive: Any, adv: Any) -> float | None:
    """Share of positive rows with a negative ``adv``; None without positive rows."""
    positive = np.asarray(positive, dtype=bool)
    if not positive.any():
        return None
    return float((np.asarray(adv, dtype=np.float64)[positive] < 0).mean())


# ------------------------------------------------------------------------- what records carry


def label_ranks(trajs: Sequence[Trajectory], labels: Sequence[Sequence[str] | None]) -> np.ndarray:
    """Per row (turns of ``trajs`` in order): ``LABEL_RANK`` of its label, -1 where none."""
    if len(labels) != len(trajs):
        raise CreditGymError(f"labels: expected one entry per trajectory ({len(trajs)}), "
                             f"got {len(labels)}")
    out = []
    for t, lab in zip(trajs, labels):
        if lab is None:
            out.append(np.full(t.n_turns, -1))
            continue
        if len(lab) != t.n_turns or any(x not in LABEL_RANK for x in lab):
            raise CreditGymError(f"labels of trajectory {t.id!r}: expected one of "
                                 f"{', '.join(TURN_LABELS)} per turn ({t.n_turns} turns), "
                                 f"got {list(lab)!r}")
        out.append(np.fromiter((LABEL_RANK[x] for x in lab), dtype=np.int64, count=t.n_turns))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _turn_values(trajs: Sequence[Trajectory], key: str) -> list[list[float]] | None:
    """Per trajectory the turn metrics' ``key`` on every turn, or None if any turn lacks it."""
    out = []
    for t in trajs:
        if len(t.turn_metrics) != t.n_turns or not all(key in m for m in t.turn_metrics):
            return None
        out.append([float(m[key]) for m in t.turn_metrics])
    return out


def inputs_from_records(trajs: Sequence[Trajectory], names: Sequence[str]
                  ) -> dict[str, dict[str, list[float]]]:
    """The inputs among ``names`` that every record carries (``turn_metrics[t]["input/NAME"]``),
    by name and trajectory id."""
    out = {}
    for name in names:
        values = _turn_values(trajs, INPUT_PREFIX + name)
        if values is not None:
            out[name] = {t.id: v for t, v in zip(trajs, values)}
    return out


def mc_values(trajs: Sequence[Trajectory]) -> np.ndarray:
    """Per row, the turn's Monte-Carlo value (``turn_metrics[t]["mc/value"]``), NaN where none."""
    vals = [float(m[MC_KEY]) if m.get(MC_KEY) is not None else np.nan
            for t in trajs for m in (t.turn_metrics or [{}] * t.n_turns)]
    return np.asarray(vals, dtype=np.float64)


# ---------------------------------------------------------------------------------- the bench


def outcome_side(groups: Sequence[Sequence[Trajectory]]) -> np.ndarray:
    """Per row of ``adapter.flatten(groups)``: +1 where its trajectory's return is above its
    group's mean, -1 below, 0 on the mean."""
    side = []
    for g in groups:
        returns = np.array([t.episode_return for t in g], dtype=np.float64)
        mean = returns.mean()
        # a return equal to the mean in exact arithmetic can miss it by a rounding step
        signs = np.where(np.isclose(returns, mean, rtol=0.0, atol=1e-12), 0.0,
                         np.sign(returns - mean))
        side += [np.full(t.n_turns, s, dtype=np.int64) for t, s in zip(g, signs)]
    return np.concatenate(side) if side else np.zeros(0, dtype=np.int64)


def mixed_outcome_groups(groups: Sequence[Sequence[Trajectory]]) -> list[Sequence[Trajectory]]:
    """The groups, in order, whose members' episode returns are not all equal."""
    return [g for g in groups if len({t.episode_return for t in g}) > 1]


def estimator_names(names: Sequence[str] | None = None) -> list[str]:
    """``names`` checked against the registry (an unknown one raises a ``ConfigError`` listing
    the registered), or every registered estimator, in registration order."""
    import creditgym.credit  # noqa: F401  (registers the built-in estimators)

    return [get_estimator(n).name for n in names] if names else list(ESTIMATORS)


@dataclass(frozen=True)
class EstimatorRun:
    """One estimator's per-turn credit on a batch (``run_estimators``), or why it has none."""

    estimator: str
    advantages: np.ndarray | None
    """Per row of ``adapter.flatten(groups)``: the turn's advantage (``tokens_to_turns``)."""
    seconds: float | None
    """Wall time of the ``estimate`` call."""
    skipped: str | None = None


def run_estimators(
    groups: Sequence[Sequence[Trajectory]],
    *,
    estimators: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    inputs: Mapping[str, Any] | None = None,
    progress: Callable[[Sequence[str]], Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[EstimatorRun]:
    """Every registered estimator's (or ``estimators``') per-turn advantages on ``groups``,
    one ``EstimatorRun`` at a time, in registry order; arguments as ``bench_credit``'s. Names and
    options are checked before this returns; an estimator whose ``needs`` are neither given nor
    in the records, or that refuses the groups, is a skipped run."""
    names = estimator_names(estimators)
    options = dict(options or {})
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise CreditGymError(f"options given for {', '.join(unknown)}, which is not among the "
                             f"benchmarked estimators ({', '.join(names)})")
    configs = {n: make_config({**options.get(n, {}), "name": n}) for n in names}
    batch = adapter.flatten(groups)
    wanted = sorted({i for n in names for i in (*ESTIMATORS[n].needs, *ESTIMATORS[n].optional)})
    given = {**inputs_from_records(batch.trajectories, wanted), **(inputs or {})}

    def runs() -> Iterator[EstimatorRun]:
        for name in progress(names) if progress else names:
            missing = [n for n in ESTIMATORS[name].needs if n not in given]
            if missing:
                yield EstimatorRun(name, None, None, f"needs input {missing[0]!r}: not given, nor "
                                   f"in the records' turn_metrics '{INPUT_PREFIX}{missing[0]}'")
                continue
            start = clock()
            try:
                result = estimate(groups, configs[name], given)
            except CreditGymError as exc:  # this estimator cannot score these groups; others can
                yield EstimatorRun(name, None, None, f"failed: {exc}")
                continue
            elapsed = clock() - start
            yield EstimatorRun(name, adapter.tokens_to_turns(batch, result.advantages), elapsed)

    return runs()


def bench_credit(
    groups: Sequence[Sequence[Trajectory]],
    labels: Sequence[Sequence[str] | None],
    *,
    estimators: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    inputs: Mapping[str, Any] | None = None,
    progress: Callable[[Sequence[str]], Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[BenchRow]:
    """One ``BenchRow`` per estimator (see the module docstring). ``labels`` align with the
    trajectories of ``groups`` in order; ``options`` are per-estimator config options
    (``{"gigpo": {"gamma": 0.9}}``); ``inputs`` model-computed inputs by name (they override
    what the records carry); ``progress`` wraps the estimator list (a tqdm)."""
    runs = run_estimators(groups, estimators=estimators, options=options, inputs=inputs,
                          progress=progress, clock=clock)
    batch = adapter.flatten(groups)
    rank = label_ranks(batch.trajectories, labels)
    labelled = rank >= 0
    useful = rank[labelled] == LABEL_RANK["useful"]
    side = outcome_side(groups)
    winner_rank, loser_rank = np.where(side > 0, rank, -1), np.where(side < 0, rank, -1)
    mc = mc_values(batch.trajectories)
    has_mc = np.isfinite(mc)
    rows = []
    for run in runs:
        if run.skipped is not None:
            rows.append(_skipped(run.estimator, run.skipped))
            continue
        adv = run.advantages
        rows.append(BenchRow(
            estimator=run.estimator,
            pairwise_accuracy=pairwise_accuracy(batch.traj, rank, adv),
            auc=auc(useful, adv[labelled]),
            spearman_mc=spearman(adv[has_mc], mc[has_mc]) if has_mc.any() else None,
            wrong_sign=wrong_sign(useful, adv[labelled]),
            ms_per_1k_turns=1e6 * run.seconds / batch.traj.size,
            turns=int(batch.traj.size),
            pairwise_winners=pairwise_accuracy(batch.traj, winner_rank, adv),
            pairwise_losers=pairwise_accuracy(batch.traj, loser_rank, adv),
        ))
    return rows


def _skipped(name: str, why: str) -> BenchRow:
    return BenchRow(name, None, None, None, None, None, 0, skipped=why)
