"""replay rescore: new reward settings re-step the env; new credit recomputes advantages; the
output is a new file that verifies, and the input is never touched."""

from __future__ import annotations

import numpy as np
import pytest

from creditgym.replay.cli import main
from creditgym.replay.io import read_metadata, read_trajectories
from creditgym.replay.rescore import (
    RescoreError,
    deep_merge,
    dotted_to_nested,
    rescore_trajectories,
    with_reward_overrides,
)
from creditgym.replay.verify import verify_trajectories


def test_search_cost_changes_the_search_turns_only(trajectories):
    result = rescore_trajectories(trajectories, reward_overrides={"search_cost": 0.1})
    assert result.rescored == len(trajectories) and result.kept == []
    for old, new in zip(trajectories, result.trajectories):
        searches = [any(c["name"] == "search" for c in calls) for calls in old.tool_calls]
        expected = [r - 0.1 if s else r for r, s in zip(old.rewards, searches)]
        assert new.rewards == pytest.approx(expected)
        assert new.env_kwargs["reward"] == {"search_cost": 0.1}
        assert new.observations == old.observations and new.actions == old.actions
        assert new.turn_metrics[0]["reward/search_cost"] == (-0.1 if searches[0] else 0.0)
    assert trajectories[0].env_kwargs.get("reward") is None  # inputs untouched
    assert verify_trajectories(result.trajectories) == []  # the new record is self-consistent


def test_f1_reward_gives_partial_credit(search_env, tokenizer):
    from tests.replay.helpers import record_episode

    task = search_env.tasks[0]
    first_word = task.golden_answers[0].split()[0]
    partial = record_episode(
        search_env,
        task,
        lambda t, k, o: f"<answer>{first_word} town hall</answer>",
        tid="partial",
        group="g0",
        tokenizer=tokenizer,
    )
    assert partial.rewards == [0.0]  # em only, by default
    (new,) = rescore_trajectories([partial], reward_overrides={"em": 0.0, "f1": 1.0}).trajectories
    assert 0.0 < new.rewards[0] < 1.0 and new.metrics["f1"] == pytest.approx(new.rewards[0])
    assert new.metrics["reward/outcome"] == pytest.approx(new.rewards[0])


def test_credit_recomputed_per_group(trajectories):
    result = rescore_trajectories(trajectories, credit={"name": "grpo"})
    assert result.rescored == 0 and result.credit["groups"] == 4.0
    for t in result.trajectories:
        adv = np.asarray(t.advantages)
        assert adv.shape == (len(t.tokens()),)
        assert np.all(adv[t.loss_mask() == 0] == 0)
    by_id = {t.id: np.asarray(t.advantages) for t in result.trajectories}
    # in every group the expert (return 1) beats the wrong answer (return 0)
    for g in range(4):
        assert by_id[f"g{g}-expert"].max() > 0 > by_id[f"g{g}-wrong"].min()
    gigpo = rescore_trajectories(trajectories, credit={"name": "gigpo", "gamma": 0.9}).trajectories
    assert not np.allclose(np.asarray(gigpo[2].advantages), by_id["g0-invalid"])


def test_failed_rollouts_are_kept_and_get_no_advantages(trajectories):
    trajectories[1].error = "backend error"
    result = rescore_trajectories(trajectories, reward_overrides={"em": 2.0}, credit="rloo")
    assert result.kept == ["g0-wrong"]
    assert result.trajectories[1].advantages is None and result.trajectories[1].rewards == [0.0]
    assert result.trajectories[0].rewards[-1] == 2.0


def test_overrides_that_change_observations_are_refused(trajectories):
    with pytest.raises(RescoreError, match="change the observation"):
        rescore_trajectories(trajectories, env_overrides={"top_k": 1})
    with pytest.raises(RescoreError, match="episode ends after turn"):
        rescore_trajectories(trajectories, env_overrides={"max_turns": 2})


def test_merging_helpers():
    assert dotted_to_nested({"reward.f1": 1, "top_k": 2}) == {"reward": {"f1": 1}, "top_k": 2}
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    nested = {"config": {"reward": {"em": 1.0, "format": 0.2}}}
    assert with_reward_overrides(nested, {"em": 0.0}) == {
        "config": {"reward": {"em": 0.0, "format": 0.2}}
    }
    assert with_reward_overrides({"reward": {"format": 0.2}}, {"f1": 1}) == {
        "reward": {"format": 0.2, "f1": 1}
    }


def test_cli_rescore_writes_a_new_file(traj_file, tmp_path, capsys):
    out = tmp_path / "rescored.jsonl"
    before = traj_file.read_bytes()
    args = [
        "replay",
        "rescore",
        str(traj_file),
        "-o",
        str(out),
        "--reward",
        "em=0,f1=1",
        "--set",
        "reward.search_cost=0.05",
        "--credit",
        "gigpo",
        "--credit-opt",
        "gamma=0.9",
    ]
    assert main(args) == 0
    assert traj_file.read_bytes() == before
    new = read_trajectories(out)
    assert all(t.advantages is not None for t in new)
    assert new[0].env_kwargs["reward"] == {"search_cost": 0.05, "em": 0, "f1": 1}
    assert new[0].rewards == pytest.approx([-0.05, 1.0])
    meta = read_metadata(out)
    assert meta["run"]["credit"] == {"name": "gigpo", "gamma": 0.9}
    assert meta["run"]["source"]["run"]["env_id"] == "creditgym/Search-v0"
    assert "12 re-stepped" in capsys.readouterr().out
    assert main(["replay", "verify", str(out)]) == 0
    # never overwrite: an existing output needs --force, and the input is refused outright
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    same = [
        "replay",
        "rescore",
        str(traj_file),
        "-o",
        str(traj_file),
        "--credit",
        "grpo",
        "--force",
    ]
    assert main(same) == 2
    assert traj_file.read_bytes() == before
