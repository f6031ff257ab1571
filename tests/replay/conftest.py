"""Replay-test fixtures: real SearchEnv episodes over the built-in world (bm25s), recorded as
trajectories the way a rollout records them, with token ids from a small real BPE tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.replay.helpers import SEARCH_KWARGS, build_tokenizer, record_groups


@pytest.fixture(scope="session")
def search_env():
    from creditgym.envs.search_env import SearchEnv

    env = SearchEnv(**SEARCH_KWARGS)
    yield env
    env.close()


@pytest.fixture(scope="session")
def tokenizer(search_env, tmp_path_factory):
    return build_tokenizer(search_env, tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def recorded(search_env, tokenizer):
    """Four groups of three real episodes (expert, wrong answer, invalid-then-expert)."""
    return record_groups(search_env, tokenizer, n_tasks=4)


@pytest.fixture()
def trajectories(recorded):
    """Fresh copies of the recorded trajectories, safe to modify in a test."""
    from creditgym.trajectory import Trajectory

    return [Trajectory.from_dict(t.to_dict()) for t in recorded]


@pytest.fixture()
def traj_file(tmp_path, trajectories) -> Path:
    from creditgym.replay.io import TrajectoryWriter, run_metadata

    path = tmp_path / "rollouts.jsonl"
    with TrajectoryWriter(path, run_metadata(env_id="creditgym/Search-v0")) as w:
        w.write_many(trajectories)
    return path
