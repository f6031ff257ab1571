"""The learning comparison's statistics: bootstrap intervals over seeds, the non-overlap test
against a baseline, and the credit bench over a training run's iterations, on a small file of
real built-in-world episodes (bm25s index) written as a training run writes rollouts.jsonl."""

from __future__ import annotations

import numpy as np
import pytest

from creditgym.bench.credit_bench import bench_credit
from creditgym.bench.labels import turn_labels
from creditgym.bench.learning_stats import (
    IterationCredit,
    bootstrap_interval,
    credit_over_training,
    intervals_overlap,
    mean_curve,
    separation,
    summarize_seeds,
)
from creditgym.errors import ConfigError
from tests.replay.helpers import POLICIES, SEARCH_KWARGS, build_tokenizer, record_episode

SUCCESS = [0.45, 0.50, 0.425, 0.55, 0.475]


# ----------------------------------------------------------------------- success over seeds


def test_bootstrap_interval_is_deterministic_for_a_seed_and_holds_the_mean():
    first = bootstrap_interval(SUCCESS, seed=3)
    assert bootstrap_interval(SUCCESS, seed=3) == first
    # the seed drives the resampling (values off a lattice, so quantiles rarely coincide)
    irregular = [0.4513, 0.5071, 0.4239, 0.5588, 0.4777]
    assert bootstrap_interval(irregular, seed=3) != bootstrap_interval(irregular, seed=4)
    low, high = first
    assert min(SUCCESS) <= low < np.mean(SUCCESS) < high <= max(SUCCESS)
    # narrower than the range of the seeds, wider than a point
    assert 0.02 < high - low < max(SUCCESS) - min(SUCCESS)
    # a wider level gives a wider interval from the same resamples
    l99, h99 = bootstrap_interval(SUCCESS, seed=3, level=0.99)
    assert l99 <= low and h99 >= high
    assert bootstrap_interval([0.3, 0.3, 0.3]) == (0.3, 0.3)


def test_summary_fields():
    s = summarize_seeds(SUCCESS, seed=1)
    assert s.values == tuple(SUCCESS) and s.mean == pytest.approx(0.48)
    assert s.std == pytest.approx(np.std(SUCCESS, ddof=1))
    assert (s.ci_low, s.ci_high) == bootstrap_interval(SUCCESS, seed=1)
    assert s.to_dict()["values"] == SUCCESS and s.resamples == 10_000 and s.level == 0.95
    assert summarize_seeds([0.5]).std == 0.0
    for bad in ([], [0.1, float("nan")]):
        with pytest.raises(ConfigError, match="finite values"):
            bootstrap_interval(bad)


def test_non_overlap_against_a_baseline():
    assert intervals_overlap((0.1, 0.3), (0.3, 0.5))  # a shared end point overlaps
    assert not intervals_overlap((0.1, 0.29), (0.3, 0.5))
    grpo = summarize_seeds([0.40, 0.42, 0.41, 0.43, 0.39])
    better = summarize_seeds([0.55, 0.60, 0.58, 0.57, 0.59])
    worse = summarize_seeds([0.20, 0.25, 0.22, 0.21, 0.24])
    close = summarize_seeds([0.41, 0.44, 0.40, 0.45, 0.42])
    assert separation(better, grpo) == "above"
    assert separation(worse, grpo) == "below"
    assert separation(close, grpo) is None
    assert separation(grpo, grpo) is None


# -------------------------------------------------------------------- credit over training


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """Two training iterations of two groups each (tasks 0-1, then 2-3), every group the task
    rolled out once per policy (expert, wrong answer, invalid then expert); records carry their
    iteration and an ``input/probe_logprob`` per turn, as a training run writes them."""
    from creditgym.envs.search_env import SearchEnv
    from creditgym.replay.io import TrajectoryWriter, run_metadata

    folder = tmp_path_factory.mktemp("learning")
    env = SearchEnv(**SEARCH_KWARGS)
    tok = build_tokenizer(env, folder / "tokenizer")
    trajs = []
    for g, task in enumerate(env.tasks[:4]):
        iteration = g // 2
        for name, policy in POLICIES.items():
            t = record_episode(env, task, policy, tid=f"it{iteration}-g{g}-{name}",
                               group=f"it{iteration:04d}/g{g}", tokenizer=tok, seed=g)
            t.iteration = iteration
            for k, metrics in enumerate(t.turn_metrics):  # the probe rises turn by turn
                metrics["input/probe_logprob"] = -3.0 + k
            trajs.append(t)
    env.close()
    path = folder / "rollouts.jsonl"
    with TrajectoryWriter(path, run_metadata(env_id="creditgym/Search-v0")) as w:
        w.write_many(trajs)
    return path, trajs


def test_credit_over_training_scores_each_iteration_on_its_own(rollouts):
    path, trajs = rollouts
    curve = credit_over_training(path, {"name": "gigpo", "gamma": 1.0, "norm": "mean"})
    assert [r.iteration for r in curve] == [0, 1]
    for row in curve:
        own = [t for t in trajs if t.iteration == row.iteration]
        assert row.trajectories == len(own) == 6
        assert row.turns == sum(t.n_turns for t in own) and row.labelled_turns == row.turns
        groups = [[t for t in own if t.group == g] for g in dict.fromkeys(t.group for t in own)]
        (direct,) = bench_credit(groups, turn_labels(own), estimators=["gigpo"],
                                 options={"gigpo": {"gamma": 1.0, "norm": "mean"}})
        assert (row.pairwise_accuracy, row.auc, row.wrong_sign) == (
            direct.pairwise_accuracy, direct.auc, direct.wrong_sign)
        assert row.skipped is None and row.pairwise_accuracy != 0.5
    # GRPO gives every turn of a trajectory one value: 0.5 in every iteration
    assert [r.pairwise_accuracy for r in credit_over_training(path, "grpo")] == [0.5, 0.5]
    # IGPO reads its probes from the records
    igpo = credit_over_training(path, "igpo")
    assert all(r.skipped is None and r.pairwise_accuracy is not None for r in igpo)
    means = mean_curve([curve, igpo], "pairwise_accuracy")
    assert [it for it, _ in means] == [0, 1]
    assert means[0][1] == pytest.approx((curve[0].pairwise_accuracy + igpo[0].pairwise_accuracy) / 2)


def test_credit_over_training_errors(rollouts, tmp_path):
    from creditgym.replay.io import write_trajectories

    path, trajs = rollouts
    with pytest.raises(ConfigError, match="unknown estimator 'nope'"):
        credit_over_training(path, "nope")
    plain = []
    for t in trajs:  # an eval file: no iteration, no inputs
        t = type(t).from_dict(t.to_dict())
        t.iteration = None
        plain.append(t)
    evals = tmp_path / "eval.jsonl"
    write_trajectories(evals, plain, {})
    with pytest.raises(ConfigError, match="training run's rollouts.jsonl"):
        credit_over_training(evals, "grpo")
    with pytest.raises(ConfigError, match="does not exist"):
        credit_over_training(tmp_path / "missing.jsonl", "grpo")


def test_mean_curve_skips_missing_values():
    a = [IterationCredit(0, 4, 8, 8, 0.6, 0.7, 0.1), IterationCredit(1, 4, 8, 8, None, None, None)]
    b = [IterationCredit(0, 4, 8, 8, 0.8, 0.5, 0.0), IterationCredit(2, 4, 8, 8, 0.9, 0.5, 0.0)]
    assert mean_curve([a, b], "pairwise_accuracy") == [(0, pytest.approx(0.7)), (2, 0.9)]
